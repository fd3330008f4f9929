"""Which runs are servers: a `swift deploy` run holds its slot until cancelled instead of ending.

The run loop, the runner and the metrics all ask this of a run's recorded command, so the answer
is one function over the argv the log keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEPLOY_MODULE", "serves"]

DEPLOY_MODULE = "swift.cli.deploy"


def serves(argv: Sequence[str]) -> bool:
    """Whether the run is a server (swift deploy) rather than a job that ends by itself."""
    return DEPLOY_MODULE in argv
