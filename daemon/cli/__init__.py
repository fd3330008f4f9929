"""The `llmtraind` command: the daemon's own commands, and a client of its API for people."""
