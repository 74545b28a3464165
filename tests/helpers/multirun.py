"""Multirun folders written with known numbers, as Hydra and ftexp leave them, for the compare and findings tests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

T_975_2 = 4.302652729911275  # t_{0.975, 2}, as tables give it

# E2's accuracies by training-set size, three seeds each (write_size_sweep).
ACC = {"500": [0.70, 0.72, 0.77], "null": [0.85, 0.86, 0.90]}


def results(overrides: List[str], seed: int, metrics: Dict[str, float], tags: List[str], sweep: str = "",
            status: str = "completed", error: Optional[Dict[str, str]] = None, **extra: Any) -> Dict[str, Any]:
    out = {"status": status, "seed": seed, "overrides": [*overrides, f"seed={seed}"],
           "choices": {"sweeps": sweep or None, "experiment": sweep or None},
           "config": {"seed": seed, "tags": tags}, "metrics": metrics,
           "model": {"parameters": {"total": 1000, "trainable": 1000}}, "wall_time_s": {"total": 12.0}, **extra}
    if error:
        out["error"] = error
    return out


def write_multirun(root: Path, jobs: List[Any], params: Dict[str, str]) -> Path:
    """``jobs``: results dicts, raw text (a broken results.json) or None (no results.json)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n" + "".join(f"      {k}: {v}\n" for k, v in params.items())
        + "  overrides:\n    task:\n    - logger=none\n    - seed=0,1,2\n", encoding="utf-8")
    for i, job in enumerate(jobs):
        folder = root / str(i)
        folder.mkdir()
        if isinstance(job, dict):
            (folder / "results.json").write_text(json.dumps(job), encoding="utf-8")
        elif isinstance(job, str):
            (folder / "results.json").write_text(job, encoding="utf-8")
    return root


def write_size_sweep(tmp_path: Path) -> Path:
    """E2: 2 sizes x 3 seeds, known accuracies; one more job failed, one results.json truncated."""
    jobs: List[Any] = []
    for n, accs in ACC.items():
        for seed, acc in enumerate(accs):
            jobs.append(results([f"data.n_train={n}", "logger=none"], seed,
                                {"test/accuracy": acc, "test/slice/long/accuracy": acc - 0.1,
                                 "test/macro_f1": acc - 0.05},
                                ["E2", "dataset_size"], "dataset_size",
                                data={"counts": {"train": {"total": 500 if n == "500" else 8976}}}))
    jobs.append(results(["data.n_train=500", "logger=none"], 3, {}, ["E2", "dataset_size"], "dataset_size",
                        status="failed", error={"type": "DataError", "message": "CUDA out of memory at step 7"}))
    jobs.append(json.dumps(jobs[0])[:120])  # a partial file: its cell is known from Hydra's .hydra/overrides.yaml
    root = write_multirun(tmp_path / "multirun" / "2026-11-26" / "10-00-00", jobs, {"data.n_train": "500,null"})
    (root / "7" / ".hydra").mkdir()
    (root / "7" / ".hydra" / "overrides.yaml").write_text("- data.n_train=null\n- logger=none\n- seed=2\n")
    return root


def ci(values: List[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return T_975_2 * std / math.sqrt(n)


# A 2-seed learning curve whose t intervals pass [0, 1] on both sides (n = 2: t = 12.7).
TWO_SEEDS = {"100": [0.10, 0.30], "400": [0.90, 0.99]}
ROW0_ACC, LABELS = 0.02, 77


def write_two_seed_sweep(tmp_path: Path, key: str = "data.n_train") -> Path:
    """2 sizes x 2 seeds, each job with row 0 (the untrained model) and its classes, as a real run records them."""
    jobs: List[Any] = []
    for n, accs in TWO_SEEDS.items():
        for seed, acc in enumerate(accs):
            rows = [{"index": 0, "stage": "base", "metrics": {"banking77": {"test/accuracy": ROW0_ACC}}},
                    {"index": 1, "stage": "train", "metrics": {"banking77": {"test/accuracy": acc}}}]
            jobs.append(results([f"{key}={n}"], seed, {"test/accuracy": acc}, ["E2"], "dataset_size", rows=rows,
                                data={"name": "banking77", "labels": LABELS, "counts": {"train": {"total": int(n)}}}))
    return write_multirun(tmp_path / "two_seeds", jobs, {key: ",".join(TWO_SEEDS)})
