"""Puts ftexp's ``sweeps/`` folder on Hydra's search path, as the config group ``sweeps``:
``python -m ftexp -m sweeps=synthetic_share`` runs the sweep that ``sweeps/synthetic_share.yaml`` declares."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class FtexpSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from ftexp.config import sweeps_root

        root = sweeps_root()
        if root is not None:
            search_path.append(provider="ftexp-sweeps", path=f"file://{root}")
