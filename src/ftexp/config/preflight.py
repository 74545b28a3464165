"""Fail fast on bad command lines.

Before Hydra starts a run (or a whole sweep), compose the config for every value of every swept
override and turn the first composition error into one short paragraph that names the override,
the key or option at fault and the valid choices. Nothing heavy is imported here, so a typo costs
a second, not a model load.
"""

from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ftexp.config import config_dir
from ftexp.errors import FtexpError

# Not chosen on the command line: Hydra's own, the schemas, and parts that data configs and experiments include.
HIDDEN_GROUPS = ("hydra", "schema", "red_team", "suite")


class ConfigError(FtexpError):
    """A user-facing configuration error; its message is one paragraph, ready to print."""


@contextmanager
def hydra_context(config_name: str = "config", extra_dir: Optional[str] = None) -> Iterator[None]:
    """Initialise Hydra's compose API on ftexp's config tree, with ``extra_dir`` (``--config-dir``) put
    where Hydra's command line puts it, and restore the previous state afterwards."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    from ftexp.config.schema import register_configs

    register_configs()
    previous = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    search_path = create_config_search_path(str(config_dir()))
    if extra_dir is not None:
        folder = Path(extra_dir).resolve()
        if not folder.is_dir():
            raise ConfigError(f"--config-dir {extra_dir}: no such folder ({folder})")
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    try:
        Hydra.create_main_hydra2(task_name="ftexp", config_search_path=search_path)
        yield
    finally:
        GlobalHydra.instance().clear()
        if previous is not None:
            GlobalHydra.instance().initialize(previous)


def search_dirs() -> List[Path]:
    """The folders on the current search path: a --config-dir first, then conf/ and sweeps/'s root."""
    path = GlobalHydra.instance().config_loader().get_search_path().get_path()
    dirs = [e.path.removeprefix("file://") for e in path if e.path and "://" not in e.path.removeprefix("file://")]
    return [Path(d) for d in dirs if Path(d).is_dir()]


def group_options(group: str) -> List[str]:
    """The options of a config group, as Hydra sees them (config dir, search path, ConfigStore)."""
    loader = GlobalHydra.instance().config_loader()
    return sorted(loader.get_group_options(group))


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
            raise ConfigError(f"cannot parse the command line: {_one_paragraph(str(exc))}") from None
        for i, line in enumerate(lines):
            try:
                cfg = compose(config_name=config_name, overrides=line, return_hydra_config=True)
            except Exception as exc:  # noqa: BLE001 - every composition error is reported the same way
                raise ConfigError(explain(exc, line, config_name)) from None
            with open_dict(cfg):
                hydra_node = cfg.pop("hydra")
            check_hydra(hydra_node, line)
            check_keys(cfg, line, config_name)
            check_env_values(cfg, line)
            check_allowed_targets(cfg, line, hydra_node.runtime.choices)
            check_values(cfg, line)
            if i == 0:
                check_output_folder(hydra_node, cfg, multirun)
                check_own_files(hydra_node.runtime.choices, line)


def check_own_files(choices: Any, overrides: Sequence[str]) -> None:
    """data.path on the command line with the data option nobody chose (the default, Banking77) would
    read the user's files as Banking77: its name, prompt, slices, red team and hub copy."""
    keys = [line.split("=", 1)[0].lstrip("+~") for line in overrides]
    if "data.path" in keys and "data" not in keys and not choices.get("experiment") and not choices.get("sweeps"):
        line = next(o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "data.path")
        raise ConfigError(f"override '{line}': the files would be read as data={choices.get('data')} (the default), "
                          "with its name, prompt, slices, red-team prompts and hub copy. Add data=own for files of "
                          f"your own (named after their folder), or data={choices.get('data')} to say that these are "
                          "its files.")


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
    from ftexp.config.hydra_guard import leaves

    for key, value in leaves(cfg, ""):
        if isinstance(value, str) and "${oc.env:" in value:
            try:
                OmegaConf.select(cfg, key.lstrip("."), throw_on_resolution_failure=True)
            except Exception as exc:  # noqa: BLE001 - every resolution error is reported the same way
                key = key.lstrip(".")
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
    given = any(line.split("=", 1)[0].lstrip("+~") == "allowed_targets" for line in overrides)
    if list(cfg.get("allowed_targets") or []) and not given:
        raise ConfigError(f"{locate('allowed_targets', overrides, choices)}: a config file sets allowed_targets="
                          f"{list(cfg.allowed_targets)}. Only the command line may widen what configs can build "
                          "(so that a file cannot name a callable of its own choosing); give it there.")


def locate(full_key: str, overrides: Sequence[str], choices: Any = None, config_name: str = "config") -> str:
    """The override that sets ``full_key`` (or a parent of it), else the file (and line) of this run's
    configs that does: the primary config and the chosen option of each group."""
    where = _where("", overrides, full_key)
    if where != "config":
        return where
    names = [config_name]
    for group, option in (choices or {}).items():
        for one in ([option] if isinstance(option, str) else list(option or [])):
            names.append(f"{group}/{one}")
    for name in reversed(names):  # later files win: experiments and sweep files come last
        for folder in search_dirs():
            path = folder / f"{name}.yaml"
            if path.is_file() and _names_key(path, full_key):
                return _with_line(str(path), full_key)
    return "a config file of this run"


def _names_key(path: Path, full_key: str) -> bool:
    """Whether the YAML file at ``path`` sets ``full_key`` (at its package or under it)."""
    try:
        node = OmegaConf.load(path)
    except Exception:  # noqa: BLE001 - not a config file we can read: not the one
        return False
    parts = full_key.split(".")
    for start in range(len(parts)):  # the file may be packaged anywhere above the key
        if OmegaConf.select(node, ".".join(parts[start:]), default=None) is not None:
            return True
    return False


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
        where = _where("", overrides, added[0])
        raise ConfigError(_explain_unknown_key(added[0], where, overrides, config_name))


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


# ----------------------------------------------------------------------------- error messages


def explain(exc: BaseException, overrides: Sequence[str], config_name: str = "config") -> str:
    """One paragraph describing a composition error in the user's terms."""
    if isinstance(exc, MissingConfigException) or "Could not find" in str(exc) or "Could not load" in str(exc):
        return _explain_missing_option(exc, overrides)
    cause = _omegaconf_cause(exc)
    if cause is not None:
        full_key = getattr(cause, "full_key", None) or ""
        where = _where(str(exc), overrides, full_key)
        if "not in" in str(cause) or type(cause).__name__ == "ConfigKeyError":
            return _explain_unknown_key(full_key, where, overrides, config_name)
        if type(cause).__name__ == "ValidationError":
            return _explain_bad_value(cause, full_key, where, overrides, config_name)
        return f"{where}: {full_key or 'config'}: {_first_line(getattr(cause, 'msg', str(cause)))}"
    return _one_paragraph(str(exc))


def _explain_missing_option(exc: BaseException, overrides: Sequence[str]) -> str:
    text = str(exc)
    m = re.search(r"Could not (?:find|load) '([^']+)'", text)
    target = m.group(1) if m else ""
    group, _, option = target.rpartition("/")
    where = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") in (group, f"/{group}")), None)
    context = f"override '{where}'" if where else _in_file(text) or "the defaults list"
    options = [o for o in (getattr(exc, "options", None) or _safe_options(group))]
    msg = f"{context}: '{option}' is not an option of the config group '{group}'."
    close = difflib.get_close_matches(option, options, n=1)
    if close:
        msg += f" Did you mean '{close[0]}'?"
    if options:
        msg += f" Options of '{group}': {', '.join(options)}."
    return msg


def _explain_unknown_key(full_key: str, where: str, overrides: Sequence[str], config_name: str) -> str:
    parent, _, leaf = full_key.rpartition(".")
    valid = _keys_at(full_key, overrides, config_name)
    if leaf in valid:  # the key exists for the default choice: a config file sets it for another option
        return (f"{where}: the chosen {parent} option has no key '{leaf}', but a config file in this run "
                f"(e.g. an experiment written for another {parent} option) sets {full_key}.")
    label = f"'{leaf}' is not a key of {parent or 'the top-level config'}"
    schema = _schema_name(full_key, overrides, config_name)
    if schema:
        label += f" (schema {schema})"
    msg = f"{where}: {label}."
    public = [k for k in valid if not k.startswith("_")]
    close = difflib.get_close_matches(leaf, public, n=1)
    if close:
        msg += f" Did you mean '{close[0]}'?"
    if public:
        msg += f" Valid keys: {', '.join(public)}."
    elif valid:
        msg += " It takes no keys."
    return msg


def _explain_bad_value(cause: BaseException, full_key: str, where: str, overrides, config_name) -> str:
    expected = _expected_type(full_key, overrides, config_name)
    raw = _first_line(getattr(cause, "msg", str(cause)))
    m = re.match(r"Value '(.*)' of type '.*' could not be converted to (\w+)", raw)
    if m:
        got, expected = m.group(1), expected or m.group(2).lower()
        return f"{where}: {full_key} must be {_article(expected)}, got '{got}'."
    return f"{where}: {full_key}: {raw}"


# ------------------------------------------------------------------------------------ helpers


def _omegaconf_cause(exc: BaseException) -> Optional[BaseException]:
    seen = exc
    while seen is not None:
        if isinstance(seen, OmegaConfBaseException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _where(text: str, overrides: Sequence[str], full_key: str) -> str:
    """Name the override or the file (and line) the error came from."""
    keys = [(line, line.split("=", 1)[0].lstrip("+~")) for line in overrides]
    for line, key in keys:  # the override of the key itself first, then one of a parent
        if full_key and key == full_key:
            return f"override '{line}'"
    for line, key in keys:
        if full_key and full_key.startswith(key + "."):
            return f"override '{line}'"
    in_file = _in_file(text)
    if in_file:
        return _with_line(in_file, full_key)
    return "config"


def _in_file(text: str) -> Optional[str]:
    m = re.search(r"In '([^']+)'", text) or re.search(r"Error merging '([^']+)'", text)
    if not m:
        return None
    name = m.group(1)
    for folder in search_dirs():
        if (folder / f"{name}.yaml").exists():
            return str(folder / f"{name}.yaml")
    return f"config '{name}'"


def _with_line(path_text: str, full_key: str) -> str:
    leaf = full_key.rpartition(".")[2]
    path = Path(path_text)
    if leaf and path.exists():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(rf"\s*{re.escape(leaf)}\s*:", line):
                return f"{path}, line {n}"
    return path_text


def _good_config(overrides: Sequence[str], config_name: str, drop_key: str) -> Optional[DictConfig]:
    """The config composed without the overrides that touch ``drop_key`` (None if that fails too)."""
    def touches(line: str) -> bool:
        key = line.split("=", 1)[0].lstrip("+~")
        # not a parent's group choice (mitigation=ewc): the bad key is a key of that choice
        return key == drop_key or key.startswith(drop_key + ".")

    kept = [o for o in overrides if not touches(o)]
    try:
        return compose(config_name=config_name, overrides=kept)
    except Exception:  # noqa: BLE001
        return None


def _keys_at(full_key: str, overrides, config_name) -> List[str]:
    parent = full_key.rpartition(".")[0]
    cfg = _good_config(overrides, config_name, full_key)
    node = cfg if not parent or cfg is None else OmegaConf.select(cfg, parent)
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _schema_name(full_key: str, overrides, config_name) -> Optional[str]:
    parent = full_key.rpartition(".")[0]
    cfg = _good_config(overrides, config_name, full_key)
    node = cfg if not parent or cfg is None else OmegaConf.select(cfg, parent)
    if isinstance(node, DictConfig):
        t = OmegaConf.get_type(node)
        if t is not None and t is not dict:
            return t.__name__
    return None


def _expected_type(full_key: str, overrides, config_name) -> Optional[str]:
    cfg = _good_config(overrides, config_name, full_key)
    if cfg is None:
        return None
    parent, _, leaf = full_key.rpartition(".")
    node = cfg if not parent else OmegaConf.select(cfg, parent)
    try:
        child = node._get_node(leaf)
    except Exception:  # noqa: BLE001
        return None
    names = {"IntegerNode": "int", "FloatNode": "float", "BooleanNode": "bool", "StringNode": "str"}
    return names.get(type(child).__name__)


def _safe_options(group: str) -> List[str]:
    try:
        return group_options(group)
    except Exception:  # noqa: BLE001
        return []


def _article(type_name: str) -> str:
    return f"an {type_name}" if type_name[:1] in "aeiou" else f"a {type_name}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _one_paragraph(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider=", "Set the environment"))]
    return " ".join(lines)
