"""trainer.compile's two scopes: time to the first step (compiling) and time per step after it.

    python bench/compile_time.py [--layers 24] [--steps 8] [--batch-size 8] [--seq 128]

A Llama-shaped model (hidden 256, random weights, --layers deep) trains on fixed random batches through
ftexp's FineTuneModule under Lightning: eager, compile_scope=layers (each decoder layer) and
compile_scope=step (the whole training forward). Each runs in a fresh process with an empty inductor
cache, as a first run does, so no side reuses another's compiled code. On a GPU (when CUDA is available)
in bf16-mixed, else on the CPU in fp32. Printed per side: seconds to the end of the first step, median
seconds per step after the second, and each compiled side against eager and layers against step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIDES = ("eager", "layers", "step")


def one_side(side: str, layers: int, steps: int, batch_size: int, seq: int) -> dict:
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftexp.config.preflight import compose_config
    from ftexp.training.module import FineTuneModule

    gpu = torch.cuda.is_available()

    def now() -> float:
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.start, self.ends = None, []

        def on_train_start(self, trainer, pl_module):
            self.start = now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(now())

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688,
                                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                         attn_implementation="sdpa"))
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": (ids := torch.randint(0, 2048, (batch_size, seq), generator=gen)),
                "attention_mask": torch.ones_like(ids), "labels": ids} for _ in range(steps)]
    clock = Clock()
    trainer = pl.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, max_epochs=1,
                         precision="bf16-mixed" if gpu else "32-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[clock])
    module = FineTuneModule(model, compose_config([]).optim, lr=1e-4, compile=side != "eager",
                            compile_scope=side if side != "eager" else "layers")
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    per_step = [b - a for a, b in zip(clock.ends[1:], clock.ends[2:])]
    return {"first": clock.ends[0] - clock.start, "step": statistics.median(per_step),
            "device": torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one side, in a child process
    args = ap.parse_args()
    if args.side:
        print(json.dumps(one_side(args.side, args.layers, args.steps, args.batch_size, args.seq)))
        return
    shape = ["--layers", str(args.layers), "--steps", str(max(args.steps, 3)), "--batch-size",
             str(args.batch_size), "--seq", str(args.seq)]
    out = {}
    for side in SIDES:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            done = subprocess.run([sys.executable, __file__, "--side", side, *shape], capture_output=True,
                                  text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"{side} side failed:\n{done.stderr[-3000:]}")
        out[side] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"Llama shape, hidden 256, {args.layers} layers, batch {args.batch_size}x{args.seq}, "
          f"{out['eager']['device']}, cold inductor cache per side")
    print(f"{'side':8} {'first step s':>12} {'s/step':>8} {'vs eager':>9}")
    for side in SIDES:
        r = out[side]
        print(f"{side:8} {r['first']:12.1f} {r['step']:8.3f} {r['step'] / out['eager']['step']:9.3f}")
    print(f"layers/step: first step {out['layers']['first'] / out['step']['first']:.3f}, "
          f"time per step {out['layers']['step'] / out['step']['step']:.3f}")


if __name__ == "__main__":
    main()
