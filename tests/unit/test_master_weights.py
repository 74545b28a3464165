"""trainer.master_weights: bf16 compute, the optimizer on fp32 copies of the weights that train."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch

from ftexp.config.preflight import ConfigError, check_overrides, compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.training.master_weights import MasterWeightAdamW
from ftexp.training.module import FineTuneModule, StepOptions
from tests.helpers.master_weights import first_step, train_bf16
from tests.helpers.models import tiny_lm, varied_rows


def _share_changed(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = list(zip(a.parameters(), b.parameters()))
    return sum(int((x != y).sum()) for x, y in pairs) / sum(x.numel() for x, _ in pairs)


def test_updates_too_small_for_bf16_accumulate_in_the_fp32_copies():
    """At a fine-tuning learning rate most AdamW updates are below bf16's resolution: pure bf16 drops
    them, the fp32 copies keep them, and the model's weights are the copies rounded."""
    pure, before, _ = train_bf16(master_weights=False)
    assert _share_changed(pure, before) < 0.3
    model, before, trainer = train_bf16(master_weights=True)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, MasterWeightAdamW)
    masters = dict(zip([id(p) for p in optimizer.model_params], optimizer.masters))
    moved = 0
    for p, p0 in zip(model.parameters(), before.parameters()):
        m = masters[id(p)]
        assert m.dtype == torch.float32 and p.dtype == torch.bfloat16
        assert torch.equal(p, m.to(torch.bfloat16))  # the weights the model computes with: the copies, rounded
        moved += int((m != p0.float()).sum())
        assert all(s["exp_avg"].dtype == torch.float32 for s in [optimizer.state[m]])
    assert moved / sum(p.numel() for p in model.parameters()) > 0.95
    assert _share_changed(model, before) > _share_changed(pure, before)


def test_gradients_reach_the_fp32_copies_before_lightning_clips_them(monkeypatch):
    """The norm Lightning clips is the copies': each step's gradients on them are within the limit."""
    from ftexp.training import module

    norms = []

    class Spy(MasterWeightAdamW):
        def step(self, closure=None):
            def clipped():  # the closure runs the backward, on_before_optimizer_step and the clipping
                loss = closure()
                norms.append(float(torch.stack([m.grad.norm() for m in self.masters if m.grad is not None]).norm()))
                return loss
            return super().step(clipped)

    monkeypatch.setattr(module, "MasterWeightAdamW", Spy)
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(32, seed=2)
    dm = FineTuneDataModule(rows, rows[:8], Batching(pad_id=0, batch_size=16, seed=0, group_by_length=False))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", precision="bf16-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=1e-3)  # far below the tiny model's gradient norm
    trainer.fit(FineTuneModule(tiny_lm().to(torch.bfloat16), compose_config([]).optim, lr=1e-3,
                               step=StepOptions(master_weights=True)), datamodule=dm)
    assert len(norms) == 2 and all(n <= 1e-3 * 1.001 for n in norms), norms


def test_the_fp32_copies_travel_in_the_optimizers_checkpoint_state():
    model, _, trainer = train_bf16(master_weights=True)
    optimizer = trainer.optimizers[0]
    state = optimizer.state_dict()
    assert len(state["master_weights"]) == len(list(model.parameters()))
    # A resumed run's model holds the rounded weights, and its optimizer rebuilds copies of those.
    twin = copy.deepcopy(model)
    where = {id(p): i for i, p in enumerate(model.parameters())}
    same = [list(twin.parameters())[where[id(p)]] for p in optimizer.model_params]
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    groups = [{"params": same[sum(sizes[:i]):sum(sizes[:i + 1])]} for i in range(len(sizes))]
    fresh = MasterWeightAdamW(groups, lr=1e-5)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.masters, state["master_weights"]))
    fresh.load_state_dict(state)
    for a, b, p in zip(fresh.masters, state["master_weights"], fresh.model_params):
        assert torch.equal(a, b) and torch.equal(p, b.to(torch.bfloat16))


def test_master_weights_need_a_low_precision_and_refuse_fsdp():
    check_overrides(["trainer.precision=bf16-true", "trainer.master_weights=true"])
    with pytest.raises(ConfigError, match="trainer.master_weights=True: .*needs trainer.precision='bf16-true', not '32-true'"):
        check_overrides(["trainer.master_weights=true"])
    with pytest.raises(ConfigError, match="trainer.master_weights=True: trainer.strategy='fsdp' shards"):
        check_overrides(["trainer=fsdp", "trainer.precision=bf16-true", "trainer.master_weights=true"])
    with pytest.raises(ConfigError, match="trainer.strategy='deepspeed_stage_2' shards"):
        check_overrides(["trainer.strategy=deepspeed_stage_2", "trainer.precision=bf16-true",
                         "trainer.master_weights=true"])


def test_trainer_master_weights_reaches_the_optimizer(tiny_overrides, tmp_path, monkeypatch):
    from ftexp.job import run_job

    calls = []
    original = MasterWeightAdamW.accumulate_grads
    monkeypatch.setattr(MasterWeightAdamW, "accumulate_grads", lambda self: calls.append(1) or original(self))
    run_job(compose_config([*tiny_overrides, "trainer.precision=bf16-true", "trainer.master_weights=true",
                            "trainer.max_steps=2", "save_model=false", f"output_dir={tmp_path / 'run'}"]))
    assert len(calls) == 4  # after each backward and before each step


@pytest.mark.parametrize("implementation", ["auto", "compiled"])
def test_a_run_resumed_from_a_checkpoint_goes_on_from_the_fp32_copies(tmp_path, implementation):
    """Resumed after its first epoch, a run ends with the uninterrupted run's copies and weights, bit for
    bit (copies rebuilt from the rounded weights would differ), the compiled step's too."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def fit(folder, ckpt=None):
        pl.seed_everything(0, verbose=False)
        rows = varied_rows(48, seed=2)
        dm = FineTuneDataModule(rows, rows[:16], Batching(pad_id=0, batch_size=8, seed=0, group_by_length=False))
        model = tiny_lm().to(torch.bfloat16)
        optim = compose_config(["optim.warmup_ratio=0", f"optim.implementation={implementation}"]).optim
        module = FineTuneModule(model, optim, lr=1e-5, step=StepOptions(master_weights=True))
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", precision="bf16-true", logger=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             callbacks=[ModelCheckpoint(dirpath=folder, save_top_k=-1, every_n_epochs=1,
                                                        filename="{epoch}")])
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        return trainer.optimizers[0], model

    whole, whole_model = fit(tmp_path / "a")
    resumed, resumed_model = fit(tmp_path / "b", ckpt=str(tmp_path / "a" / "epoch=0.ckpt"))
    assert all(torch.equal(a, b) for a, b in zip(whole.masters, resumed.masters))
    assert all(torch.equal(a, b) for a, b in zip(whole_model.parameters(), resumed_model.parameters()))


def test_micro_batch_gradients_add_up_in_fp32(tmp_path):
    """With accumulate_grad_batches=4 the copies step with the fp32 sum of the four micro-batches' bf16
    gradients (bf16-mixed's numerics), not with a sum rounded to bf16 at every addition."""
    from ftexp.training.module import completion_loss

    [saved] = first_step(tmp_path, accumulate=4)
    assert len(saved["batches"]) == 4
    model = tiny_lm().to(torch.bfloat16)
    parts = []
    for batch in saved["batches"]:
        (completion_loss(model, batch) / 4).backward()
        parts.append([p.grad.clone() for p in model.parameters()])
        model.zero_grad(set_to_none=True)
    in_fp32 = [sum(g.float() for g in grads) for grads in zip(*parts)]
    in_bf16 = [sum(grads[1:], grads[0].clone()).float() for grads in zip(*parts)]
    assert all(torch.equal(a, b) for a, b in zip(saved["grads"], in_fp32))
    assert not all(torch.equal(a, b) for a, b in zip(saved["grads"], in_bf16))  # the test can tell them apart
