"""Hydra's own flags and ftexp's subcommands, run as a user runs them (``python -m ftexp`` in a subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ftexp
import hydra_plugins.ftexp_searchpath
from ftexp.config import config_dir, sweeps_root
from tests.helpers.cli import ftexp as run_ftexp

CHECKOUT_FOLDERS = (".venv", ".git", ".cache", "outputs", "src", "tests")


def completions(line: str, env_extra=None) -> set:
    """What bash completion offers for the command line ``line`` (Hydra's completion query)."""
    proc = run_ftexp("-sc", "query=bash", env_extra={"COMP_LINE": line, **(env_extra or {})}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


@pytest.fixture
def checkout_with_a_big_venv(tmp_path: Path) -> Path:
    """A source checkout's layout (src/, conf/, sweeps/ at its root) beside a .venv of many folders."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(ftexp.__file__).parent, tmp_path / "src" / "ftexp", ignore=ignore)
    plugin = Path(hydra_plugins.ftexp_searchpath.__file__).parent
    shutil.copytree(plugin, tmp_path / "src" / "hydra_plugins" / plugin.name, ignore=ignore)
    (tmp_path / "conf").symlink_to(config_dir())
    (tmp_path / "sweeps").symlink_to(sweeps_root() / "sweeps")
    for i in range(500):  # each would be a config group that --hydra-help lists (about 0.1 s apiece)
        (tmp_path / ".venv" / f"package{i}" / "data").mkdir(parents=True)
    return tmp_path


@pytest.mark.slow
def test_hydra_help_answers_in_a_checkout_with_a_venv(checkout_with_a_big_venv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout_with_a_big_venv / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftexp", "--hydra-help"], capture_output=True, text=True,
                          timeout=60, env=env, cwd=checkout_with_a_big_venv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.perf_counter() - start < 60
    assert "== Configuration groups ==" in proc.stdout and "hydra/launcher: basic" in proc.stdout
    assert "package0" not in proc.stdout


def test_completion_offers_config_groups_and_no_folder_of_the_checkout():
    offered = completions("ftexp ")
    assert {"model=", "data=", "mitigation=", "sweeps="} <= offered
    for folder in CHECKOUT_FOLDERS:
        assert not {folder, f"{folder}/", f"{folder}="} & offered, folder
    assert "sweeps=synthetic_share" in completions("ftexp sweeps=")


def test_cfg_job_resolve_prints_the_folder_a_run_would_get(tmp_path):
    proc = run_ftexp("--cfg", "job", "--resolve", f"hydra.run.dir={tmp_path}/run", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"output_dir: {tmp_path}/run\n" in proc.stdout
    assert "${" not in proc.stdout
    unresolved = run_ftexp("--cfg", "job", timeout=120)  # without --resolve: as written
    assert "output_dir: ${hydra:runtime.output_dir}" in unresolved.stdout


def test_cfg_all_resolve_names_one_folder_for_the_job_and_hydra():
    proc = run_ftexp("--cfg", "all", "--resolve", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folders = {line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
               if line.strip().startswith("output_dir:")}
    assert len(folders) == 1 and Path(folders.pop()).is_absolute()


def test_version_names_ftexp_and_hydra():
    proc = run_ftexp("--version", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == f"ftexp {ftexp.__version__}"
    assert "Hydra 1.3" in proc.stdout


@pytest.mark.parametrize("tool", ["compare", "review"])
def test_subcommands_run_their_tools(tool):
    helped = run_ftexp(tool, "--help", timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert f"usage: python -m ftexp.{tool}" in helped.stdout


def test_compare_subcommand_passes_its_arguments_and_exit_status(tmp_path):
    proc = run_ftexp("compare", str(tmp_path / "absent"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("ftexp.compare: error:") and "absent" in proc.stderr
