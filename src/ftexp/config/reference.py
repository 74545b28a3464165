"""The settings reference, docs/settings.md, written from the schema dataclasses.

A key is documented once, in its schema: the class docstring says what the config is, the comment on
a field's line (or the comment lines just above it) says what the key does. This module walks the
schemas that ``register_configs`` puts in Hydra's ConfigStore and writes one table per group and
option: key, type, default and that comment.

    python -m ftexp.config.reference > docs/settings.md
    python -m ftexp.config.reference docs/settings.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import MISSING

from ftexp.config import config_dir
from ftexp.config.schema import SCHEMAS, Config, LoggerConfig

COMMAND = "python -m ftexp.config.reference docs/settings.md"

INTRO = f"""\
# Settings

Every key that a config file or a command line can set, with its type, its default and what it does.
This page is generated from the schema dataclasses ({{modules}}), where each key is documented once; do not
edit it by hand. After changing a schema:

```bash
{COMMAND}
```

A key is set on the command line as `group.key=value` (`trainer.max_epochs=1`, `mitigation.lambda=5000`);
a group's option is chosen as `group=option` (`model=tiny_8m`), and an option file in `conf/<group>/` may
change the defaults below (`conf/model/tiny_8m.yaml` sets its own `hidden_size`). `python -m ftexp --cfg job
[overrides]` prints the values a run would use. "required" means the option file must set the key;
`${{...}}` is a reference to another key.
"""

# Where a group's keys sit in the composed config (the evaluator group is a dict of options; so is
# logger.backends, under keys of the whole logger node that SHARED documents).
PREFIX = {"evaluator": "evaluator.{option}", "trainer": "trainer", "logger": "logger.backends.{option}"}
SHARED = {"logger": LoggerConfig}


# ---------------------------------------------------------------------------------- comments


@lru_cache(maxsize=None)
def field_comments(cls: type) -> Dict[str, str]:
    """The comment of each field that ``cls`` itself declares: the comment lines just above the
    field joined to the comment on its own line(s)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: Dict[int, str] = {}
    code_lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    body = ast.parse(source).body[0]
    out: Dict[str, str] = {}
    previous: Optional[ast.AnnAssign] = None
    shared = ""  # the comment block above the previous field, which may speak for the fields right below it
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            previous, shared = None, ""
            continue
        above: List[str] = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        trailing = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments]
        text = " ".join(part for part in above + trailing if part)
        adjacent = previous is not None and node.lineno == (previous.end_lineno or previous.lineno) + 1
        if above:
            shared = node.target.id
        elif not text and adjacent and shared and _related(shared, node.target.id):
            text = f"As for `{shared}` (one comment in the schema covers both)."
        else:
            shared = ""
        if text:
            out[node.target.id] = text
        previous = node
    return out


def _related(a: str, b: str) -> bool:
    """Two field names that read as one setting's parts (lora_lr, full_lr; packing, pack_length)."""
    return bool(set(a.split("_")) & set(b.split("_"))) or a[:4] == b[:4]


def comment(cls: type, name: str) -> str:
    """A field's comment, from the nearest class in ``cls``'s MRO that comments it (a subclass that
    only changes a default keeps its base's text). ``keyword_field`` keys are declared as ``name_``."""
    declared: Optional[str] = None
    for klass in cls.__mro__:
        annotations = klass.__dict__.get("__annotations__", {})
        attr = next((a for a in (name, name + "_") if a in annotations), None)
        if attr is None:
            continue
        if declared is not None and str(annotations[attr]) != declared:
            return ""  # a base class's field of another type is another key: its text does not apply
        declared = str(annotations[attr])
        found = field_comments(klass)
        for key in (name, name + "_"):
            if key in found:
                return found[key]
    return ""


def docstring(cls: type) -> str:
    """The class docstring as one paragraph per blank-line-separated block (dataclasses invent one)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(cls.__name__ + "("):
        return ""
    blocks = re.split(r"\n\s*\n", inspect.cleandoc(doc))
    text = "\n\n".join(" ".join(line.strip() for line in block.splitlines()) for block in blocks)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


# ----------------------------------------------------------------------------- types, defaults


def schema_of(type_text: str) -> Tuple[Optional[type], str]:
    """The dataclass named in a field's annotation, and how: ``one`` (X or Optional[X]) or ``list``."""
    names = {c.__name__: c for c in _schema_classes()}
    match = re.fullmatch(r"(?:Optional\[)?(List\[)?(\w+)\]?\]?", type_text.replace(" ", ""))
    if match and match.group(2) in names:
        return names[match.group(2)], "list" if match.group(1) else "one"
    return None, ""


@lru_cache(maxsize=None)
def _schema_classes() -> Tuple[type, ...]:
    seen: List[type] = []

    def visit(cls: type) -> None:
        for klass in cls.__mro__:
            if dataclasses.is_dataclass(klass) and klass not in seen:
                seen.append(klass)
                for f in dataclasses.fields(klass):
                    default = _default_value(f)
                    if dataclasses.is_dataclass(default) and type(default) not in seen:
                        visit(type(default))
                mod = sys.modules[klass.__module__]
                for name in re.findall(r"\w+", str(klass.__annotations__.values())):
                    candidate = getattr(mod, name, None)
                    if isinstance(candidate, type) and dataclasses.is_dataclass(candidate) and candidate not in seen:
                        visit(candidate)

    visit(Config)
    for options in SCHEMAS.values():
        for cls in options.values():
            visit(cls)
    return tuple(seen)


def type_name(text: str) -> str:
    """An annotation in a reader's words: ``Optional[int]`` -> ``int or null``."""
    text = str(text).replace("typing.", "").replace(" ", "")
    optional = text.startswith("Optional[") and text.endswith("]")
    if optional:
        text = text[len("Optional["):-1]
    text = re.sub(r"List\[", "list[", text)
    text = re.sub(r"Dict\[", "dict[", text).replace(",", ", ")
    text = re.sub(r"\bAny\b", "any", text)
    return f"{text} or null" if optional else text


def _default_value(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def default_text(value: Any) -> str:
    """A default as a config file would write it."""
    if value is MISSING or value == "???":
        return "required"
    if dataclasses.is_dataclass(value):
        return "(below)"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if re.fullmatch(r"\$\{[^}]*\}", value) or (value and not re.search(r"[\s:#,\[\]{}\\\"]|^\d", value)):
            return value
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def cell(text: str) -> str:
    """Text that is safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------------- tables


def table(cls: type, prefix: str, skip: Sequence[str] = (), only: Optional[Sequence[str]] = None,
          nested: Optional[List[Tuple[str, type, str]]] = None) -> List[str]:
    """One Markdown table of ``cls``'s fields, keys written ``prefix.key``. Fields that hold a schema of
    their own are listed with a pointer, and appended to ``nested`` to get a table of their own."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        text = comment(cls, f.name) or ("the class this option builds" if f.name == "_target_" else "")
        sub, how = schema_of(str(f.type))
        if sub is not None and nested is not None:
            sub_key = key + ("[]" if how == "list" else "")
            nested.append((sub_key, sub, "list" if how == "list" else "one"))
            text = see(text, f"[`{sub_key}`](#{anchor(sub_key)})")
        rows.append(f"| `{key}` | {cell(type_name(f.type))} | {cell(default_text(_default_value(f)))} | {cell(text)} |")
    return rows if len(rows) > 2 else []


def see(text: str, link: str) -> str:
    """A comment followed by a pointer to another table."""
    if not text:
        return f"see {link}"
    return f"{text} See {link}." if text.endswith(".") else f"{text}; see {link}"


def prose(text: str) -> List[str]:
    """A paragraph wrapped at 120 characters (blank lines kept)."""
    out: List[str] = []
    for block in text.split("\n\n"):
        out += textwrap.wrap(block, width=120, break_long_words=False, break_on_hyphens=False) + [""]
    return out[:-1]


def anchor(key: str) -> str:
    """GitHub's anchor for a heading that is just ``key`` in backticks."""
    return re.sub(r"[^\w\- ]", "", key.lower()).replace(" ", "-")


def nested_sections(nested: List[Tuple[str, type, str]], level: str = "####") -> List[str]:
    out: List[str] = []
    while nested:
        key, cls, how = nested.pop(0)
        out += ["", f"{level} `{key}`", ""]
        doc = docstring(cls)
        intro = f"`{cls.__name__}`" + (" (each entry of the list)" if how == "list" else "")
        out += prose(f"{intro}. {doc}" if doc else intro + ".") + [""]
        more: List[Tuple[str, type, str]] = []
        out += table(cls, key, nested=more)
        nested[0:0] = more
    return out


def used_by(group: str, schema_name: str) -> List[str]:
    """The option files of conf/<group>/ that start from ``schema/<group>/<schema_name>``."""
    folder = config_dir() / group
    pattern = re.compile(rf"^\s*-\s*/schema/{re.escape(group)}/{re.escape(schema_name)}@_here_\s*$", re.M)
    return sorted(p.stem for p in folder.glob("*.yaml") if pattern.search(p.read_text()))


def common_base(classes: Sequence[type], with_keys: bool = True) -> Optional[type]:
    """The nearest dataclass that every option's schema derives from (with keys besides _target_)."""
    if len(classes) < 2:
        return None
    for klass in classes[0].__mro__:
        if (dataclasses.is_dataclass(klass) and all(issubclass(c, klass) for c in classes)
                and (not with_keys or [f.name for f in dataclasses.fields(klass) if f.name != "_target_"])):
            return klass
    return None


def group_section(group: str, options: Dict[str, type]) -> List[str]:
    template = PREFIX.get(group, group)
    out = ["", f"## {group}", ""]
    if group in SHARED:  # keys of the group's node besides its options'
        out += prose(docstring(SHARED[group])) + [""] + table(SHARED[group], group, skip=("_target_",)) + [""]
    base = common_base(list(options.values()))
    parent = common_base(list(options.values()), with_keys=False)
    if base is not None:
        doc = docstring(base)
        out += prose((doc + " " if doc else "") + f"Keys of every `{group}` option (`{base.__name__}`):") + [""]
        nested: List[Tuple[str, type, str]] = []
        out += table(base, template.format(option="<option>"), skip=("_target_",), nested=nested)
        out += nested_sections(nested)
    elif parent is not None and docstring(parent):
        out += prose(docstring(parent))
    for name, cls in options.items():
        if len(options) > 1:
            out += ["", f"### {group}: {name}", ""]
        doc = docstring(cls)
        files = used_by(group, name)
        where = (f"Options: {', '.join(f'`{group}={f}`' for f in files)}." if files else "")
        out += prose(" ".join(part for part in (f"`{cls.__name__}`.", doc, where) if part)) + [""]
        own = [f.name for f in dataclasses.fields(cls)
               if base is None or f.name == "_target_" or f.name not in {b.name for b in dataclasses.fields(base)}
               or _default_value(f) != _default_value(_field(base, f.name))]
        nested = []
        prefix = template.format(option=name)
        rows = table(cls, prefix, only=own, nested=nested)
        if base is not None and rows:
            out += ["Its own keys, and the common ones whose default it changes:", ""]
        out += rows
        out += nested_sections(nested)
    return out


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def top_level() -> List[str]:
    groups = set(SCHEMAS)
    out = ["", "## Top level", ""]
    out += prose(docstring(Config) + " Keys set as `key=value` (`seed=3`, `resume=true`).") + [""]
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    nested: List[Tuple[str, type, str]] = []
    for f in dataclasses.fields(Config):
        text = comment(Config, f.name)
        if f.name in groups:
            text = see(text, f"the group [{f.name}](#{f.name})")
            rows.append(f"| `{f.name}` | group | {cell(_group_default(f.name))} | {cell(text)} |")
            continue
        sub, how = schema_of(str(f.type))
        if sub is not None:
            key = f.name + ("[]" if how == "list" else "")
            nested.append((key, sub, how))
            text = see(text, f"[`{key}`](#{anchor(key)})")
        default = _default_value(f)
        shown = "(below)" if dataclasses.is_dataclass(default) else default_text(default)
        if how == "list" and isinstance(default, list):
            shown = "`[" + ", ".join(_yaml(dataclasses.asdict(d)) for d in default) + "]`"
        rows.append(f"| `{f.name}` | {cell(type_name(f.type))} | {cell(shown)} | {cell(text)} |")
    out += rows
    others = [g for g in _defaults_groups() if g not in groups]
    if others:
        out += [""] + prose("Groups without a schema of their own, whose options set keys of the groups above: "
                            + ", ".join(f"`{g}` (default `{_group_default(g).strip('`') or 'null'}`)" for g in others)
                            + "; `python -m ftexp --help` lists their options.")
    out += nested_sections(nested, level="###")
    return out


def _defaults_groups() -> List[str]:
    """The groups named in the defaults list of conf/config.yaml."""
    text = (config_dir() / "config.yaml").read_text()
    block = re.search(r"^defaults:\n((?:\s+-.*\n)+)", text, re.M)
    names = re.findall(r"^\s+-\s*(?:override\s+)?/?([\w/]+):", block.group(1), re.M) if block else []
    return [n for n in names if n != "_self_"]


def _group_default(group: str) -> str:
    text = (config_dir() / "config.yaml").read_text()
    match = re.search(rf"^\s*-\s*{re.escape(group)}:\s*(\[[^\]]*\]|\S+)", text, re.M)
    return f"`{match.group(1)}`" if match else ""


def render() -> str:
    """docs/settings.md."""
    files = sorted({Path(inspect.getfile(c)).name for c in _schema_classes()})
    modules = ", ".join(f"`{f}`" for f in files)
    intro = INTRO.rstrip("\n").replace("{modules}", f"`src/ftexp/config/`: {modules}")
    out: List[str] = []
    for block in intro.split("\n\n"):
        out += ([block] if block.startswith("```") else prose(" ".join(block.split()))) + [""]
    out = out[:-1]
    out += [""] + prose("Groups: " + ", ".join(f"[{g}](#{g})" for g in SCHEMAS) + "; [top-level keys](#top-level).")
    out += top_level()
    for group, options in SCHEMAS.items():
        out += group_section(group, options)
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    text = render()
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
