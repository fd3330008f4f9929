"""The shared language of every part, and the decisions made in it: pure, no I/O.

Config values, the event catalogue, the fold that turns events into state, the job spec and the dataset
formats live here because intake, runs and the API all speak them; nothing here reads a socket, a
database or a GPU, so all of it can be tested with plain values.
"""
