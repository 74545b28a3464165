"""What the human ratings say, and how far the automated metrics agree with them.

Over the rated *sample* rows (red-team rows are summarised apart, by their human means only):

- ``human``: correctness rate (mean of 0/1), mean helpfulness, mean tone;
- ``agreement`` (rows with an automated verdict): Cohen's kappa between human correctness and
  ``auto_correct`` (torchmetrics), the raw agreement rate, and the rate of outputs the automated
  verdict passes but people fail, ``#(auto pass and human 0) / #(auto pass)`` (and the converse);
- ``spearman``: per automated score (``auto_rougeL`` -> ``rougeL`` ...), Spearman's rank correlation
  (torchmetrics; ties get average ranks) with human correctness and with helpfulness.

A statistic that is undefined (no rows, a constant input on either side) is None, never NaN.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torchmetrics.functional import spearman_corrcoef
from torchmetrics.functional.classification import binary_cohen_kappa

from ftexp.review.schema import RATINGS

Pair = Tuple[Dict[str, Any], Dict[str, Any]]  # (exported row, its ratings)


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _rate(num: int, den: int) -> Optional[float]:
    return num / den if den else None


def _defined(x: torch.Tensor) -> Optional[float]:
    v = float(x)
    return v if math.isfinite(v) else None


def cohen_kappa(human: Sequence[int], auto: Sequence[int]) -> Optional[float]:
    """None when either side is constant: the formula then gives 0 or 0/0, which says nothing about
    agreement beyond chance."""
    if len(human) < 2 or len(set(human)) < 2 or len(set(auto)) < 2:
        return None
    return _defined(binary_cohen_kappa(torch.tensor(human), torch.tensor(auto)))


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman's rho with average ranks for ties; None for fewer than 2 pairs or a constant side
    (torchmetrics would return 0 there)."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return _defined(spearman_corrcoef(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))


def human_means(pairs: Sequence[Pair]) -> Dict[str, Any]:
    return {"n_rated": len(pairs), **{c: _mean([r[c] for _, r in pairs]) for c in RATINGS}}


def agreement(pairs: Sequence[Pair]) -> Dict[str, Any]:
    both = [(int(r["correctness"]), int(bool(row["auto_correct"]))) for row, r in pairs
            if row.get("auto_correct") is not None]
    human = [h for h, _ in both]
    auto = [a for _, a in both]
    n_pass = sum(auto)
    n_fail = len(auto) - n_pass
    pass_fail = sum(1 for h, a in both if a == 1 and h == 0)
    fail_pass = sum(1 for h, a in both if a == 0 and h == 1)
    return {
        "n": len(both),
        "cohen_kappa": cohen_kappa(human, auto),
        "agreement_rate": _rate(sum(1 for h, a in both if h == a), len(both)),
        "n_auto_pass": n_pass,
        "n_auto_pass_human_fail": pass_fail,
        "auto_pass_human_fail_rate": _rate(pass_fail, n_pass),
        "n_auto_fail": n_fail,
        "n_auto_fail_human_pass": fail_pass,
        "auto_fail_human_pass_rate": _rate(fail_pass, n_fail),
    }


def correlations(pairs: Sequence[Pair]) -> Dict[str, Any]:
    names = sorted({k for row, _ in pairs for k, v in row.items()
                    if k.startswith("auto_") and k != "auto_correct" and v is not None})
    out = {}
    for key in names:
        have = [(row[key], r) for row, r in pairs if row.get(key) is not None]
        scores = [float(s) for s, _ in have]
        out[key[len("auto_"):]] = {"n": len(have), **{c: spearman([r[c] for _, r in have], scores)
                                                      for c in ("correctness", "helpfulness")}}
    return out


def sample_stats(pairs: Sequence[Pair]) -> Dict[str, Any]:
    return {**human_means(pairs), "agreement": agreement(pairs), "spearman": correlations(pairs)}


def summarise(exported_rows: Sequence[Dict[str, Any]], ratings: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The statistics of the rated rows: ``sample`` and ``red_team`` over every task, and per task."""
    rated: List[Pair] = [(row, ratings[row["id"]]) for row in exported_rows if row["id"] in ratings]

    def split(pairs: Sequence[Pair], rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        red = [r for r in rows if r["kind"] == "red_team"]
        return {"sample": {"n_exported": len(rows) - len(red),
                           **sample_stats([p for p in pairs if p[0]["kind"] != "red_team"])},
                "red_team": {"n_exported": len(red), **human_means([p for p in pairs if p[0]["kind"] == "red_team"])}}

    tasks = sorted({row["task"] for row in exported_rows})
    return {**split(rated, exported_rows),
            "by_task": {t: split([p for p in rated if p[0]["task"] == t], [r for r in exported_rows if r["task"] == t])
                        for t in tasks}}
