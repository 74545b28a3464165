"""Hydra's conventions on ftexp's command line: the search path's groups, --version, subcommands."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType

from ftexp.config import SWEEPS_SCHEME, sweeps_root
from ftexp.config.session import hydra_context, search_dirs
from hydra_plugins.ftexp_searchpath.ftexp_searchpath import SweepsOnlyConfigSource


@pytest.fixture
def checkout_like_root(tmp_path: Path) -> Path:
    """A folder like a source checkout's root: sweeps/ beside folders that are no config group."""
    (tmp_path / "sweeps" / "nested").mkdir(parents=True)
    (tmp_path / "sweeps" / "a_sweep.yaml").write_text("# @package _global_\nseed: 3\n")
    (tmp_path / "sweeps" / "nested" / "inner.yaml").write_text("seed: 4\n")
    for folder in (".venv/lib/site-packages", ".git/objects", "src/ftexp", "tests"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "src" / "ftexp" / "thing.yaml").write_text("x: 1\n")
    return tmp_path


def test_the_sweeps_source_shows_only_the_sweeps_group_of_its_root(checkout_like_root):
    source = SweepsOnlyConfigSource(provider="ftexp-sweeps", path=f"{SWEEPS_SCHEME}://{checkout_like_root}")
    assert source.available()
    assert source.list("", None) == ["sweeps"]
    assert source.list("", ObjectType.GROUP) == ["sweeps"]
    assert source.list("", ObjectType.CONFIG) == []
    assert source.list("sweeps", ObjectType.CONFIG) == ["a_sweep"]
    assert source.list("sweeps", ObjectType.GROUP) == ["nested"]
    assert source.is_config("sweeps/a_sweep") and source.is_group("sweeps/nested")
    assert source.load_config("sweeps/a_sweep.yaml").config.seed == 3
    for hidden in (".venv", ".git", "src", "src/ftexp", "tests"):
        assert not source.is_group(hidden) and not source.exists(hidden)
        assert source.list(hidden, None) == []
    assert not source.is_config("src/ftexp/thing")


def test_a_root_without_sweeps_is_not_available(tmp_path):
    (tmp_path / "src").mkdir()
    source = SweepsOnlyConfigSource(provider="ftexp-sweeps", path=f"{SWEEPS_SCHEME}://{tmp_path}")
    assert not source.available() and source.list("", None) == []


def test_the_composed_search_path_has_no_group_but_the_config_groups_and_sweeps():
    with hydra_context():
        loader = GlobalHydra.instance().config_loader()
        groups = set(loader.list_groups(""))
        assert "sweeps" in groups and "model" in groups
        repo_folders = {p.name for p in sweeps_root().iterdir() if p.is_dir()} - {"sweeps"}
        assert not groups & repo_folders, groups & repo_folders
        assert sweeps_root() in search_dirs()  # --help and the error messages still find the sweep files


def test_version_text_names_ftexp_and_hydra():
    import hydra

    from ftexp import __version__
    from ftexp.cli import version_text

    assert version_text().splitlines() == [f"ftexp {__version__}", f"Hydra {hydra.__version__}"]


def test_subcommands_hand_the_rest_of_the_line_to_their_tools(capsys, tmp_path):
    from ftexp.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["compare", str(tmp_path / "absent")])
    assert exited.value.code == 1 and "ftexp.compare: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["review", "--help"])
    assert exited.value.code == 0 and "usage: python -m ftexp.review" in capsys.readouterr().out


def test_merge_and_generate_are_subcommands_with_their_own_help(capsys):
    from ftexp.cli import SUBCOMMANDS, main

    assert SUBCOMMANDS["merge"] == "ftexp.use.merge" and SUBCOMMANDS["generate"] == "ftexp.use.generate"
    for name, flag in (("merge", "--out"), ("generate", "--max-new-tokens")):
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert exited.value.code == 0 and f"usage: ftexp {name}" in out and flag in out
