"""Build an ftexp component from its typed config.

Every option in conf/ names its class in ``_target_``; this is the one place that turns that name
into an object, as ``cls(cfg, *args, **kwargs)`` with the typed config (a dataclass instance).
Only classes inside the allowed packages can be built, so a config file cannot name an arbitrary
callable.
"""

from __future__ import annotations

import importlib
from typing import Any, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from ftexp.errors import FtexpError

# What a config may name in ``_target_``: ftexp's own classes, optimisers and schedulers, and
# Lightning's callbacks, loggers and strategies. A config adds more, by full name or prefix ending in
# ".", in ``allowed_targets``; anything else (``os.system``) is refused, at composition and here.
ALLOWED_PREFIXES: Tuple[str, ...] = (
    "ftexp.", "torch.optim.", "pytorch_lightning.callbacks.", "pytorch_lightning.loggers.",
    "pytorch_lightning.strategies.", "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.",
    "lightning.pytorch.strategies.",
)
_extra: Tuple[str, ...] = ()


def allow_targets(names: Sequence[str]) -> None:
    """The run's ``allowed_targets`` (full names, or prefixes ending in '.'), added to the defaults."""
    global _extra
    _extra = tuple(str(n) for n in names or ())


def target_allowed(target: str, extra: Sequence[str] = ()) -> bool:
    allowed = (*ALLOWED_PREFIXES, *_extra, *extra)
    return any(target == a or (a.endswith(".") and target.startswith(a)) for a in allowed)


class BuildError(FtexpError):
    """A ``_target_`` that cannot be built; the message names it."""


def refusal(target: str) -> str:
    return (f"_target_ '{target}' is not allowed: configs may build classes under "
            f"{', '.join(ALLOWED_PREFIXES)} or what allowed_targets adds")


def import_target(target: str, extra: Sequence[str] = ()) -> type:
    if not target_allowed(target, extra):
        raise BuildError(refusal(target))
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BuildError(f"_target_ '{target}' cannot be imported: {exc}") from exc
    if not isinstance(obj, type):  # classes only: a module function is not a component
        raise BuildError(f"_target_ '{target}' is not a class")
    return obj


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
