"""ms-swift, seen from the daemon: the command for a job, and what a run prints, leaves and dies of.

`command`, `progress` and `failures` are pure; `artifacts` reads a run directory (call it from a
thread). Nothing here starts a process: the runner does, with what `build_command` returns.
"""
