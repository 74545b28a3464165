"""Composition errors and refusals in the user's terms: one paragraph naming the override, or the
config file and line, the key or option at fault and the valid choices."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra import compose
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ftexp.config.session import group_options, search_dirs


def override_key(line: str) -> str:
    """The key an override sets (``+a.b=1``, ``~a.b``, ``a.b=1``: ``a.b``)."""
    return line.split("=", 1)[0].lstrip("+~")


def explain(exc: BaseException, overrides: Sequence[str], config_name: str = "config") -> str:
    """One paragraph describing a composition error in the user's terms."""
    if isinstance(exc, MissingConfigException) or "Could not find" in str(exc) or "Could not load" in str(exc):
        return _explain_missing_option(exc, overrides)
    cause = _omegaconf_cause(exc)
    if cause is not None:
        full_key = getattr(cause, "full_key", None) or ""
        where = where_from(str(exc), overrides, full_key)
        if "not in" in str(cause) or type(cause).__name__ == "ConfigKeyError":
            return explain_unknown_key(full_key, where, overrides, config_name)
        if type(cause).__name__ == "ValidationError":
            return _explain_bad_value(cause, full_key, where, overrides, config_name)
        return f"{where}: {full_key or 'config'}: {_first_line(getattr(cause, 'msg', str(cause)))}"
    return one_paragraph(str(exc))


def _explain_missing_option(exc: BaseException, overrides: Sequence[str]) -> str:
    text = str(exc)
    m = re.search(r"Could not (?:find|load) '([^']+)'", text)
    target = m.group(1) if m else ""
    group, _, option = target.rpartition("/")
    where = next((o for o in overrides if override_key(o) in (group, f"/{group}")), None)
    context = f"override '{where}'" if where else _in_file(text) or "the defaults list"
    options = [o for o in (getattr(exc, "options", None) or _safe_options(group))]
    msg = f"{context}: '{option}' is not an option of the config group '{group}'."
    close = difflib.get_close_matches(option, options, n=1)
    if close:
        msg += f" Did you mean '{close[0]}'?"
    if options:
        msg += f" Options of '{group}': {', '.join(options)}."
    return msg


def explain_unknown_key(full_key: str, where: str, overrides: Sequence[str], config_name: str) -> str:
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


def locate(full_key: str, overrides: Sequence[str], choices: Any = None, config_name: str = "config") -> str:
    """The override that sets ``full_key`` (or a parent of it), else the file (and line) of this run's
    configs that does: the primary config and the chosen option of each group."""
    where = where_from("", overrides, full_key)
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


def _omegaconf_cause(exc: BaseException) -> Optional[BaseException]:
    seen = exc
    while seen is not None:
        if isinstance(seen, OmegaConfBaseException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def where_from(text: str, overrides: Sequence[str], full_key: str) -> str:
    """Name the override or the file (and line) the error came from."""
    keys = [(line, override_key(line)) for line in overrides]
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
        key = override_key(line)
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


def one_paragraph(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider=", "Set the environment"))]
    return " ".join(lines)
