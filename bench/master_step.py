"""The master-weight step after the backward: eager (optim.implementation=auto) against compiled.

    python bench/master_step.py [--layers 16] [--scale 1.0] [--steps 12] [--warmup 3]

The trained weights of a Llama-3.2-1B-shaped model (hidden 2048, MLP 8192, 128k vocabulary, --layers
decoder layers; --scale shrinks every dimension, e.g. 0.25 on a CPU) in bf16 with their bf16 gradients,
as a backward leaves them, and ``MasterWeightAdamW`` over fp32 copies: the eager step (gradients cast onto
the copies, clipped by ``clip_grad_norm_``, AdamW fused on a GPU and torch's default on a CPU, the weights
written back) against ``compiled=True`` (clipping's norm, then one compiled pass that casts, scales,
updates and writes back). Same weights, gradients and clipping; both sides in this process, the compiled
one's compilation in its warm-up. Printed: ms per step (median after the warm-up) and per weight, the
compiled side's first step (its compilation),
the ratio compiled / eager, and the largest difference between the two sides' copies after the last step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
from ftexp.training.master_weights import MasterWeightAdamW  # noqa: E402
from ftexp.training.module import adamw_kernels  # noqa: E402


def llama_1b_weights(layers: int, scale: float, device: torch.device) -> list:
    h, f, v = (max(8, int(d * scale)) for d in (2048, 8192, 128256))
    kv = max(8, int(512 * scale))
    shapes = [(v, h)] + [(h, h), (kv, h), (kv, h), (h, h), (f, h), (f, h), (h, f), (h,), (h,)] * layers + [(h,)]
    gen = torch.Generator(device=device).manual_seed(0)
    return [torch.nn.Parameter((torch.randn(s, generator=gen, device=device) * 0.02).to(torch.bfloat16))
            for s in shapes]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(compiled: bool, weights: list, steps: int, warmup: int, device: torch.device) -> tuple:
    params = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    kernels = {"compiled": True} if compiled else adamw_kernels("auto", device.type, fp16_clipping=False)
    opt = MasterWeightAdamW(groups, lr=1e-5, betas=(0.9, 0.95), **kernels)
    gen = torch.Generator(device=device).manual_seed(1)
    grads = [(torch.randn(p.shape, generator=gen, device=device) * 1e-3).to(torch.bfloat16) for p in params]
    times, first = [], 0.0
    for i in range(steps):
        for p, g in zip(params, grads):
            p.grad = g.clone()  # as the backward leaves them (not timed)
        sync(device)
        t = time.perf_counter()
        opt.before_step(world_size=1, accumulating=False)
        if compiled:
            opt.clip_in_step(1.0)
        else:
            torch.nn.utils.clip_grad_norm_(opt.masters, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
        first = first or time.perf_counter() - t
    return statistics.median(times), first, [m.detach() for m in opt.masters]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--scale", type=float, default=None, help="default: 1 on a GPU, 0.25 on a CPU")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = args.scale or (1.0 if device.type == "cuda" else 0.25)
    weights = llama_1b_weights(args.layers, scale, device)
    n = sum(w.numel() for w in weights)
    eager, _, eager_copies = run(False, weights, args.steps, args.warmup, device)
    compiled, compiling, copies = run(True, weights, args.steps, args.warmup, device)
    diff = max(float((a - b).abs().max()) for a, b in zip(eager_copies, copies))
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{card}: {n / 1e6:.0f} M trained weights in {len(weights)} tensors (Llama-1B shapes x {scale})")
    print(f"eager    : {eager * 1e3:8.2f} ms/step   ({eager / n * 1e12:.1f} ps per weight)")
    print(f"compiled : {compiled * 1e3:8.2f} ms/step   ({compiled / n * 1e12:.1f} ps per weight; first step, "
          f"compiling: {compiling:.1f} s)")
    print(f"ratio compiled/eager: {compiled / eager:.3f}   largest difference in the copies: {diff:.2e}")


if __name__ == "__main__":
    main()
