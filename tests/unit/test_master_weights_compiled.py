"""optim.implementation=compiled: the master-weight step compiled, cast, clipping and write-back included."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.training.master_weights import MasterWeightAdamW
from ftexp.training.module import FineTuneModule, StepOptions
from tests.helpers.master_weights import check_compiled_step_is_torchs_adamw
from tests.helpers.models import tiny_lm, varied_rows


@pytest.mark.parametrize("device", ["cpu"])  # the same on a GPU: tests/gpu/test_gpu.py
def test_the_compiled_step_is_torchs_adamw_on_the_copies_with_clipping_folded_in(device):
    """Five steps from the same bf16 gradients at a changing rate, clipped by norm: the compiled step's
    copies and moments equal torch's AdamW on the fp32 gradients clipped by clip_grad_norm_ (to float
    rounding), its weights are its copies rounded, no fp32 gradient was made, and the new rates did not
    recompile it (one graph per group)."""
    check_compiled_step_is_torchs_adamw(device)


def _train(implementation: str, accumulate: int, clip: str = "norm", lr: float = 1e-3, callbacks=()):
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(48, seed=2)
    dm = FineTuneDataModule(rows, rows[:16], Batching(pad_id=0, batch_size=8, seed=0, group_by_length=False))
    model = tiny_lm().to(torch.bfloat16)
    optim = compose_config(["optim.warmup_ratio=0", f"optim.implementation={implementation}"]).optim
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", precision="bf16-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, gradient_clip_val=0.05 if clip == "norm" else 1e-3,
                         gradient_clip_algorithm=clip, accumulate_grad_batches=accumulate,
                         callbacks=list(callbacks))
    trainer.fit(FineTuneModule(model, optim, lr=lr, step=StepOptions(master_weights=True)), datamodule=dm)
    return trainer.optimizers[0], model


@pytest.mark.parametrize("accumulate", [1, 4])
def test_a_compiled_run_trains_as_the_eager_one(accumulate):
    """Lightning's loop (clipping by norm that binds, a cosine rate, micro-batches adding up in fp32 with
    accumulate_grad_batches=4, each epoch's six batches ending in a window of two): the compiled step's
    copies end where the eager step's do, to float rounding."""
    eager, eager_model = _train("for_loop", accumulate)
    compiled, model = _train("compiled", accumulate)
    assert compiled.compiled and not eager.compiled
    assert float(compiled.state[compiled.masters[0]]["step"]) == 2 * -(-6 // accumulate)
    for a, b in zip(eager.masters, compiled.masters):
        assert torch.allclose(a, b, rtol=1e-5, atol=5e-7), float((a - b).abs().max())  # ulps; bf16 sums: 6e-6
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(compiled.model_params, compiled.masters))
    changed = sum(int((a != b).sum()) for a, b in zip(eager_model.parameters(), tiny_lm().to(torch.bfloat16).parameters()))
    assert changed > 0


class GradsStepped(pl.Callback):
    """The largest gradient each compiled step was handed (one call per parameter group)."""

    def __init__(self):
        self.largest = []

    def on_fit_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        update = optimizer._update

        def spy(params, grads, *args, **kwargs):
            self.largest.append(max(float(g.abs().max()) for g in grads))
            return update(params, grads, *args, **kwargs)

        optimizer._update = spy


def test_clipping_by_value_reaches_the_compiled_step():
    """By value there is no factor to fold in: the copies' fp32 gradients are clipped before the step.
    (Compared with the eager run the copies drift apart over the steps: Adam's update of a weight with a
    near-zero gradient turns on that gradient's sign, which float rounding can flip.)"""
    spy = GradsStepped()
    _train("compiled", 1, clip="value", callbacks=[spy])
    assert len(spy.largest) == 2 * 12 and max(spy.largest) <= 1e-3 * (1 + 1e-6)  # two groups, 12 steps; 1e-3 in fp32
    unclipped = GradsStepped()
    _train("compiled", 1, clip="norm", lr=1e-3, callbacks=[unclipped])
    assert max(unclipped.largest) > 1e-2  # the gradients the value clip bounds


def test_compiled_is_for_master_weights_only():
    check_overrides(["trainer.precision=bf16-true", "trainer.master_weights=true", "optim.implementation=compiled"])
    with pytest.raises(ConfigError, match="optim.implementation='compiled': compiles the step of trainer.master_weights"):
        check_overrides(["optim.implementation=compiled"])


def test_past_the_recompile_limit_the_step_runs_eagerly():
    """Many models in one process (a sweep, a test session) outgrow dynamo's recompile limit: the step
    then runs uncompiled, with the same result, rather than failing."""
    with torch._dynamo.config.patch(recompile_limit=1):
        torch._dynamo.reset()
        steps = []
        for width in (3, 5):  # a second shape: past the limit
            params = [torch.nn.Parameter(torch.ones(width, dtype=torch.bfloat16))]
            opt = MasterWeightAdamW([{"params": params, "weight_decay": 0.0}], lr=0.1, compiled=True)
            params[0].grad = torch.ones(width, dtype=torch.bfloat16)
            opt.step()
            steps.append(opt.masters[0].detach().clone())
    for m in steps:
        assert torch.allclose(m, torch.full_like(m, 0.9))  # AdamW's first step moves each weight by lr
