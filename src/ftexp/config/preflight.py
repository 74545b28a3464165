"""Fail fast on bad command lines.

Before Hydra starts a run (or a whole sweep), compose the config for every value of every swept
override, with the ``hydra`` node, and check it: composition errors, keys no schema declares, values,
what Hydra would build, the run's folder. The first problem is one short paragraph
(:mod:`ftexp.config.explain` words it). Nothing heavy is imported here, so a typo costs a second, not a
model load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from ftexp.config.explain import explain, explain_unknown_key, locate, one_paragraph, override_key, where_from
from ftexp.config.session import ConfigError, group_options, hydra_context

# Not chosen on the command line: Hydra's own, the schemas, and parts that data configs and experiments include.
HIDDEN_GROUPS = ("hydra", "schema", "red_team", "suite")


def expand_sweeps(overrides: Sequence[str]) -> List[List[str]]:
    """Command lines that together try every value of every swept override once.

    The first line takes each sweep's first value; each further line changes one override to one
    of its other values. Interval sweeps (for optimising sweepers) and glob sweeps cannot be listed
    here and are left out; Hydra checks those values itself.
    """
    parsed: List[Override] = OverridesParser.create().parse_overrides(list(overrides))
    base: List[Optional[str]] = []
    alternatives: List[tuple[int, str]] = []
    for i, ov in enumerate(parsed):
        if not ov.is_sweep_override():
            base.append(ov.input_line)
            continue
        if ov.value_type in (ValueType.INTERVAL_SWEEP, ValueType.GLOB_CHOICE_SWEEP):
            base.append(None)  # not listable without the config loader; Hydra checks these itself
            continue
        key = ov.get_key_element()
        values = [f"{key}={v}" for v in ov.sweep_string_iterator()]
        base.append(values[0] if values else None)
        alternatives.extend((i, v) for v in values[1:])
    lines = [[x for x in base if x is not None]]
    for i, line in alternatives:
        variant = list(base)
        variant[i] = line
        lines.append([x for x in variant if x is not None])
    return lines


def check_overrides(overrides: Sequence[str], config_name: str = "config", multirun: bool = False,
                    extra_dir: Optional[str] = None) -> None:
    """Compose the config for ``overrides`` (every sweep value if ``multirun``), with ``extra_dir``
    (``--config-dir``) on the search path; raise :class:`ConfigError` with a readable message on the
    first failure."""
    with hydra_context(config_name, extra_dir):
        try:
            if multirun:
                overrides = [*overrides, *_file_sweeps(overrides, config_name)]
            lines = expand_sweeps(overrides) if multirun else [list(overrides)]
        except HydraException as exc:
            raise ConfigError(f"cannot parse the command line: {one_paragraph(str(exc))}") from None
        for i, line in enumerate(lines):
            try:
                cfg = compose(config_name=config_name, overrides=line, return_hydra_config=True)
            except Exception as exc:  # noqa: BLE001 - every composition error is reported the same way
                raise ConfigError(explain(exc, line, config_name)) from None
            with open_dict(cfg):
                hydra_node = cfg.pop("hydra")
            check_hydra(hydra_node, line)
            check_repeated_options(line)
            check_keys(cfg, line, config_name)
            check_env_values(cfg, line)
            check_allowed_targets(cfg, line, hydra_node.runtime.choices)
            check_values(cfg, line)
            if i == 0:
                check_output_folder(hydra_node, cfg, multirun)
                check_own_files(hydra_node.runtime.choices, line, config_name)


def check_repeated_options(overrides: Sequence[str]) -> None:
    """An option chosen twice in a list (``logger=[wandb,wandb]``): Hydra merges it once, silently."""
    for ov in OverridesParser.create().parse_overrides(list(overrides)):
        chosen = ov.value() if not ov.is_sweep_override() else None
        if not isinstance(chosen, list) or not group_options(ov.get_key_element()):  # a list of options only
            continue
        twice = sorted({str(c) for c in chosen if chosen.count(c) > 1})
        if twice:
            raise ConfigError(f"override '{ov.input_line}': {', '.join(twice)} is chosen more than once; name each "
                              f"option of {ov.get_key_element()} once.")


def check_own_files(choices: Any, overrides: Sequence[str], config_name: str = "config") -> None:
    """data.path on the command line with the data option nobody chose (the default, Banking77) would
    read the user's files as Banking77: its name, prompt, slices, red team and hub copy."""
    line = next((o for o in overrides if override_key(o) == "data.path"), None)
    if line is None or _chosen("data", overrides, config_name):
        return
    default = choices.get("data")
    raise ConfigError(f"override '{line}': the files would be read as data={default} (the default), with its name, "
                      "prompt, slices, red-team prompts and hub copy. Add data=own for files of your own (named after "
                      f"their folder), or data={default} to say that these are its files.")


def _chosen(group: str, overrides: Sequence[str], config_name: str) -> bool:
    """Whether the command line, an experiment or a sweep file chose ``group``'s option (not the default)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    try:  # the overrides Hydra collected from the command line and the defaults lists of the chosen files
        found = GlobalHydra.instance().config_loader().compute_defaults_list(config_name, list(overrides), RunMode.RUN)
        return group in found.overrides.override_choices
    except Exception:  # noqa: BLE001 - Hydra's internals moved: say nothing rather than refuse a good run
        return True


def check_output_folder(hydra_node: DictConfig, cfg: DictConfig, multirun: bool) -> None:
    """The run's (or sweep's) folder can be written, and a sweep does not rewrite another sweep's record."""
    from ftexp.utils.run_folder import unwritable_reason

    key = "sweep.dir" if multirun else "run.dir"
    try:
        folder = Path(str(OmegaConf.select(hydra_node, key)))
    except Exception:  # noqa: BLE001 - a folder named after what only a job knows: the job checks it
        return
    reason = unwritable_reason(folder)
    if reason:
        raise ConfigError(f"hydra.{key}={folder}: the run cannot write there ({reason}). Make it writable, or "
                          f"choose another folder with hydra.{key}=...")
    if multirun and (folder / "multirun.yaml").exists() and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"hydra.sweep.dir={folder} holds a sweep already (its multirun.yaml), whose record a new "
                          "sweep would rewrite. Add resume=true to continue that sweep (its completed jobs are "
                          "skipped, new ones run), overwrite=true to run its jobs again, or choose another "
                          "hydra.sweep.dir.")


def check_env_values(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """A value read with ``${oc.env:...}`` that its key cannot take, said without the value (which may be a
    secret: OmegaConf's own error would print it)."""
    from ftexp.config.validate import leaves

    for key, value in leaves(cfg):
        if isinstance(value, str) and "${oc.env:" in value:
            try:
                OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            except Exception as exc:  # noqa: BLE001 - every resolution error is reported the same way
                problem = ("the environment variable is not set" if "not found" in str(exc) else
                           "the value it reads from the environment cannot be used here (the wrong type?); it is "
                           "not shown, as it may be a secret")
                raise ConfigError(f"{locate(key, overrides)}: {key}={value}: {problem}.") from None


def check_hydra_nodes(overrides: Sequence[str], config_name: str = "config", extra_dir: Optional[str] = None) -> None:
    """Only the names Hydra would build, for the flags that show rather than run (--hydra-help, --info,
    shell completion: partial command lines are theirs to report) but still configure Hydra's logging."""
    with hydra_context(config_name, extra_dir):
        try:
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        except Exception:  # noqa: BLE001 - Hydra reports its own composition errors for these flags
            return
        check_hydra(cfg.hydra, overrides)


def check_hydra(hydra_node: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Refuse a name that Hydra itself would import and call (callbacks, launcher, sweeper, logging)."""
    from ftexp.config.hydra_guard import hydra_problems

    found = hydra_problems(hydra_node)
    if found:
        key, problem = found[0]
        raise ConfigError(f"{locate(key, overrides, hydra_node.runtime.choices)}: {key}: {problem}.")


def check_allowed_targets(cfg: DictConfig, overrides: Sequence[str] = (), choices: Any = None) -> None:
    """Only the command line widens what configs may build: a config file that did would name its own
    callable."""
    given = any(override_key(line) == "allowed_targets" for line in overrides)
    if list(cfg.get("allowed_targets") or []) and not given:
        raise ConfigError(f"{locate('allowed_targets', overrides, choices)}: a config file sets allowed_targets="
                          f"{list(cfg.allowed_targets)}. Only the command line may widen what configs can build "
                          "(so that a file cannot name a callable of its own choosing); give it there.")


def _file_sweeps(overrides: Sequence[str], config_name: str) -> List[str]:
    """Sweeps declared in config files (``hydra.sweeper.params``, e.g. by ``sweeps=NAME``) whose key
    the command line does not set itself, as overrides, so that their values are checked too."""
    first = expand_sweeps(overrides)[0]
    try:
        params = compose(config_name=config_name, overrides=first, return_hydra_config=True).hydra.sweeper.get("params")
    except Exception:  # noqa: BLE001 - the composition error is reported by the caller's own attempt
        return []
    given = {ov.get_key_element() for ov in OverridesParser.create().parse_overrides(list(overrides))}
    return [f"{key}={value}" for key, value in (params or {}).items() if key not in given]


def check_keys(cfg: DictConfig, overrides: Sequence[str] = (), config_name: str = "config") -> None:
    """Refuse keys that no schema declares (added with ``+key=`` or by a config file)."""
    from ftexp.config.validate import added_keys

    added = added_keys(cfg)
    if added:
        where = where_from("", overrides, added[0])
        raise ConfigError(explain_unknown_key(added[0], where, overrides, config_name))


def check_values(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Range and consistency checks of a composed config (see :mod:`ftexp.config.validate`)."""
    from ftexp.config.validate import problems

    found = problems(cfg)
    if found:
        where = f" (overrides: {' '.join(overrides)})" if overrides else ""
        raise ConfigError(f"invalid value{'s' if len(found) > 1 else ''}{where}: " + "; ".join(found) + ".")


def compose_config(overrides: Sequence[str] = (), config_name: str = "config",
                   return_hydra_config: bool = False, extra_dir: Optional[str] = None) -> DictConfig:
    """Compose (without running) the config for ``overrides``, with ``extra_dir`` (a --config-dir) on the
    search path: for tests and tools."""
    with hydra_context(config_name, extra_dir):
        try:
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(explain(exc, list(overrides), config_name)) from None
