"""Value checks that types alone cannot express (ranges, combinations), run at composition time.

Each rule lives beside its schema: a schema dataclass declares ``problems(node)``, a classmethod that
yields ``(key, value, rule)`` for one node of its type (the key relative to that node, "" for the node
itself). Hydra composes DictConfigs and never calls a dataclass's ``__post_init__``, and the pre-flight
must list every problem at once, so :func:`problems` walks the composed config instead: it finds each
node's schema (``OmegaConf.get_type``), runs its rules and puts the node's key in front, before anything
loads. Rules across groups live on the root schema and read what an option declares (its ClassVar
capabilities), never the text of its ``_target_``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, List, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

Problem = Tuple[str, Any, str]  # (key, value, rule): written "key=value!r: rule"
Problems = Iterator[Problem]


def problems(cfg: DictConfig) -> List[str]:
    """Every value problem of a composed config, each naming its key and value."""
    return [f"{key}={value!r}: {rule}" for key, value, rule in walk(cfg)]


def walk(node: Any, path: str = "") -> Problems:
    """The problems of ``node`` (found at ``path``) by its schema's rules, then those of every node below
    it, each with its full key."""
    rules = getattr(OmegaConf.get_type(node), "problems", None) if isinstance(node, DictConfig) else None
    if rules is not None:
        for key, value, rule in rules(node):
            yield join(path, key), value, rule
    for key, child in children(node, path):
        yield from walk(child, key)


def children(node: Any, path: str) -> Iterator[Tuple[str, Any]]:
    """The dicts and lists right below ``node`` that hold values, with their full keys. Skipped: missing,
    null and interpolated nodes (checked where they are written), and Hydra's own node."""
    if isinstance(node, DictConfig):
        keys = [(key, join(path, str(key))) for key in node.keys()]
    elif isinstance(node, ListConfig):
        keys = [(i, f"{path}[{i}]") for i in range(len(node))]
    else:
        return
    for key, full in keys:
        child = node._get_node(key)
        if (isinstance(child, (DictConfig, ListConfig)) and full != "hydra" and not child._is_missing()
                and not child._is_none() and not child._is_interpolation()):
            yield full, child


def join(path: str, key: str) -> str:
    """``path.key``; either alone when the other is empty."""
    return f"{path}.{key}" if path and key else path or key


def added_keys(node: DictConfig, prefix: str = "") -> List[str]:
    """Keys that no schema declares: Hydra lets ``+key=value`` (or a config file) add them to a typed
    node, where they would be silently ignored, so a misspelt ``+trainer.max_epoch=3`` is an error."""
    found: List[str] = []
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        declared = {f.name for f in dataclasses.fields(schema)}
        found += [f"{prefix}{k}" for k in node.keys() if k not in declared]
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found += added_keys(child, f"{prefix}{key}.")
    return found


def leaves(node: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Every value of a config that is not a dict or a list, with its dotted key (``prefix`` ends in "."
    when given); as written: interpolations are not resolved."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return [(prefix.rstrip("."), node)]
    return [leaf for key, value in items for leaf in leaves(value, f"{prefix}{key}.")]


def targets(node: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """Every ``_target_`` of a config (as written: interpolations are not resolved), with its key."""
    return [(key, value) for key, value in leaves(node, prefix) if key.rpartition(".")[2] == "_target_"]
