"""Composition: every option composes against its schema; bad command lines fail fast and clearly."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest
from omegaconf import OmegaConf

from ftexp.config import config_dir, sweeps_root
from ftexp.config.preflight import HIDDEN_GROUPS, ConfigError, check_overrides, compose_config, expand_sweeps
from ftexp.config.schema import (
    SCHEMAS,
    Config,
    EwcConfig,
    LwfConfig,
    MitigationConfig,
    NoMitigationConfig,
    ReplayConfig,
)

GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name not in HIDDEN_GROUPS)


def all_options():
    """(group, option) for every YAML file under conf/<group>/, found recursively."""
    for group in GROUPS:
        for path in sorted((config_dir() / group).rglob("*.yaml")):
            option = path.relative_to(config_dir() / group).with_suffix("").as_posix()
            yield group, option


SWEEPS = sorted(p.stem for p in (sweeps_root() / "sweeps").rglob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_file_composes_and_every_swept_value_is_valid(sweep):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    text = (sweeps_root() / "sweeps" / f"{sweep}.yaml").read_text()
    if "override /hydra/sweeper: optuna" in text:
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'ftexp[tune]'")
    cfg = compose_config([f"sweeps={sweep}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params, f"sweeps/{sweep}.yaml sweeps nothing"
    assert "python -m ftexp -m sweeps=" in text  # the file says how to run it
    # every value of every swept key composes and passes the value checks (an interval: its ends)
    overrides = [f"{key}={value}" for key, value in params.items()]
    for ov in OverridesParser.create().parse_overrides(overrides):
        try:  # one value (`seed: 0`) is not a sweep: it is its own only value
            values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        except HydraException:
            values = [str(ov.value().start), str(ov.value().end)]
        for value in values:
            check_overrides([f"sweeps={sweep}", f"{ov.get_key_element()}={value}"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "red_team").glob("*.yaml")))
def test_every_red_team_set_is_included_by_its_data_config(name):
    cfg = compose_config([f"data={name}"])
    assert len(cfg.data.red_team.prompts) >= 5  # typed by the data schema: a misspelt key fails here
    assert all(isinstance(p, str) and p.strip() for p in cfg.data.red_team.prompts)


def test_config_groups_are_the_documented_axes():
    assert set(GROUPS) >= {"model", "peft", "data", "mitigation", "evaluator", "trainer", "logger", "experiment"}


@pytest.mark.parametrize("group,option", list(all_options()))
def test_every_option_composes_against_its_schema(group, option):
    override = f"{group}=[{option}]" if group == "evaluator" else f"{group}={option}"
    cfg = compose_config([override])
    for node in ("model", "peft", "data", "mitigation", "trainer"):
        assert OmegaConf.get_type(cfg[node]) in SCHEMAS[node].values(), node  # its own group's schema
    for name, ev in cfg.evaluator.items():
        assert OmegaConf.get_type(ev) in SCHEMAS["evaluator"].values(), name
    for name, backend in cfg.logger.backends.items():  # each logger option under its own name
        assert OmegaConf.get_type(backend) is SCHEMAS["logger"][name], name
    text = (config_dir() / group / f"{option}.yaml").read_text()
    if "# @package _global_" not in text:  # the option file itself starts from a schema of its group
        assert f"/schema/{group}/" in text
    OmegaConf.to_container(cfg.model, resolve=True)  # every interpolation inside the model resolves


def test_hub_models_default_to_lora_and_an_explicit_choice_wins():
    assert OmegaConf.get_type(compose_config(["model=mistral7b"]).peft).__name__ == "LoraConfig"
    assert OmegaConf.get_type(compose_config(["model=mistral7b", "peft=full"]).peft).__name__ == "FullFinetuneConfig"
    assert OmegaConf.get_type(compose_config([]).peft).__name__ == "FullFinetuneConfig"  # tiny: full


def test_optimiser_defaults_follow_the_model():
    cfg = compose_config(["model=mistral7b"])
    assert cfg.optim.lr == cfg.model.lr == 1e-4
    assert cfg.optim.batch_size == cfg.model.batch_size


def message(overrides, multirun=False) -> str:
    with pytest.raises(ConfigError) as info:
        check_overrides(overrides, multirun=multirun)
    return str(info.value)


def test_misspelt_key_names_the_key_and_the_valid_keys():
    msg = message(["model.hiden_size=64"])
    assert "'hiden_size' is not a key of model" in msg
    assert "Did you mean 'hidden_size'?" in msg and "num_hidden_layers" in msg


def test_misspelt_key_of_an_option_without_keys():
    msg = message(["mitigation.lamda=1"])
    assert "mitigation.lamda=1" in msg and "'lamda' is not a key of mitigation" in msg


def test_wrong_type_names_key_and_expected_type():
    msg = message(["trainer.max_steps=abc"])
    assert "trainer.max_steps must be an int, got 'abc'" in msg


def test_unknown_option_lists_the_options():
    msg = message(["model=mistral8b"])
    assert "'mistral8b' is not an option of the config group 'model'" in msg
    assert "Did you mean 'mistral7b'?" in msg and "smollm2_135m" in msg and "tiny" in msg


def test_unknown_option_in_a_list_group():
    msg = message(["evaluator=[classification,nope]"])
    assert "'nope' is not an option of the config group 'evaluator'" in msg


def test_every_swept_value_is_checked_before_the_sweep_starts():
    check_overrides(["trainer.max_epochs=1,2", "seed=0,1"], multirun=True)
    msg = message(["trainer.max_epochs=1,2,x"], multirun=True)
    assert "trainer.max_epochs=x" in msg and "must be an int" in msg


def test_sweep_expansion_tries_each_value_once():
    lines = expand_sweeps(["a=1,2,3", "b=x", "c=range(0,2)"])
    assert lines[0] == ["a=1", "b=x", "c=0"]
    assert ["a=3", "b=x", "c=0"] in lines and ["a=1", "b=x", "c=1"] in lines
    assert len(lines) == 4


def test_value_rules_name_key_and_value():
    msg = message(["trainer.devices=abc", "optim.warmup_ratio=1.5"])
    assert "trainer.devices='abc'" in msg and "optim.warmup_ratio=1.5" in msg
    with pytest.raises(ConfigError, match="trainer.max_epochs=0"):
        check_overrides(["trainer.max_epochs=0"])


def run_cli(*args, timeout=60):
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftexp", *args], capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t


@pytest.mark.parametrize(
    "override,expected",
    [
        ("mitigation.lamda=1", "'lamda' is not a key of mitigation"),
        ("trainer.max_steps=abc", "trainer.max_steps must be an int"),
        ("model=mistral8b", "Options of 'model'"),
    ],
)
def test_cli_bad_override_exits_nonzero_with_one_line(override, expected, tmp_path):
    proc, seconds = run_cli(override, f"hydra.run.dir={tmp_path}")
    assert seconds < 10  # fails fast: no model, no torch import (see test_schema_module_imports_no_torch)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results.json").exists()


def test_cli_help_lists_groups_and_options():
    proc, _ = run_cli("--help")
    assert proc.returncode == 0
    for word in ("model", "peft", "data", "mitigation", "evaluator", "trainer", "logger",
                 "mistral7b", "llama3_70b", "banking77", "lora", "ddp", "wandb"):
        assert word in proc.stdout
    assert "schema" not in proc.stdout.replace("schema.py", "")
    groups = {line.strip() for line in proc.stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")}
    assert not {".git", ".venv", "src", "tests"} & groups  # folders of the checkout root are not groups
    assert re.search(r"dataset_size +E2 — how many examples are enough\? The learning curve", proc.stdout)  # the sweep file


def test_schema_module_imports_no_torch():
    code = "import sys, ftexp.cli, ftexp.config.preflight; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sweeps_declared_in_files_are_checked_and_the_command_line_wins():
    from ftexp.config.preflight import _file_sweeps, hydra_context

    with hydra_context():
        assert _file_sweeps(["sweeps=dataset_size"], "config") == ["data.n_train=250,500,1000,2000", "seed=0,1,2"]
        assert _file_sweeps(["sweeps=dataset_size", "data.n_train=10,20"], "config") == ["seed=0,1,2"]
    msg = message(["sweeps=dataset_size", "data.synthetic.share=0.95"], multirun=True)
    assert "data.synthetic.share=0.95" in msg and "[0, 0.9]" in msg


def test_the_set_and_forget_recipe_overrides_each_size_s_own_settings():
    for model in ("tiny_03m", "tiny", "tiny_8m"):
        tuned = compose_config([f"model={model}"])
        fixed = compose_config([f"model={model}", "recipe=set_and_forget"])
        assert tuned.optim.lr == tuned.model.lr and tuned.trainer.max_epochs == tuned.model.max_epochs
        assert (fixed.optim.lr, fixed.optim.batch_size, fixed.trainer.max_epochs) == (2e-4, 16, 3)
    assert compose_config(["model=tiny_03m"]).optim.lr != compose_config(["model=tiny_8m"]).optim.lr


@pytest.mark.parametrize("overrides,expected", [
    (["mitigation=ewc", "mitigation.mode=bogus"], "mitigation.mode='bogus': must be 'online' or 'separate'"),
    (["mitigation=ewc", "mitigation.fisher_batch_size=0"], "mitigation.fisher_batch_size=0: must be >= 1"),
    (["mitigation=lwf", "mitigation.temperature=0"], "mitigation.temperature=0.0: must be > 0"),
    (["mitigation=lwf", "mitigation.vocab_chunk=0"], "mitigation.vocab_chunk=0: must be >= 1"),
    (["mitigation=replay", "mitigation.sampling=x"], "mitigation.sampling='x': must be 'reservoir' or 'balanced'"),
    (["mitigation=replay", "mitigation.mode=both"], "mitigation.mode='both': must be 'replace' or 'add'"),
    (["mitigation=replay", "mitigation.ratio=1"], "mitigation.ratio=1.0: must be in [0, 1)"),
])
def test_a_mitigation_value_is_checked_before_anything_loads(overrides, expected):
    assert expected in message(overrides)


def test_an_evaluator_s_rows_are_all_or_last():
    assert "evaluator.classification.rows='Last': must be 'all'" in message(["evaluator.classification.rows=Last"])


def test_every_problem_is_listed_at_once_with_its_full_key():
    msg = message(["mitigation=lwf", "mitigation.temperature=0", "optim.lr=0", "data.extra_sources=[{weight:-1}]",
                   "stages=[{name:a},{name:a,lr:-1}]", "trainer.fused_loss=true"])
    for words in ("mitigation.temperature=0.0", "optim.lr=0.0", "data.extra_sources[0].weight=-1.0",
                  "stages[1].lr=-1.0", "stages=['a', 'a']", "trainer.fused_loss=True: mitigation=lwf distils"):
        assert words in msg
    assert msg.startswith("invalid values")


def test_the_rules_reach_every_task_and_generator():
    """A task besides `data` (here the forgetting experiment's) and a synthetic generator's model config
    are data and model configs too: their rules run under their own keys."""
    msg = message(["experiment=forgetting", "tasks.cuad.n_train=0"])
    assert "tasks.cuad.n_train=0: must be >= 1" in msg
    msg = message(["+model@data.synthetic.generator=smollm2_135m", "data.synthetic.generator.max_length=4"])
    assert "data.synthetic.generator.max_length=4: must be >= 8" in msg


@dataclass
class Distiller(MitigationConfig):
    """A mitigation of one's own that distils from the student's logits."""

    _target_: str = "my.Distiller"
    reads_student_logits: ClassVar[bool] = True


def test_rules_across_groups_read_what_a_mitigation_declares():
    """FSDP x EWC/LwF and the fused loss x LwF read ClassVar capabilities of the mitigation's schema, so a
    mitigation of one's own declares them instead of being named in the rule."""
    assert EwcConfig.needs_whole_parameters and LwfConfig.needs_whole_parameters and LwfConfig.reads_student_logits
    assert not (ReplayConfig.needs_whole_parameters or EwcConfig.reads_student_logits)
    assert not (NoMitigationConfig.needs_whole_parameters or NoMitigationConfig.reads_student_logits)
    cfg = compose_config(["trainer.fused_loss=true"])
    cfg.mitigation = OmegaConf.structured(Distiller)
    found = {key: rule for key, _, rule in Config.problems(cfg)}
    assert "distils from the student's full logits" in found["trainer.fused_loss"]
    assert "is not allowed" in found["mitigation._target_"]  # a class of one's own is still refused unless allowed
