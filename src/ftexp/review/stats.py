"""What the human ratings say, and how far the automated metrics agree with them.

Over the rated *sample* rows (red-team rows are summarised apart, by their human means only):

- ``human``: correctness rate (mean of 0/1), mean helpfulness, mean tone;
- ``agreement`` (rows with an automated verdict): Cohen's kappa between human correctness and
  ``auto_correct`` (torchmetrics), the raw agreement rate, and the rate of outputs the automated
  verdict passes but people fail, ``#(auto pass and human 0) / #(auto pass)`` (and the converse);
- ``spearman``: per automated score (``auto_rougeL`` -> ``rougeL`` ...), Spearman's rank correlation
  (torchmetrics; ties get average ranks) with human correctness and with helpfulness, each with its
  two-sided p-value against no correlation (``<name>_p``).

Kappa's 95 % interval (``cohen_kappa_ci95``) is a percentile bootstrap over the rated rows: kappa is
bounded ([−1, 1]) and its sampling distribution skewed near the bounds and for few rows, where a normal
(±1.96 SE) interval leaves the range; resampling rows keeps every bound inside it. Resamples in which
either side never varies (kappa undefined) are left out. Spearman's p-value uses the t approximation
t = ρ √((n − 2) / (1 − ρ²)) with n − 2 degrees of freedom, as scipy.stats.spearmanr does.

A statistic that is undefined (no rows, a constant input on either side) is None, never NaN, and the
result says why (``cohen_kappa_undefined``, ``spearman.<score>.undefined``).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.stats import t as student_t
from torchmetrics.functional import spearman_corrcoef
from torchmetrics.functional.classification import binary_cohen_kappa

from ftexp.review.schema import RATINGS

Pair = Tuple[Dict[str, Any], Dict[str, Any]]  # (exported row, its ratings)
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # a fixed stream: importing the same ratings twice gives the same interval


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
    if undefined_why(human, auto, ("human", "auto")) is not None:
        return None
    return _defined(binary_cohen_kappa(torch.tensor(human), torch.tensor(auto)))


def undefined_why(human: Sequence[Any], auto: Sequence[Any], names: Tuple[str, str]) -> Optional[str]:
    """Why a statistic of the pairs (human, auto) is undefined; None when it is defined."""
    if len(human) < 2:
        return f"fewer than 2 rows with both {names[0]} and {names[1]} (n = {len(human)})"
    for values, name in ((auto, names[1]), (human, names[0])):
        if len(set(values)) < 2:
            return f"{name} never varies (all {values[0]!r} over {len(values)} rows)"
    return None


def kappa_interval(human: Sequence[int], auto: Sequence[int], level: float = 0.95) -> Optional[List[float]]:
    """The percentile bootstrap interval of Cohen's kappa over rows (see the module's notes)."""
    if cohen_kappa(human, auto) is None:
        return None
    h, a = np.asarray(human, dtype=float), np.asarray(auto, dtype=float)
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(h), size=(RESAMPLES, len(h)))
    hs, as_ = h[idx], a[idx]
    ph, pa = hs.mean(axis=1), as_.mean(axis=1)
    defined = (ph > 0) & (ph < 1) & (pa > 0) & (pa < 1)
    po = (hs == as_).mean(axis=1)[defined]
    pe = (ph * pa + (1 - ph) * (1 - pa))[defined]
    kappas = (po - pe) / (1 - pe)
    if kappas.size < RESAMPLES // 2:  # most resamples undefined: too few rows to say
        return None
    low, high = np.percentile(kappas, [50 * (1 - level), 50 * (1 + level)])
    return [float(low), float(high)]


def spearman_p(rho: Optional[float], n: int) -> Optional[float]:
    """Two-sided p-value of Spearman's rho against no correlation (t approximation, n − 2 df)."""
    if rho is None or n < 3:
        return None
    if abs(rho) >= 1.0:
        return 0.0
    t = abs(rho) * math.sqrt((n - 2) / (1.0 - rho * rho))
    return float(2.0 * student_t.sf(t, n - 2))


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman's rho with average ranks for ties; None for fewer than 2 pairs or a constant side
    (torchmetrics would return 0 there)."""
    if undefined_why(x, y, ("x", "y")) is not None:
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
        "cohen_kappa_ci95": kappa_interval(human, auto),
        "cohen_kappa_undefined": undefined_why(human, auto, ("the human verdict", "the automated verdict")),
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
        out[key[len("auto_"):]] = score_correlations(have, scores, key)
    return out


def score_correlations(have: Sequence[Tuple[Any, Dict[str, Any]]], scores: List[float], key: str) -> Dict[str, Any]:
    """Spearman's rho of one automated score with human correctness and helpfulness, p-values, and why undefined."""
    out: Dict[str, Any] = {"n": len(have)}
    undefined: Dict[str, str] = {}
    for c in ("correctness", "helpfulness"):
        human = [r[c] for _, r in have]
        out[c] = spearman(human, scores)
        out[f"{c}_p"] = spearman_p(out[c], len(have))
        if out[c] is None:
            undefined[c] = undefined_why(human, scores, (f"human {c}", key)) or "not finite"
    out["undefined"] = undefined
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
