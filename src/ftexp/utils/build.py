"""Build an ftexp component from its typed config.

Every option in conf/ names its class in ``_target_``; this is the one place that turns that name
into an object, as ``cls(cfg, *args, **kwargs)`` with the typed config (a dataclass instance).
Only classes inside the allowed packages can be built, so a config file cannot name an arbitrary
callable.
"""

from __future__ import annotations

import importlib
from typing import Any, Tuple

from omegaconf import DictConfig, OmegaConf

from ftexp.errors import FtexpError

ALLOWED_PREFIXES: Tuple[str, ...] = ("ftexp.",)


class BuildError(FtexpError):
    """A ``_target_`` that cannot be built; the message names it."""


def import_target(target: str) -> type:
    if not any(target.startswith(p) for p in ALLOWED_PREFIXES):
        raise BuildError(
            f"_target_ '{target}' is not allowed: ftexp builds only classes under "
            f"{', '.join(ALLOWED_PREFIXES)}"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BuildError(f"_target_ '{target}' cannot be imported: {exc}") from exc


def typed(cfg: Any) -> Any:
    """The dataclass instance behind a structured DictConfig (interpolations resolved)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_object(cfg)
    return cfg


def build(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    obj = typed(cfg)
    target = getattr(obj, "_target_", None)
    if not target:
        raise BuildError(f"config {obj!r} has no _target_")
    return import_target(target)(obj, *args, **kwargs)
