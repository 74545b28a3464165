"""A config cannot name a callable of its own choosing: not in what ftexp builds, and not in what Hydra
itself builds (callbacks, launcher, sweeper, logging) or sets for child processes, with or without
--config-dir. Each refusal is one paragraph, exit code 2, before anything runs."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import List

import pytest

from ftexp.cli import main

EXPERIMENT = "# @package _global_\n"


def write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def own_configs(tmp_path) -> Path:
    return hostile_configs(tmp_path)


def hostile_configs(tmp_path: Path) -> Path:
    """A --config-dir with hostile files, each writing (or running a command that writes) tmp_path/made."""
    folder = tmp_path / "own"
    made = tmp_path / "made"
    write(folder, "experiment/callback.yaml", f"""\
        {EXPERIMENT}hydra:
          callbacks:
            x:
              _target_: builtins.open
              _args_: [{made}, w]
        """)
    write(folder, "experiment/widen.yaml", f"{EXPERIMENT}allowed_targets: [builtins.]\n")
    write(folder, "experiment/env.yaml", f"{EXPERIMENT}hydra:\n  job:\n    env_set:\n      LD_PRELOAD: {made}\n")
    write(folder, "hydra/job_logging/factory.yaml", f"""\
        version: 1
        handlers:
          f:
            (): builtins.open
            file: {made}
            mode: w
        root:
          handlers: [f]
        """)
    write(folder, "hydra/hydra_logging/popen.yaml", f"""\
        version: 1
        handlers:
          f:
            class: subprocess.Popen
            args: [touch, {made}]
        root:
          handlers: [f]
        """)
    write(folder, "hydra/job_logging/stream.yaml", """\
        version: 1
        handlers:
          s:
            class: logging.StreamHandler
            stream: ext://os.system
        root:
          handlers: [s]
        """)
    return folder


def attempt(argv: List[str], capsys) -> tuple:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


# (what is tried, the command line (OWN = the --config-dir, MADE = the file a call would make), words of the message)
CASES = [
    ("callback from the command line",
     ["+hydra.callbacks.x._target_=builtins.open", "+hydra.callbacks.x._args_=[MADE,w]"],
     ["override '+hydra.callbacks.x._target_=builtins.open'", "'builtins.open' is not a callback Hydra may build"]),
    ("callback after widening allowed_targets on the command line",
     ["allowed_targets=[builtins.]", "+hydra.callbacks.x._target_=builtins.open", "+hydra.callbacks.x._args_=[MADE,w]"],
     ["'builtins.open' is not a callback Hydra may build"]),
    ("callback in a --config-dir experiment", ["--config-dir", "OWN", "experiment=callback"],
     ["OWN/experiment/callback.yaml, line", "hydra.callbacks.x._target_: 'builtins.open'"]),
    ("job logging handler factory", ["--config-dir", "OWN", "hydra/job_logging=factory"],
     ["OWN/hydra/job_logging/factory.yaml, line 4", "hydra.job_logging.handlers.f.(): 'builtins.open'"]),
    ("hydra logging handler class", ["--config-dir", "OWN", "hydra/hydra_logging=popen"],
     ["OWN/hydra/hydra_logging/popen.yaml, line 4", "'subprocess.Popen' is not a logging class"]),
    ("logging stream imported by ext://", ["--config-dir", "OWN", "hydra/job_logging=stream"],
     ["hydra.job_logging.handlers.s.stream: 'ext://os.system' is not a stream"]),
    ("made-up launcher", ["-m", "hydra.launcher._target_=made.up.Launcher"],
     ["override 'hydra.launcher._target_=made.up.Launcher'", "is not an installed Hydra launcher",
      "hydra._internal.core_plugins.basic_launcher.BasicLauncher"]),
    ("class built inside a launcher's config",
     ["-m", "hydra/launcher=local_parallel", "+hydra.launcher.x._target_=os.system"],
     ["'os.system' is not a class the launcher may build"]),
    ("class built inside a sweeper's config",
     ["-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler._target_=os.system"],
     ["override 'hydra.sweeper.sampler._target_=os.system'", "'os.system' is not a class the sweeper may build"]),
    ("code-loading variable for child processes", ["--config-dir", "OWN", "experiment=env"],
     ["OWN/experiment/env.yaml, line 5", "hydra.job.env_set.LD_PRELOAD"]),
    ("allowed_targets widened by a config file", ["--config-dir", "OWN", "experiment=widen"],
     ["OWN/experiment/widen.yaml, line 2", "Only the command line may widen"]),
    ("ftexp component in a --config-dir run", ["--config-dir", "OWN", "model._target_=builtins.open"],
     ["model._target_='builtins.open'", "is not allowed"]),
    ("hydra logging under --hydra-help", ["--hydra-help", "--config-dir", "OWN", "hydra/hydra_logging=popen"],
     ["'subprocess.Popen' is not a logging class"]),
    ("hydra logging under --info", ["--info", "config", "--config-dir", "OWN", "hydra/hydra_logging=popen"],
     ["'subprocess.Popen' is not a logging class"]),
    ("a pickled config", ["--experimental-rerun", "MADE"], ["loading a pickled config can run any code"]),
    ("another config tree", ["--config-path", "OWN"], ["--config-path", "add it with --config-dir"]),
]


@pytest.mark.parametrize("name,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_config_is_refused_in_one_paragraph_and_runs_nothing(name, argv, expected, own_configs, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run folder, if anything got that far, lands here
    made = tmp_path / "made"
    argv = [a.replace("OWN", str(own_configs)).replace("MADE", str(made)) for a in argv]
    code, err = attempt(argv, capsys)
    assert code == 2, err
    for words in expected:
        assert words.replace("OWN", str(own_configs)) in err, f"{words!r} not in {err!r}"
    assert err.startswith("ftexp: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not made.exists(), f"{name}: the config ran code"
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_what_ftexp_needs_from_hydra_passes(own_configs, capsys):
    """The shipped launchers, sweepers and logging, and a --config-dir of one's own, are not refused."""
    from ftexp.config.preflight import check_overrides

    check_overrides(["hydra/launcher=local_parallel"], multirun=True)
    check_overrides(["hydra/launcher=slurm_gpu", "hydra/sweeper=optuna"], multirun=True)
    if _has_colorlog():
        check_overrides(["hydra/job_logging=colorlog", "hydra/hydra_logging=colorlog"])
    check_overrides(["+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback"])
    check_overrides(["data.n_train=8"], extra_dir=str(own_configs))


def _has_colorlog() -> bool:
    import importlib.util

    return importlib.util.find_spec("hydra_plugins.hydra_colorlog") is not None


@pytest.mark.parametrize("argv,expected", [
    (["data.n_train=0"], "data.n_train=0: must be >= 1"),
    (["data.n_train=-5"], "data.n_train=-5: must be >= 1"),
    (["optim.lr=0"], "optim.lr=0.0: must be > 0"),
    (["optim.lr=-1"], "optim.lr=-1.0: must be > 0"),
    (["trainer.max_epoch=1"], "Did you mean 'max_epochs'?"),
    (["model=mistral8b"], "Did you mean 'mistral7b'?"),
])
def test_a_config_dir_keeps_every_check(argv, expected, own_configs, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = attempt(["--config-dir", str(own_configs), *argv], capsys)
    assert code == 2 and expected in err and "Traceback" not in err, err


def test_help_lists_the_options_of_a_config_dir(own_configs, capsys):
    main(["--config-dir", str(own_configs), "--help"])
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["callback"] in lines and ["widen"] in lines  # the user's experiments, beside ftexp's
    assert any(x[:1] == ["banking77_quick"] for x in lines)
