"""ftexp's training step against a plain PyTorch loop: same model, same batches, same process.

    python bench/train_step.py [--steps 120] [--warmup 20] [--repeats 3] [--batch-size 32]

Both sides start from the same weights and run the same pre-collated batches (Banking77 from
FTEXP_DATA_DIR when it is set, else random tokens of Banking77-like lengths) with AdamW, warm-up +
cosine and gradient clipping. The plain loop is the baseline; ftexp runs the real FineTuneModule
under a Lightning Trainer with its throughput callback. Both sides use the fused AdamW (ftexp's
optim.implementation=auto; torch's own default on a CPU is a for-loop over tensors, 4.5x slower for this
model, 6.5 % of the step), so the ratio is what the framework costs. Time per step excludes the first
``--warmup`` steps; runs alternate (first side swapped each repeat) and the median of ``--repeats`` is reported. Goal: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ftexp.config.preflight import compose_config
from ftexp.data.base import encode_split
from ftexp.data.datamodule import LengthGroupedBatches, pad_batch
from ftexp.training.module import FineTuneModule, StepOptions, warmup_cosine
from ftexp.training.throughput import Throughput
from ftexp.utils.build import build


class Batches(list):
    """Pre-collated batches; ``rows`` holds the encoded examples they were made from."""

    rows: list = []


def make_batches(cfg, steps: int, batch_size: int, cache_dir: Path):
    data_dir = os.environ.get("FTEXP_DATA_DIR")
    source = build(cfg.model)
    if data_dir and Path(data_dir, "banking77").is_dir():
        task = build(cfg.data, data_dir=data_dir, seed=0)
        tokenizer = source.load_tokenizer(lambda: task.texts("train"), cache_dir)
        rows = encode_split(tokenizer, task.splits["train"], cfg.model.max_length, task.completion_prefix,
                            cfg.model.train_on_prompt, task.chat_template)  # (the tiny model's BPE has no template)
        origin = "Banking77"
    else:
        from ftexp.models.tokenizer import bpe_tokenizer

        tokenizer = bpe_tokenizer([f"query number {i} about a card" for i in range(500)], 512, cache_dir)
        gen = torch.Generator().manual_seed(0)
        rows = []
        for _ in range(steps * batch_size):
            n = int(torch.randint(8, 40, (1,), generator=gen))
            ids = torch.randint(4, len(tokenizer), (n,), generator=gen).tolist()
            rows.append({"input_ids": ids, "labels": ids})
        origin = "random tokens"
    sampler = LengthGroupedBatches([len(r["input_ids"]) for r in rows], batch_size, seed=0)
    batches = Batches()
    while len(batches) < steps:
        batches.extend(pad_batch([rows[i] for i in idx], tokenizer.pad_token_id) for idx in sampler)
    del batches[steps:]
    batches.rows = rows
    return source, tokenizer, batches, origin


class StepClock(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    @staticmethod
    def _sync() -> None:  # on a GPU the clock reads finished work only
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync()
        self.end = time.perf_counter()


def run_plain(model, batches, optim_cfg, lr: float, warmup: int) -> float:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(optim_cfg.betas), weight_decay=optim_cfg.weight_decay,
                            fused=True)
    total, warm = len(batches), int(round(optim_cfg.warmup_ratio * len(batches)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm, optim_cfg.min_lr_ratio))
    start = None
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        loss = model(**batch, use_cache=False).loss  # as ftexp's step: no KV cache
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / (len(batches) - warmup)


def run_ftexp(model, batches, optim_cfg, lr: float, warmup: int, mitigation=None, fused_loss: bool = False,
              accelerator: str = "cpu", precision: str = "32-true") -> float:
    clock = StepClock(warmup)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=1, precision=precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=1.0,
                         callbacks=[Throughput(), clock], log_every_n_steps=20, limit_val_batches=0)
    module = FineTuneModule(model, optim_cfg, lr=lr, mitigation=mitigation, step=StepOptions(fused_loss=fused_loss))
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    return (clock.end - clock.start) / (len(batches) - warmup)


def setup(description: str, steps: int, warmup: int, repeats: int, extra=(), overrides=(), batch_size: int = 32):
    """Command-line arguments, the config (the default, or with ``overrides``), the batches and the
    model's initial weights."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    for flag, default in extra:
        if isinstance(default, bool):
            ap.add_argument(flag, action="store_true")
        else:
            ap.add_argument(flag, type=type(default), default=default)
    args = ap.parse_args()
    pl.seed_everything(0, verbose=False)
    cfg = compose_config(list(overrides))
    cache = Path(os.environ.get("FTEXP_CACHE_DIR", ".cache/ftexp"))
    source, tokenizer, batches, origin = make_batches(cfg, args.steps, args.batch_size, cache)
    return args, cfg, tokenizer, batches, origin, source.load_model(tokenizer)


def alternating(model, batches, cfg, warmup: int, repeats: int):
    """Each side's time per step over ``repeats`` runs from copies of ``model``. Which side goes first
    alternates: whichever runs second in a pair tends to be a little slower."""
    plain, ours = [], []
    for r in range(repeats):
        sides = [(plain, run_plain), (ours, run_ftexp)]
        for times, fn in sides if r % 2 == 0 else sides[::-1]:
            times.append(fn(copy.deepcopy(model), batches, cfg.optim, cfg.optim.lr, warmup))
    return plain, ours


def print_sides(plain, ours, tokens: float, names=("plain loop", "ftexp"), seconds: bool = False) -> None:
    """Medians, tokens/s and the ratio. On a shared CPU run-to-run noise is several per cent; the best
    run of each side is the least disturbed estimate, the median the typical one."""
    scale, unit = (1.0, "s") if seconds else (1e3, "ms")
    width = max(len(n) for n in names)
    for name, times in zip(names, (plain, ours)):
        t = statistics.median(times)
        print(f"{name:{width}s}: {t * scale:8.2f} {unit}/step  {tokens / t:8.0f} tok/s   runs: "
              + ", ".join(f"{x * scale:.2f}" for x in times))
    print(f"ratio ftexp/plain (time per step): median {statistics.median(ours) / statistics.median(plain):.3f}, "
          f"best run {min(ours) / min(plain):.3f}   (goal <= 1.05)")


def main() -> None:
    args, cfg, tokenizer, batches, origin, base = setup(__doc__.splitlines()[0], steps=120, warmup=20, repeats=6)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[args.warmup:]) / (args.steps - args.warmup)
    print(f"tiny model ({sum(p.numel() for p in base.parameters()) / 1e6:.2f} M parameters), {origin}, "
          f"batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), torch threads {torch.get_num_threads()}")
    print_sides(*alternating(base, batches, cfg, args.warmup, args.repeats), tokens)


if __name__ == "__main__":
    main()
