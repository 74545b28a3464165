"""Effective (non-pad) tokens/s of a training step: padded batches against packed ones.

    python bench/packing.py [--steps 60] [--warmup 10] [--repeats 3] [--batch-size 32] [--pack-length 128]

The same Banking77 examples (FTEXP_DATA_DIR) and the same global batches go through ftexp's
FineTuneModule under Lightning three ways: padded as drawn (plain shuffled batches), padded after
length grouping (group_by_length, ftexp's default), and packed (the plain batches, each packed into
rows of --pack-length tokens with a block-diagonal mask). Packing keeps each step's examples, so its
loss equals the padded one (checked on the first batches). Goal: packed >= 2x padded. The ratios are
printed for the step alone and with each batch's collation added (with the default num_workers=0 it
runs in the training process; the packed mask is rows x L x L).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_step import run_ftexp, setup  # noqa: E402  (the same timing harness as the loop benchmark)

from ftexp.data.datamodule import LengthGroupedBatches, pad_batch  # noqa: E402
from ftexp.data.packing import pack_batch, real_tokens  # noqa: E402
from ftexp.training.module import completion_loss  # noqa: E402


def main() -> None:
    args, cfg, tokenizer, grouped, origin, base = setup(__doc__.splitlines()[0], steps=60, warmup=10, repeats=3,
                                                        extra=[("--pack-length", 128)])
    rows = grouped.rows  # the encoded examples behind the batches
    pad = tokenizer.pad_token_id
    plain_idx = list(LengthGroupedBatches([len(r["input_ids"]) for r in rows], args.batch_size, seed=0, window=0))
    plain_idx = plain_idx[:args.steps]
    def collated(collate):  # the batches, and the collation's time per batch (in the training process)
        start = time.perf_counter()
        batches = [collate([rows[i] for i in b]) for b in plain_idx]
        return batches, (time.perf_counter() - start) / len(batches)

    padded, pad_s = collated(lambda rs: pad_batch(rs, pad))
    packed, pack_s = collated(lambda rs: pack_batch(rs, pad, args.pack_length))
    ways = {"padded (plain batches)": padded, "padded (length-grouped)": list(grouped), "packed (plain batches)": packed}
    collate_s = {"padded (plain batches)": pad_s, "padded (length-grouped)": pad_s, "packed (plain batches)": pack_s}
    with torch.no_grad():  # packing changes the layout, not the loss
        for a, b in zip(ways["padded (plain batches)"][:5], ways["packed (plain batches)"][:5]):
            la, lb = float(completion_loss(base, a)), float(completion_loss(base, b))
            assert abs(la - lb) <= 1e-4 * abs(la), (la, lb)
    print(f"tiny model ({sum(p.numel() for p in base.parameters()) / 1e6:.2f} M parameters), {origin}, batch "
          f"{args.batch_size}, {args.steps} steps ({args.warmup} warm-up), pack length {args.pack_length}, "
          f"torch threads {torch.get_num_threads()}; packed loss = padded loss on the first 5 batches")
    times = {name: [] for name in ways}
    for r in range(args.repeats):
        order = list(ways) if r % 2 == 0 else list(ways)[::-1]
        for name in order:
            times[name].append(run_ftexp(copy.deepcopy(base), ways[name], cfg.optim, cfg.optim.lr, args.warmup))
    rates, with_collation = {}, {}
    for name, batches in ways.items():
        timed = batches[args.warmup:]
        real = sum(real_tokens(b) for b in timed) / len(timed)
        computed = sum(b["input_ids"].numel() for b in timed) / len(timed)
        t = statistics.median(times[name])
        rates[name], with_collation[name] = real / t, real / (t + collate_s[name])
        print(f"{name:25s}: {t * 1e3:7.1f} ms/step  {real / t:8.0f} effective tok/s  "
              f"({real / computed:5.1%} of computed tokens are real); collating {collate_s[name] * 1e3:.2f} ms/batch")
    for title, r in (("step", rates), ("step + collation (num_workers=0)", with_collation)):
        print(f"ratio effective tok/s, {title}: packed / padded plain "
              f"{r['packed (plain batches)'] / r['padded (plain batches)']:.2f}x; packed / length-grouped "
              f"{r['packed (plain batches)'] / r['padded (length-grouped)']:.2f}x   (goal >= 2x padded)")


if __name__ == "__main__":
    main()
