"""The disk guard's words: `[runs] min_free_disk_gib` against the state folder's free space.

Pure: the run loop and the API measure (`shutil.disk_usage`) and ask this the same question, so a
waiting job, /healthz, /v1/status and /metrics agree on what is short and by how much.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GIB", "dataset_shortage", "disk_shortage", "disk_view"]

GIB = 1024**3


def disk_shortage(free_bytes: int, min_free_gib: float, where: str) -> str | None:
    """Why no run may start now, or None when there is room (or the guard is off: 0)."""
    if min_free_gib <= 0 or free_bytes >= min_free_gib * GIB:
        return None
    need = int(min_free_gib) if float(min_free_gib).is_integer() else min_free_gib
    return f"disk: {free_bytes / GIB:.1f} GiB free under {where}, runs need {need}"


def dataset_shortage(free_bytes: int, size: int, min_free_gib: float, where: str) -> str | None:
    """Why a dropped dataset of `size` bytes is refused: stored twice (as dropped, and converted for
    swift), it would leave less than runs need; None when it fits (or the guard is off)."""
    left = free_bytes - 2 * size
    short = disk_shortage(left, min_free_gib, where)
    if short is None:
        return None
    need = short.rsplit(", ", 1)[-1]
    return (
        f"disk: {free_bytes / GIB:.1f} GiB free under {where}; this dataset ({size / GIB:.2f} GiB, "
        f"stored twice: as dropped and converted) would leave {max(left, 0) / GIB:.1f} GiB, and {need} "
        "([runs] min_free_disk_gib); free space, then drop it again"
    )


def disk_view(free_bytes: int, total_bytes: int, min_free_gib: float, where: str) -> dict[str, Any]:
    """The guard as the API shows it."""
    short = disk_shortage(free_bytes, min_free_gib, where)
    return {
        "path": where,
        "free_bytes": free_bytes,
        "total_bytes": total_bytes,
        "min_free_bytes": int(min_free_gib * GIB),
        "ok": short is None,
        "reason": short or "",
    }
