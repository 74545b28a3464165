"""Config schemas, the location of the config tree, and fail-fast validation."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The ``conf/`` tree: packaged inside a wheel, or at the root of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "conf"
