"""Hydra's compose API on ftexp's config tree (and a --config-dir), for the pre-flight, --help and tools."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from hydra.core.global_hydra import GlobalHydra

from ftexp.config import SWEEPS_SCHEME, config_dir
from ftexp.errors import FtexpError


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
    dirs = [_folder(e.path) for e in path if e.path]
    return [Path(d) for d in dirs if d and Path(d).is_dir()]


def _folder(search_path_entry: str) -> Optional[str]:
    """The folder of a search-path entry on disk (``file://`` or the sweeps' own scheme), else None."""
    scheme, found, rest = search_path_entry.partition("://")
    if not found:
        return search_path_entry
    return rest if scheme in ("file", SWEEPS_SCHEME) else None


def group_options(group: str) -> List[str]:
    """The options of a config group, as Hydra sees them (config dir, search path, ConfigStore)."""
    loader = GlobalHydra.instance().config_loader()
    return sorted(loader.get_group_options(group))
