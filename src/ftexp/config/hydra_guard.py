"""What Hydra itself builds or runs from a config: callbacks, the launcher and sweeper, the logging set-up,
the job's environment.

ftexp's own components pass through the allow-list of :mod:`ftexp.utils.build`. Hydra instantiates these
nodes itself, before a job starts (its own logging even while composing), so they are checked here, on
the composed ``hydra`` node, before Hydra is handed the command line. ``allowed_targets`` does not widen
these lists: what Hydra needs to run ftexp is on them, and anything else would run before any check.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from ftexp.config.validate import leaves, targets
from ftexp.utils.build import ALLOWED_PREFIXES

# Names a Hydra node may give (full names, or prefixes ending in "."):
CALLBACKS = ("hydra.experimental.callbacks.", "ftexp.")
NESTED = (*ALLOWED_PREFIXES, "optuna.samplers.", "optuna.pruners.")  # inside a plugin's or callback's config
LOGGING = ("logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter",
           "logging.handlers.RotatingFileHandler", "logging.handlers.TimedRotatingFileHandler",
           "logging.handlers.WatchedFileHandler", "colorlog.ColoredFormatter", "rich.logging.RichHandler",
           "ftexp.")
STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
# Variables that make a child process (a DDP rank, a SLURM job, a tokenizer worker) load code of their own.
CODE_LOADING_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "DYLD_LIBRARY_PATH",
                    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "BASH_ENV", "ENV", "PATH")


def matches(name: Any, allowed: Sequence[str]) -> bool:
    name = str(name)
    return any(name == a or (a.endswith(".") and name.startswith(a)) for a in allowed)


def _listed(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def hydra_problems(hydra: DictConfig) -> List[Tuple[str, str]]:
    """(key, what is wrong) for every name in ``hydra`` that Hydra would import and call, and is not
    on its list; values as written (an interpolation is not a name on any list)."""
    node = OmegaConf.to_container(hydra, resolve=False)
    found: List[Tuple[str, str]] = []
    for name, callback in (node.get("callbacks") or {}).items():
        for key, target in targets(callback, f"hydra.callbacks.{name}."):
            if not matches(target, CALLBACKS if key.count(".") == 3 else NESTED):
                found.append((key, f"'{target}' is not a callback Hydra may build (Hydra calls it before any "
                                   f"check of the run); hydra.callbacks may name classes under {_listed(CALLBACKS)}"))
    for kind in ("launcher", "sweeper"):
        found += _plugin_problems(kind, node.get(kind))
    for kind in ("job_logging", "hydra_logging"):
        found += _logging_problems(f"hydra.{kind}", node.get(kind))
    for name in (node.get("job") or {}).get("env_set") or {}:
        if str(name).upper() in CODE_LOADING_ENV:
            found.append((f"hydra.job.env_set.{name}", "makes the job's child processes load code from where "
                                                      "it points; set it in the shell that starts ftexp instead"))
    return found


def _plugin_problems(kind: str, config: Any) -> List[Tuple[str, str]]:
    """A launcher or sweeper is one of the installed Hydra plugins of its kind; what its config
    builds inside is on ftexp's list."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    if not isinstance(config, dict):
        return []
    base = Launcher if kind == "launcher" else Sweeper
    installed = sorted(n for n, cls in Plugins.instance().class_name_to_class.items() if issubclass(cls, base))
    found = []
    target = config.get("_target_")
    if target not in installed:
        found.append((f"hydra.{kind}._target_", f"'{target}' is not an installed Hydra {kind} (installed: "
                                                f"{', '.join(installed)}; hydra/{kind}=... picks one)"))
    for key, nested in targets(config, f"hydra.{kind}."):
        if key != f"hydra.{kind}._target_" and not matches(nested, NESTED):
            found.append((key, f"'{nested}' is not a class the {kind} may build (allowed: {_listed(NESTED)})"))
    return found


def _logging_problems(prefix: str, config: Any) -> List[Tuple[str, str]]:
    """logging.config.dictConfig imports ``class`` and calls ``()``; ``ext://`` values are imported too."""
    found = []
    for key, value in leaves(config, f"{prefix}."):
        leaf = key.rpartition(".")[2]
        if leaf in ("class", "()", "_target_") and not matches(value, LOGGING):
            found.append((key, f"'{value}' is not a logging class Hydra may build (allowed: {_listed(LOGGING)})"))
        elif isinstance(value, str) and value.startswith("ext://") and value not in STREAMS:
            found.append((key, f"'{value}' is not a stream logging may import (allowed: {_listed(STREAMS)})"))
    return found
