"""trainer.compile's two scopes: time to the first step (compiling) and time per step after it.

    python bench/compile_time.py [--layers 24] [--steps 8] [--batch-size 8] [--seq 128]

A Llama-shaped model (hidden 256, random weights, --layers deep) trains on fixed random batches through
ftexp's FineTuneModule under Lightning (gpu_throughput.py's ftexp loop): eager, compile_scope=layers (each decoder layer) and
compile_scope=step (the whole training forward). Each runs in a fresh process with an empty inductor
cache, as a first run does, so no side reuses another's compiled code. On a GPU (when CUDA is available)
in bf16-mixed, else on the CPU in fp32. Printed per side: the first step's seconds (the compiling), the
median seconds per step after the second, and each compiled side against eager and layers against step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SIDES = ("eager", "layers", "step")


def one_side(side: str, layers: int, steps: int, batch_size: int, seq: int) -> dict:
    """One side in this process, through gpu_throughput's ftexp loop (the same Trainer settings and
    CUDA-synchronised clock): the first step's time and the median of the steps after the second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_throughput import batches, ftexp_loop  # noqa: E402

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688,
                                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                         attn_implementation="sdpa")).to(device)
    times = ftexp_loop(model, batches(2048, steps, batch_size, seq, device), "bf16-mixed", device, warmup=0,
                       compile=side != "eager", compile_scope=side if side != "eager" else "layers")
    return {"first": times[0], "step": statistics.median(times[2:]),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"}


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
