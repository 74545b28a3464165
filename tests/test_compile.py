"""trainer.compile: the training forward and backward through torch.compile, same steps as eager."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl

from ftexp.config.preflight import compose_config
from ftexp.data.datamodule import FineTuneDataModule
from ftexp.training.module import FineTuneModule
from tests.test_eval import tiny_lm
from tests.test_packing import StepLosses, varied_rows


def train_tiny(**module_options):
    """Six steps of the tiny model on fixed batches: the step losses and the trained module."""
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(48, seed=2)
    dm = FineTuneDataModule(rows, rows[:16], pad_id=0, batch_size=16, seed=0, group_by_length=False)
    module = FineTuneModule(tiny_lm(), compose_config([]).optim, lr=3e-3, **module_options)
    steps = StepLosses()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[steps])
    trainer.fit(module, datamodule=dm)
    return steps.losses, module


@pytest.mark.slow
def test_a_compiled_stage_takes_the_same_steps_as_an_eager_one():
    from torch._dynamo.utils import counters

    counters.clear()
    eager, eager_module = train_tiny(compile=False)
    assert not counters["frames"]["ok"]
    compiled, compiled_module = train_tiny(compile=True)
    assert counters["frames"]["ok"] > 0  # dynamo did compile the step
    # dropout-free model: the same draws, so the same losses (with dropout the masks differ)
    assert len(compiled) == len(eager) == 6
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(compiled, eager)), (compiled, eager)
    # the module itself is not wrapped: its parameter names (checkpoints, saved weights) are unchanged
    assert compiled_module.state_dict().keys() == eager_module.state_dict().keys()
    for (name, a), b in zip(compiled_module.model.named_parameters(), eager_module.model.parameters()):
        assert (a - b).abs().max() < 1e-4, name


def test_trainer_compile_reaches_the_training_step(tiny_overrides, tmp_path, monkeypatch):
    """The config key gets to the step that runs (torch.compile recorded, not run: compiling is slow
    on a CPU and tested above)."""
    import torch

    from ftexp.job import run_job
    from ftexp.training.module import forward

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    run_job(compose_config([*tiny_overrides, "trainer.compile=true", "trainer.max_steps=2", "save_model=false",
                            f"output_dir={tmp_path / 'run'}"]))
    assert compiled == [forward]
