"""Config schemas, the location of the config tree, and fail-fast validation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def config_dir() -> Path:
    """The ``conf/`` tree: packaged inside a wheel, or at the root of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "conf"


# The search-path scheme of the sweeps' root: a folder of which Hydra sees only the ``sweeps`` group
# (hydra_plugins/ftexp_searchpath), since in a source checkout that root is the whole repository.
SWEEPS_SCHEME = "ftexp-sweeps"


def sweeps_root() -> Optional[Path]:
    """The folder that holds ``sweeps/`` (Hydra's search-path root for the ``sweeps`` group):
    a copy inside a wheel, or the root of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_sweeps_root"
    if (packaged / "sweeps").is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3]
    return checkout if (checkout / "sweeps").is_dir() else None
