"""llmtraind: drop datasets and job files into a folder, get real ms-swift runs, watch them with curl."""

__version__ = "0.3.0"
