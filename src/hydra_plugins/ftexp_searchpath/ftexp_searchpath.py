"""Puts ftexp's ``sweeps/`` folder on Hydra's search path, as the config group ``sweeps``:
``python -m ftexp -m sweeps=synthetic_share`` runs the sweep that ``sweeps/synthetic_share.yaml`` declares.

In a source checkout the folder that holds ``sweeps/`` is the repository root. Hydra takes every folder of a
search-path root for a config group, so a plain ``file://`` entry there would make ``.venv/``, ``.git/`` or
``src/`` groups: ``--hydra-help`` would walk them all (minutes) and tab completion would offer them. The entry
therefore uses the ``ftexp-sweeps://`` source below, which shows only the ``sweeps`` folder of its root.
"""

from typing import List, Optional

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin

from ftexp.config import SWEEPS_SCHEME, sweeps_root

SWEEPS_GROUP = "sweeps"


class FtexpSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        root = sweeps_root()
        if root is not None:
            search_path.append(provider="ftexp-sweeps", path=f"{SWEEPS_SCHEME}://{root}")


def in_sweeps_group(config_path: str) -> bool:
    """Whether ``config_path`` (relative to the search-path root) is the sweeps group or lies inside it."""
    parts = [p for p in config_path.replace("\\", "/").split("/") if p]
    return bool(parts) and parts[0] == SWEEPS_GROUP


class SweepsOnlyConfigSource(FileConfigSource):
    """A folder on disk of which only the ``sweeps`` group is visible to Hydra."""

    @staticmethod
    def scheme() -> str:
        return SWEEPS_SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        if not in_sweeps_group(config_path):
            raise ConfigLoadError(f"Config not found : {config_path} (only the {SWEEPS_GROUP} group is here)")
        return super().load_config(config_path)

    def available(self) -> bool:
        return super().is_group(SWEEPS_GROUP)

    def is_group(self, config_path: str) -> bool:
        return (config_path == "" or in_sweeps_group(config_path)) and super().is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        return in_sweeps_group(config_path) and super().is_config(config_path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if config_path == "":
            wants_groups = results_filter in (None, ObjectType.GROUP)
            return [SWEEPS_GROUP] if wants_groups and self.available() else []
        return super().list(config_path, results_filter) if in_sweeps_group(config_path) else []
