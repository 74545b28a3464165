"""Where a training step's time goes: one side of gpu_throughput.py profiled, its kernels summed by kind.

    python bench/gpu_profile.py [--case full1b] [--side ftexp+m] [--steps 3] [--warmup 3]
    python bench/gpu_profile.py --tiny      # CPU-sized shapes: operators instead of kernels, no GPU

The model, batches and training loops are gpu_throughput.py's (a compiled side, ``+c``, compiles in the
warm-up). After --warmup steps, --steps steps run under torch.profiler, and each GPU kernel's time goes
to one kind: matmul, attention, loss (softmax, cross-entropy), optimizer, compiled (inductor's fused
kernels), element-wise, reduction, copy, other. Printed: each kind's ms per step and share of the
wall-clock step, the GPU's busy time against that step (the rest is the GPU waiting on the CPU or on
itself), and the costliest kernels. What the MFU goals of bench/gpu_throughput.py need next is what
takes the time that matmuls do not.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_throughput import CASES, batches, build, sides  # noqa: E402

# First match wins: attention kernels before matmuls (flash's name "cutlass"), the optimizer's multi-tensor
# kernels and the loss's softmax before inductor's kernels, which name the ops they fuse; casts are copies.
KINDS: List[Tuple[str, str]] = [
    ("attention", r"flash|fmha|attention|sdpa|cudnn"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("loss", r"softmax|nll_loss|cross_entropy|logsumexp"),
    ("matmul", r"gemm|xmma|cutlass|nvjet|cublas|aten::(mm|addmm|bmm|matmul)$"),
    ("compiled", r"^triton_|compiledfunction"),
    ("copy", r"memcpy|memset|copy|aten::(to|_to_copy|contiguous|clone|fill_|zero_)$"),  # casts included
    ("element-wise", r"elementwise|aten::(mul|add|sub|div|silu|pow|rsqrt|neg|cat|where|exp|sigmoid)_?$"),
    ("reduction", r"reduce|aten::(mean|sum|norm)$"),
]


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, pattern in KINDS if re.search(pattern, low)), "other")


def self_time_us(event, on_gpu: bool) -> float:
    if on_gpu:
        return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)
    return event.self_cpu_time_total


def profile(case: str, side: str, steps: int, warmup: int, tiny: bool):
    """Step times (s) of the profiled steps, and each kernel's (CPU: operator's) self time per step (us)."""
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    on_gpu = device.type == "cuda"
    _, loop, compile, options = {s[0]: s for s in sides(compile=True)}[side]
    spec = CASES[case]
    batch, seq = (2, 64) if tiny else (spec["batch"], spec["seq"])
    model = build(spec, tiny, device)
    data = batches(model.config.vocab_size, warmup + steps + 1, batch, seq, device)
    activities = [torch.profiler.ProfilerActivity.CUDA] if on_gpu else [torch.profiler.ProfilerActivity.CPU]
    # steps 0..warmup-1 run unprofiled (compiling, allocator warm-up), one more warms the profiler up
    schedule = torch.profiler.schedule(wait=warmup, warmup=1, active=steps, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule) as prof:
        times = loop(model, data, spec["precision"], device, warmup + 1, compile, step_hook=prof.step, **options)
    per_kernel: Dict[str, float] = {}
    for event in prof.key_averages():
        us = self_time_us(event, on_gpu)
        if us > 0 and (on_gpu or not event.key.startswith(("ProfilerStep", "[pl]", "Optimizer."))):
            per_kernel[event.key] = per_kernel.get(event.key, 0.0) + us / steps
    return times[:steps], per_kernel, ("GPU kernels: " + torch.cuda.get_device_name()) if on_gpu else "CPU operators"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="full1b", choices=list(CASES))
    ap.add_argument("--side", default="ftexp+m", choices=[s[0] for s in sides(compile=True)])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--tiny", action="store_true", help="CPU-sized shapes, to check the script without a GPU")
    args = ap.parse_args()
    times, per_kernel, what = profile(args.case, args.side, args.steps, args.warmup, args.tiny)
    step_ms = statistics.median(times) * 1e3
    busy_ms = sum(per_kernel.values()) / 1e3
    by_kind: Dict[str, float] = {}
    for name, us in per_kernel.items():
        by_kind[kind(name)] = by_kind.get(kind(name), 0.0) + us / 1e3
    print(f"{args.case} {args.side}: {what}; step {step_ms:.1f} ms (median of {len(times)} profiled), "
          f"busy {busy_ms:.1f} ms ({busy_ms / step_ms:.0%} of the step)")
    print(f"{'kind':14s} {'ms/step':>9s} {'share':>7s}")
    for name, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{name:14s} {ms:9.2f} {ms / step_ms:7.1%}")
    print(f"{'(not busy)':14s} {max(0.0, step_ms - busy_ms):9.2f} {max(0.0, 1 - busy_ms / step_ms):7.1%}")
    print(f"costliest {args.top}:")
    for name, us in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {us / 1e3:8.2f} ms  {kind(name):12s} {name[:110]}")


if __name__ == "__main__":
    main()
