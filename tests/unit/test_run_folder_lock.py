"""One run per folder: the lock refuses a folder in use, naming its holder, and frees it after; default
folders end in the process id. Two real runs started together: tests/integration/test_run_folders.py."""

from __future__ import annotations

import os

import pytest

from ftexp.config.preflight import compose_config
from ftexp.utils.run_folder import RunFolderError, run_folder_lock


def test_a_held_folder_is_refused_naming_the_holder_and_free_again_after(tmp_path):
    with run_folder_lock(tmp_path / "run"):
        with pytest.raises(RunFolderError, match=rf"in use by another run \(process {os.getpid()} on "):
            with run_folder_lock(tmp_path / "run"):
                pass
    with run_folder_lock(tmp_path / "run"):  # released: the next run takes it
        pass


def test_default_folders_end_in_the_process_id():
    hydra = compose_config(return_hydra_config=True).hydra
    assert hydra.run.dir.endswith(f"-{os.getpid()}") and hydra.sweep.dir.endswith(f"-{os.getpid()}")
