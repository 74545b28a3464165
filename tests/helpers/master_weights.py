"""What the master-weight tests share: the first optimizer step's gradients, saved per rank (in one
process, and under DDP in the slow tier), and the compiled step checked against torch's AdamW (on a CPU in
unit/, on a GPU in gpu/)."""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch

from ftexp.config.preflight import compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.training.master_weights import MasterWeightAdamW
from ftexp.training.module import FineTuneModule, StepOptions
from tests.helpers.models import tiny_lm, varied_rows


def train_bf16(master_weights: bool, lr: float = 1e-5, model=None):
    """Six bf16-true steps of the tiny model; the model, its weights before, and the trainer."""
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(48, seed=2)
    dm = FineTuneDataModule(rows, rows[:16], Batching(pad_id=0, batch_size=16, seed=0, group_by_length=False))
    model = (model or tiny_lm()).to(torch.bfloat16)
    before = copy.deepcopy(model)
    optim = compose_config(["optim.warmup_ratio=0"]).optim
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", precision="bf16-true", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=1.0)
    trainer.fit(FineTuneModule(model, optim, lr=lr, step=StepOptions(master_weights=master_weights)), datamodule=dm)
    return model, before, trainer



class FirstStepGrads(pl.Callback):
    """The micro-batches of the first optimizer step and the fp32 copies' gradients it stepped with
    (still there at the batch's end: Lightning zeroes them before the next step), in the order of the
    model's parameters, saved per rank."""

    def __init__(self, folder):
        self.folder, self.batches = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.batches.append({k: v.clone() for k, v in batch.items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1 and not (self.folder / f"rank{trainer.global_rank}.pt").exists():
            optimizer = trainer.optimizers[0]
            master = {id(p): m for p, m in zip(optimizer.model_params, optimizer.masters)}
            grads = [master[id(p)].grad.clone() for p in pl_module.model.parameters()]  # the model's order
            torch.save({"grads": grads, "batches": self.batches}, self.folder / f"rank{trainer.global_rank}.pt")


def first_step(folder, accumulate: int, devices: int = 1, batch_size: int = 4):
    """One bf16-true optimizer step with master weights over ``accumulate`` micro-batches of
    ``batch_size`` rows (the global batch: under DDP each rank takes half of it)."""
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(batch_size * accumulate, seed=3)
    dm = FineTuneDataModule(rows, rows[:4], Batching(pad_id=0, batch_size=batch_size, seed=0, group_by_length=False))
    module = FineTuneModule(tiny_lm().to(torch.bfloat16), compose_config(["optim.warmup_ratio=0"]).optim, lr=1e-3,
                            step=StepOptions(master_weights=True))
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=devices, precision="bf16-true", logger=False,
                         strategy="ddp_spawn" if devices > 1 else "auto", use_distributed_sampler=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, accumulate_grad_batches=accumulate,
                         callbacks=[FirstStepGrads(folder)])
    trainer.fit(module, datamodule=dm)
    return [torch.load(folder / f"rank{r}.pt") for r in range(devices)]


def _optimizers(device: str):
    """The same bf16 weights under the eager step (torch's AdamW on the copies: the for-loop on a CPU,
    which differs from the compiled step most, fused on a GPU) and the compiled one, in two groups (with and
    without weight decay), as ftexp builds them."""
    model = tiny_lm().to(device=device, dtype=torch.bfloat16)
    twin = copy.deepcopy(model)

    def groups(m):
        params = list(m.parameters())
        return [{"params": params[::2], "weight_decay": 0.1}, {"params": params[1::2], "weight_decay": 0.0}]

    # eps near sqrt(exp_avg_sq): where it enters the update shows
    kernel = {"fused": True} if device == "cuda" else {"foreach": False}
    eager = MasterWeightAdamW(groups(model), lr=1e-3, betas=(0.9, 0.95), eps=1e-3, **kernel)
    compiled = MasterWeightAdamW(groups(twin), lr=1e-3, betas=(0.9, 0.95), eps=1e-3, compiled=True)
    return eager, compiled


def check_compiled_step_is_torchs_adamw(device: str) -> None:
    """test_the_compiled_step_is_torchs_adamw_on_the_copies_with_clipping_folded_in on ``device`` (its
    docstring says what is checked)."""
    from torch._dynamo.utils import counters

    eager, compiled = _optimizers(device)
    gen = torch.Generator().manual_seed(0)
    graphs = counters["stats"]["unique_graphs"]
    clipped = 0
    for step in range(5):
        lr = 1e-3 * (1 - step / 10)
        for opt in (eager, compiled):
            opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = lr
        state = gen.get_state()
        for opt in (eager, compiled):
            gen.set_state(state)
            for p in opt.model_params:
                p.grad = (torch.randn(p.shape, generator=gen) * 0.05).to(device=device, dtype=torch.bfloat16)
        eager.before_step(world_size=1, accumulating=False)
        norm = torch.nn.utils.clip_grad_norm_(eager.masters, max_norm=0.5)
        clipped += int(norm > 0.5)
        eager.step()
        compiled.before_step(world_size=1, accumulating=False)
        assert all(m.grad is None for m in compiled.masters)  # the step casts the bf16 gradients itself
        compiled.clip_in_step(0.5)
        compiled.step()
        assert all(p.grad is None for p in compiled.model_params)
        for opt in (eager, compiled):
            opt.zero_grad(set_to_none=True)
    assert clipped >= 3  # the factor mattered
    assert counters["stats"]["unique_graphs"] - graphs == 2
    for a, b in zip(eager.masters, compiled.masters):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), float((a - b).abs().max())
        sa, sb = eager.state[a], compiled.state[b]
        assert float(sb["step"]) == 5
        assert torch.allclose(sa["exp_avg"], sb["exp_avg"], rtol=1e-5, atol=1e-9)
        assert torch.allclose(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(compiled.model_params, compiled.masters))
    moved = sum(int((m != p.float()).sum()) for m, p in zip(compiled.masters, compiled.model_params))
    assert moved > 0  # the copies hold what bf16 cannot: the test compares more than the rounded weights
