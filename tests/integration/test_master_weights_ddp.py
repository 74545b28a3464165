"""trainer.master_weights under DDP, two gloo ranks on CPU processes (slow): the ranks' gradients are averaged
in fp32, every micro-batch's and every copy's, and the compiled step trains as the eager one."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from ftexp.config.preflight import compose_config
from ftexp.data.datamodule import Batching, FineTuneDataModule
from ftexp.training.master_weights import MasterWeightAdamW
from ftexp.training.module import FineTuneModule, StepOptions
from tests.helpers.master_weights import first_step
from tests.helpers.models import tiny_lm, varied_rows


@pytest.mark.slow
def test_under_ddp_every_micro_batch_is_averaged_over_the_ranks(tmp_path):
    """Two gloo ranks, two micro-batches each: the micro-batch that skipped DDP's all-reduce is averaged
    too, so both ranks step with the same gradients, those of one process on the same global batches
    (up to bf16 rounding: each rank's matmuls see half the rows)."""
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    [one] = first_step(tmp_path / "one", accumulate=2, batch_size=8)
    rank0, rank1 = first_step(tmp_path / "two", accumulate=2, devices=2, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(rank0["grads"], rank1["grads"]))
    for a, b in zip(one["grads"], rank0["grads"]):
        assert torch.allclose(a, b, rtol=0.05, atol=0.02 * float(a.abs().max())), float((a - b).abs().max())


@pytest.mark.slow
def test_under_ddp_the_ranks_gradients_are_averaged_in_fp32(tmp_path):
    """Two gloo ranks, one batch each: the copies step with exactly the fp32 mean of the two ranks' bf16
    gradients, as bf16-mixed's fp32 all-reduce gives, not with DDP's own bf16 sum (which the test tells
    apart)."""
    from ftexp.training.module import completion_loss

    ranks = first_step(tmp_path, accumulate=1, devices=2, batch_size=8)
    batches = [saved["batches"][0] for saved in ranks]
    tokens = [(b["labels"][:, 1:] != -100).sum() for b in batches]
    total = tokens[0] + tokens[1]
    local = []
    for batch, n in zip(batches, tokens):  # each rank's own gradients, with global_token_weight's scaling
        model = tiny_lm().to(torch.bfloat16)
        (completion_loss(model, batch) * (n * 2 / total)).backward()
        local.append([p.grad for p in model.parameters()])
    in_fp32 = [(a.float() + b.float()) / 2 for a, b in zip(*local)]
    in_bf16 = [(a / 2 + b / 2).float() for a, b in zip(*local)]  # DDP's default: divide, then add in bf16
    for saved in ranks:
        assert all(torch.equal(a, b) for a, b in zip(saved["grads"], in_fp32))
    assert not all(torch.equal(a, b) for a, b in zip(in_bf16, in_fp32))


def _average_on_rank(rank: int, port: int, out) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16)) for _ in range(3)]
    optimizer = MasterWeightAdamW([{"params": params}], lr=1e-3)
    a, b, _ = optimizer.masters
    a.grad = torch.full((3,), 1.0 + rank)  # both ranks: averaged
    if rank == 0:
        b.grad = torch.full((3,), 4.0)  # only rank 0 (e.g. an expert rank 1 never routed to): half of it
    optimizer.average_grads_over_ranks(2)
    out[rank] = [None if m.grad is None else m.grad.tolist() for m in optimizer.masters]
    dist.destroy_process_group()


@pytest.mark.slow
def test_averaging_over_ranks_takes_every_copy_even_where_a_rank_has_no_gradient():
    """Ranks that disagree on which copies have gradients still reduce one layout (else sizes mismatch
    or values land on the wrong copies); a copy no rank has a gradient for keeps none."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_average_on_rank, args=(port, out), nprocs=2)
    assert out[0] == out[1] == [[1.5] * 3, [2.0] * 3, None]


class SaveCopies(pl.Callback):
    """Each rank's fp32 copies at the end of training, in the model's order."""

    def __init__(self, folder):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        master = {id(p): m for p, m in zip(optimizer.model_params, optimizer.masters)}
        copies = [master[id(p)].detach().clone() for p in pl_module.model.parameters()]
        torch.save(copies, self.folder / f"{trainer.global_rank}.pt")


def _ddp_copies(folder, implementation: str, accumulate: int):
    """Two gloo ranks, three optimizer steps with clipping: each rank's copies at the end."""
    folder.mkdir()
    pl.seed_everything(0, verbose=False)
    rows = varied_rows(24 * accumulate, seed=3)
    dm = FineTuneDataModule(rows, rows[:4], Batching(pad_id=0, batch_size=8, seed=0, group_by_length=False))
    optim = compose_config(["optim.warmup_ratio=0", f"optim.implementation={implementation}"]).optim
    module = FineTuneModule(tiny_lm().to(torch.bfloat16), optim, lr=1e-3, step=StepOptions(master_weights=True))
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp_spawn", precision="bf16-true",
                         use_distributed_sampler=False,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accumulate_grad_batches=accumulate,
                         gradient_clip_val=0.05, callbacks=[SaveCopies(folder)])
    trainer.fit(module, datamodule=dm)
    return [torch.load(folder / f"{rank}.pt") for rank in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_under_ddp_the_compiled_step_trains_as_the_eager_one(tmp_path, accumulate):
    """The compiled step takes DDP's fp32 average of the last micro-batch (the communication hook's) and
    the fp32 sum of the earlier ones averaged over the ranks: both ranks end with the eager step's copies."""
    eager = _ddp_copies(tmp_path / "eager", "for_loop", accumulate)
    compiled = _ddp_copies(tmp_path / "compiled", "compiled", accumulate)
    assert all(torch.equal(a, b) for a, b in zip(*compiled))  # the ranks agree
    for a, b in zip(eager[0], compiled[0]):
        assert torch.allclose(a, b, rtol=1e-5, atol=5e-7), float((a - b).abs().max())
