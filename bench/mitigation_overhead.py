"""Step time of each forgetting mitigation against ``mitigation=none``: same model, same batches.

    python bench/mitigation_overhead.py [--steps 80] [--warmup 15] [--repeats 3] [--override KEY=VALUE ...]

``--override`` (repeatable) is a config override, e.g. ``--override model=smollm2_135m_instruct``: the
model, the data and the optimiser come from the composed config (default: the tiny model). Each
mitigation's config is composed with them too, so they name no ``mitigation.*`` key.

Each mitigation is put in its stage-2 state first (EWC: a Fisher consolidated on 256 examples;
LwF: a teacher snapshot; replay: a buffer mixed into the step at 10 %, replacing new rows), then
the real FineTuneModule trains under a Lightning Trainer. Runs rotate the order every repeat; the
median time per step is compared with ``none`` measured in the same process.
Goals (issue 4): EWC <= 1.05x, LwF <= 1.5x.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import run_ftexp, setup  # noqa: E402  (the set-up and timed loop of the step bench)

from ftexp.config.preflight import compose_config  # noqa: E402
from ftexp.data.datamodule import pad_batch  # noqa: E402
from ftexp.mitigation.base import StageContext  # noqa: E402
from ftexp.utils.build import build, typed  # noqa: E402

MITIGATIONS = ("none", "ewc", "lwf", "replay")


def rows_of(batches, n):
    """Unpadded rows back out of padded batches (for Fisher and replay buffers)."""
    rows = []
    for b in batches:
        for ids, labels, mask in zip(b["input_ids"], b["labels"], b["attention_mask"]):
            n_tok = int(mask.sum())
            rows.append({"input_ids": ids[:n_tok].tolist(), "labels": labels[:n_tok].tolist()})
            if len(rows) == n:
                return rows
    return rows


def overrides_from_command_line():
    """The ``--override`` values: the config is composed from them before train_step's parser reads the
    command line (which accepts the flag too, for --help)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--override", action="append", default=[])
    return ap.parse_known_args()[0].override


def prepared(name, model, batches, tokenizer, overrides=()):
    """The mitigation in the state it has during a later stage, and the step's batches."""
    cfg = compose_config([*overrides, f"mitigation={name}"])
    mitigation = build(cfg.mitigation)
    rows = rows_of(batches, 256)
    task = SimpleNamespace(name="bench", splits={"train": list(range(len(rows)))})
    ctx = StageContext(index=1, name="bench", model=model, datamodule=None, task=task, tokenizer=tokenizer,
                       encode=lambda idx: [rows[i] for i in idx], seed=0)
    if name == "ewc":
        mitigation.after_stage(ctx)
    elif name == "lwf":
        mitigation.before_stage(ctx)
    elif name == "replay":
        # 10 % of each step replaced by buffered rows: the batches keep their size and length mix
        replay = rows[:128]
        mixed = []
        for i, b in enumerate(batches):
            n = b["input_ids"].shape[0]
            k = round(0.1 * n)
            own = rows_of([b], n - k)
            batch = pad_batch(own + [replay[(i * k + j) % len(replay)] for j in range(k)], tokenizer.pad_token_id)
            batch["is_replay"] = torch.tensor([False] * len(own) + [True] * k)
            mixed.append(batch)
        batches = mixed
    return mitigation, batches


def main() -> None:
    overrides = overrides_from_command_line()
    args, cfg, tokenizer, batches, origin, base = setup(__doc__.splitlines()[0], steps=80, warmup=15, repeats=3,
                                                        extra=[("--override", "")], overrides=overrides)
    base = build(cfg.peft).apply(base, typed(cfg.model))  # its way of training: LoRA for hub models, or finetune=full
    print(f"model {cfg.model.name}, {origin}, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), "
          f"torch threads {torch.get_num_threads()}" + (f", overrides {' '.join(overrides)}" if overrides else ""))
    times = {name: [] for name in MITIGATIONS}
    for r in range(args.repeats):
        order = MITIGATIONS[r % len(MITIGATIONS):] + MITIGATIONS[:r % len(MITIGATIONS)]
        for name in order:
            model = copy.deepcopy(base)
            mitigation, step_batches = prepared(name, model, batches, tokenizer, overrides)
            times[name].append(run_ftexp(model, step_batches, cfg.optim, cfg.optim.lr, args.warmup, mitigation))
    none = statistics.median(times["none"])
    goals = {"ewc": 1.05, "lwf": 1.5}
    for name in MITIGATIONS:
        t = statistics.median(times[name])
        goal = f"   (goal <= {goals[name]})" if name in goals else ""
        print(f"{name:7s} {t * 1e3:7.1f} ms/step   x{t / none:5.3f} of none   runs: "
              + ", ".join(f"{x * 1e3:.1f}" for x in times[name]) + goal)


if __name__ == "__main__":
    main()
