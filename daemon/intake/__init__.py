"""From a file dropped into the inbox to events in the log: watch, claim, read, decide, record, file away."""
