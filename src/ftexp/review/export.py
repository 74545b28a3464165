"""``evaluator=human_review``: after the last row, export model outputs for people to rate.

Per task, a seeded sample of ``n`` outputs stratified by the automated verdict (correct /
incorrect / no verdict; proportional allocation by largest remainders, at least one per non-empty
stratum when ``n`` allows), plus every red-team output, which is never sampled away and is counted
apart. The rows go to ``<run dir>/<folder>/`` as CSV and JSONL with empty rating columns, and as a
Label Studio import (tasks + labelling config); ``python -m ftexp.review import`` reads them back.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ftexp.eval.base import EvalContext, Evaluator, Output
from ftexp.review import files
from ftexp.review.schema import finite

log = logging.getLogger(__name__)

STRATA = (("auto_correct", True), ("auto_incorrect", False), ("no_verdict", None))


def allocate(sizes: Sequence[int], n: int) -> List[int]:
    """How many of each stratum to draw: ``n`` split in proportion to ``sizes`` by largest
    remainders (ties to the earlier stratum), then one moved to every non-empty stratum left at
    zero from the stratum most over its quota, when ``n`` is at least the number of non-empty strata.
    All of a stratum when ``n`` covers everything."""
    total = sum(sizes)
    if n >= total:
        return list(sizes)
    quota = [n * s / total for s in sizes]
    alloc = [math.floor(q) for q in quota]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(quota[i] - alloc[i]), i))
    for i in by_remainder[: n - sum(alloc)]:
        alloc[i] += 1
    nonempty = [i for i, s in enumerate(sizes) if s > 0]
    if n >= len(nonempty):
        for i in nonempty:
            if alloc[i] == 0:
                donor = max((j for j in nonempty if alloc[j] > 1), key=lambda j: (alloc[j] - quota[j], -j))
                alloc[donor] -= 1
                alloc[i] += 1
    return alloc


def _natural(key: str) -> List[Any]:
    """Sort key putting ``task/test/9`` before ``task/test/10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def select(outputs: Sequence[Output], n: int, seed: int, task: str) -> Dict[str, Any]:
    """The sampled and red-team outputs of one task, and the counts per stratum. The draw depends
    only on the seed, the task name and the outputs' ids, not on the order they arrive in."""
    outputs = sorted(outputs, key=lambda o: _natural(o.id))
    red = [o for o in outputs if o.red_team]
    pool = [[o for o in outputs if not o.red_team and o.auto_correct is verdict] for _, verdict in STRATA]
    alloc = allocate([len(p) for p in pool], n)
    rng = random.Random(f"ftexp.review:{seed}:{task}")  # str seeds hash with SHA-512: stable across processes
    sample: List[Output] = []
    for members, k in zip(pool, alloc):
        sample.extend(rng.sample(members, k))
    rng.shuffle(sample)  # reviewers see the strata mixed, not grouped by the automated verdict
    strata = {name: {"available": len(p), "sampled": k} for (name, _), p, k in zip(STRATA, pool, alloc)}
    return {"sample": sample, "red_team": red, "strata": strata}


def to_row(o: Output, kind: str) -> Dict[str, Any]:
    row: Dict[str, Any] = {"id": o.id, "task": o.task, "kind": kind, "prompt": o.prompt, "reference": o.reference,
                           "output": o.output, "correctness": None, "helpfulness": None, "tone": None, "notes": None,
                           "slices": list(o.slices)}
    row.update({f"auto_{name}": finite(value) for name, value in sorted(o.scores.items())})
    row["auto_correct"] = o.auto_correct
    return row


def unique_ids(outputs: List[Output]) -> int:
    """Make ids unique in place (``id#2`` ...), e.g. two evaluators that answered the same task;
    returns how many were renamed."""
    seen: Dict[str, int] = {}
    renamed = 0
    for o in outputs:
        seen[o.id] = seen.get(o.id, 0) + 1
        if seen[o.id] > 1:
            o.id = f"{o.id}#{seen[o.id]}"
            renamed += 1
    return renamed


class HumanReview(Evaluator):
    """Scores nothing itself; exports the last row's outputs in :meth:`finish`."""

    def applies_to(self, task: Any) -> bool:
        return False

    def evaluate(self, model: Any, task: Any, ctx: EvalContext) -> Dict[str, float]:
        return {}

    def finish(self, ctx: EvalContext, run_dir: Path, tracker: Any = None) -> Optional[Dict[str, Any]]:
        cfg = self.cfg
        wanted = list(cfg.tasks) if cfg.tasks is not None else sorted(ctx.outputs)
        missing = [t for t in wanted if not ctx.outputs.get(t)]
        if missing:
            log.warning("human_review: no outputs for task(s) %s: only evaluators that answer or predict "
                        "(generation, classification, multiple choice) leave outputs to review", missing)
        rows: List[Dict[str, Any]] = []
        by_task: Dict[str, Any] = {}
        renamed = 0
        for task in wanted:
            outputs = [dataclasses.replace(o) for o in ctx.outputs.get(task, [])]  # copies: ids may be renamed
            if not outputs:
                continue
            renamed += unique_ids(outputs)
            chosen = select(outputs, cfg.n, cfg.seed, task)
            rows += [to_row(o, "sample") for o in chosen["sample"]]
            rows += [to_row(o, "red_team") for o in chosen["red_team"]]
            by_task[task] = {"n_outputs": len(outputs), "n_sampled": len(chosen["sample"]),
                             "n_red_team": len(chosen["red_team"]), "strata": chosen["strata"]}
        folder = Path(run_dir) / cfg.folder
        info: Dict[str, Any] = {
            "folder": cfg.folder, "n_sampled": sum(t["n_sampled"] for t in by_task.values()),
            "n_red_team": sum(t["n_red_team"] for t in by_task.values()), "files": [],
            "by_task": by_task, "n": cfg.n, "seed": cfg.seed,
        }
        if missing:
            info["tasks_without_outputs"] = missing
        if renamed:
            info["renamed_duplicate_ids"] = renamed
            log.warning("human_review: %d output id(s) occurred twice in a task and were suffixed '#2', ...", renamed)
        if not rows:
            log.warning("human_review: no outputs to export; nothing written to %s", folder)
            return info
        written = files.write_export(folder, rows)
        info["files"] = [p.name for p in written]
        log.info("human_review: %d sampled + %d red-team outputs for review in %s",
                 info["n_sampled"], info["n_red_team"], folder)
        files.log_table(tracker, rows)
        return info

