"""From queued jobs to finished runs: the scheduler's decisions, and the processes, GPUs and swift they act on."""
