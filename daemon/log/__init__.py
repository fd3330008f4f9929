"""The event log: the SQLite store every happening is appended to, and the live state folded from it."""
