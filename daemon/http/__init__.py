"""The read-only HTTP face: JSON answers, SSE feeds, Prometheus metrics and the status page."""
