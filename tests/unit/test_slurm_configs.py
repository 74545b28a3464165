"""The SLURM and parallel-local launcher configs of hydra-submitit-launcher (``conf/hydra/launcher/``),
composed with ftexp's root config and checked: one task per GPU, the plain submitit launchers, the
pre-flight's names for typos. Real sweeps through them: tests/integration/test_slurm.py (slow)."""

from __future__ import annotations

import pytest

from ftexp.config.preflight import ConfigError, check_overrides, compose_config

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install 'ftexp[slurm]'")

SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


def launcher(*overrides: str):
    cfg = compose_config(list(overrides), return_hydra_config=True)
    return cfg, cfg.hydra.launcher


@pytest.mark.parametrize("name, nodes", [("slurm_gpu", 1), ("slurm_gpu_multinode", 2)])
def test_slurm_configs_compose_one_task_per_gpu(name, nodes):
    cfg, hl = launcher(f"hydra/launcher={name}", "trainer=ddp", "trainer.devices=4")
    assert hl._target_ == SLURM_TARGET
    assert cfg.hydra.runtime.choices["hydra/launcher"] == name
    assert hl.nodes == nodes
    assert hl.gpus_per_node == 4 and hl.tasks_per_node == hl.gpus_per_node == cfg.trainer.devices
    assert hl.cpus_per_task >= 1 and hl.mem_gb > 0 and hl.timeout_min > 0
    assert hl.partition is None and hl.max_num_timeout == 0
    assert any("OMP_NUM_THREADS" in line for line in hl.setup)
    assert hl.submitit_folder.startswith(cfg.hydra.sweep.dir)
    assert cfg.trainer.strategy == "ddp"


def test_tasks_per_node_follow_gpus_per_node():
    _, hl = launcher("hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=8", "hydra.launcher.partition=gpu")
    assert hl.gpus_per_node == hl.tasks_per_node == 8 and hl.partition == "gpu"
    _, hl = launcher("hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=null", "hydra.launcher.gres=gpu:2",
                     "hydra.launcher.tasks_per_node=2")
    assert hl.gpus_per_node is None and hl.tasks_per_node == 2 and hl.gres == "gpu:2"


def test_plain_submitit_launchers_and_local_parallel_compose():
    _, hl = launcher("hydra/launcher=submitit_slurm")
    assert hl._target_ == SLURM_TARGET and hl.tasks_per_node == 1
    _, hl = launcher("hydra/launcher=local_parallel")
    assert hl._target_ == LOCAL_TARGET
    assert hl.tasks_per_node == 1 and hl.gpus_per_node == 0 and hl.timeout_min >= 60


def test_preflight_accepts_launcher_overrides_and_names_typos():
    check_overrides(["hydra/launcher=slurm_gpu", "trainer=ddp", "trainer.devices=4", "hydra.launcher.nodes=1",
                     "seed=0,1"], multirun=True)
    with pytest.raises(ConfigError, match=r"Did you mean 'slurm_gpu'\?"):
        check_overrides(["hydra/launcher=slurm_gpus", "seed=0,1"], multirun=True)
    with pytest.raises(ConfigError, match=r"'gpus_per_nod' is not a key of hydra.launcher"):
        check_overrides(["hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_nod=2"], multirun=True)
