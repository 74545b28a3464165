"""Mean, sample standard deviation and 95 % confidence interval over a cell's seeds; paired differences
between cells; cells; Pareto fronts.

The CI is Student's t: mean ± t_{0.975, n-1} · s / √n, with s the sample standard deviation (n − 1 in
the denominator), cut at the metric's range where it has one (see :func:`bounds`). It is undefined for
n = 1 (shown as "n=1", never as ± 0). The t quantile is scipy.stats.t's.

Why a clipped t interval and not a percentile bootstrap over seeds: sweeps have 2 to 5 seeds, and a
bootstrap can only resample those values, so its interval is at most [min, max] of them; with n = 2 it
covers the mean far less often than 95 % and hides how little two seeds say. The t interval keeps that
width honest; where it passes a bound no value can pass (accuracy below 0), the part beyond the bound is
impossible, so cutting it there loses no coverage. A cut interval is marked as such in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from scipy.stats import t as student_t

from ftexp.compare.collect import Job, Sweep

LEVEL = 0.95


# ------------------------------------------------------------------------------------ Student's t


@lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom."""
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1 (got p={p}, df={df})")
    return float(student_t.ppf(p, df))


# ------------------------------------------------------------------------------------ one cell's numbers


Range = Tuple[float, float]
UNBOUNDED: Range = (-math.inf, math.inf)
UNIT: Range = (0.0, 1.0)
SIGNED_UNIT: Range = (-1.0, 1.0)
NON_NEGATIVE: Range = (0.0, math.inf)
FEW_SEEDS = 3  # below this many seeds a cell's interval is too wide (or absent) to tell arms apart


def bounds(metric: str) -> Range:
    """The values ``metric`` can take: accuracy, F1, ROUGE, rates, shares [0, 1]; κ and BWT (a mean
    difference of [0, 1] scores) [−1, 1]; losses, costs, times, sizes [0, ∞); else unbounded (forgetting
    may be of a loss)."""
    leaf = metric.rsplit("/", 1)[-1]
    if leaf in ("cohen_kappa", "kappa", "bwt"):
        return SIGNED_UNIT
    if (leaf in ("accuracy", "macro_f1", "f1", "mc1", "mc2", "mc1_norm", "exact_match", "correctness", "acc")
            or leaf.startswith("rouge") or leaf.endswith(("_rate", "_share"))):
        return UNIT
    if (leaf in ("loss", "perplexity", "tokens", "n", "bleu", "helpfulness", "tone")
            or leaf.startswith("n_") or leaf.endswith(("_ms", "_s", "_mb")) or "cost" in leaf or "param" in leaf):
        return NON_NEGATIVE
    return UNBOUNDED


def difference_bounds(rng: Range) -> Range:
    """The range of a difference of two values in ``rng``."""
    return (rng[0] - rng[1], rng[1] - rng[0])


@dataclass(frozen=True)
class Summary:
    n: int
    mean: Optional[float] = None
    std: Optional[float] = None  # sample standard deviation (n - 1); None for n < 2
    half: Optional[float] = None  # 95 % CI half-width before any cut; None for n < 2
    range: Range = UNBOUNDED  # the values the metric can take: the interval stops there

    @property
    def low(self) -> Optional[float]:
        return None if self.half is None else max(self.mean - self.half, self.range[0])

    @property
    def high(self) -> Optional[float]:
        return None if self.half is None else min(self.mean + self.half, self.range[1])

    @property
    def clipped(self) -> bool:
        """Whether the t interval passed the metric's range and was cut at its bound."""
        lo, hi = self.range
        return self.half is not None and not lo <= self.mean - self.half <= self.mean + self.half <= hi


def summarise(values: Iterable[Optional[float]], level: float = LEVEL, rng: Range = UNBOUNDED) -> Summary:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Summary(0, range=rng)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, range=rng)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Summary(n, mean, std, t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n), rng)


def number_text(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    if abs(v) < 0.01:  # small costs (per 1,000 requests on a CPU): significant digits, not zeros
        return f"{v:.3g}"
    return f"{v:#.4g}".rstrip(".") if abs(v) >= 1 else f"{v:.4f}"


def fmt(s: Summary, n_cell: Optional[int] = None) -> str:
    """``0.8123 ± 0.0120`` (with ``(n=2)`` when the metric's n differs from the cell's), ``0.8123 (n=1)``, ``—``;
    an interval cut at the metric's range as its bounds: ``0.9500 [0.7906, 1]*``."""
    if s.n == 0 or s.mean is None:
        return "—"
    if s.half is None:
        return f"{number_text(s.mean)} (n=1)"
    text = f"{number_text(s.mean)} ± {number_text(s.half)}"
    if s.clipped:
        text = f"{number_text(s.mean)} [{number_text(s.low)}, {number_text(s.high)}]*"
    return text if n_cell is None or n_cell == s.n else f"{text} (n={s.n})"


# ------------------------------------------------------------------------------------ cells


@dataclass
class Cell:
    values: Tuple[str, ...]  # one per swept key
    jobs: List[Job] = field(default_factory=list)  # completed: their metrics count
    problems: List[Job] = field(default_factory=list)  # failed, incomplete, unreadable

    @property
    def n(self) -> int:
        return len(self.jobs)

    def summary(self, metric: str) -> Summary:
        return summarise((j.metrics.get(metric) for j in self.jobs), rng=bounds(metric))

    def by_seed(self, metric: str) -> Dict[str, float]:
        """The metric per seed (a seed run twice in one cell keeps its first job)."""
        out: Dict[str, float] = {}
        for j in self.jobs:
            if j.metrics.get(metric) is not None:
                out.setdefault(str(j.seed), j.metrics[metric])
        return out

    def label(self, keys: Sequence[str], short: bool = False) -> str:
        if not keys:
            return "all jobs"
        if short and len(keys) == 1:
            return self.values[0]
        return ", ".join(f"{k}={v}" for k, v in zip(keys, self.values))


UNSET = "(unset)"


def task_of(metric: str) -> str:
    """The task a metric is of: "" for the main task's bare keys (``test/accuracy``), else its first part."""
    first = metric.split("/", 1)[0]
    return "" if first in ("test", "val", "train") else first


def chance(jobs: Iterable[Job], metric: str) -> Optional[float]:
    """1 / classes for a classification accuracy whose jobs all record the same number of classes."""
    if metric.rsplit("/", 1)[-1] != "accuracy" or metric.startswith("cl/"):
        return None
    counts = {j.labels.get(task_of(metric)) for j in jobs}
    return 1.0 / counts.pop() if len(counts) == 1 and None not in counts else None


def row0(jobs: Iterable[Job], metric: str) -> Summary:
    """The untrained model's score (each job's rows[0]) over ``jobs``."""
    return summarise((j.row0.get(metric) for j in jobs), rng=bounds(metric))


@dataclass(frozen=True)
class Paired:
    """``cell − reference`` over the seeds both have (same seed = pair): one arm's effect with the
    seed-to-seed noise that the two share taken out."""

    seeds: Tuple[str, ...]
    diff: Summary
    unpaired: int  # jobs of either cell whose seed the other lacks


def paired(cell: Cell, reference: Cell, metric: str) -> Paired:
    a, b = cell.by_seed(metric), reference.by_seed(metric)
    seeds = tuple(s for s in a if s in b)
    diffs = [a[s] - b[s] for s in seeds]
    unpaired = len(set(a) ^ set(b))
    return Paired(seeds, summarise(diffs, rng=difference_bounds(bounds(metric))), unpaired)


def sort_key(value: str, order: Sequence[str]) -> Tuple:
    if value in order:
        return (0, order.index(value), 0.0, "")
    if value in ("null", "None", UNSET):
        return (2, 0, 0.0, value)
    try:
        return (1, 0, float(value), "")
    except ValueError:
        return (1, 1, 0.0, value)


def cells(sweep: Sweep) -> List[Cell]:
    """One cell per combination of swept values found, in the sweep's order. A job whose overrides
    could not be read at all (no results.json, no .hydra/overrides.yaml) is in no cell: the report
    lists it with the jobs that did not complete."""
    by_values: Dict[Tuple[str, ...], Cell] = {}
    for job in sweep.jobs:
        if placed(job):
            values = tuple(job.overrides.get(k, UNSET) for k in sweep.keys)
            cell = by_values.setdefault(values, Cell(values))
            (cell.jobs if job.status == "completed" else cell.problems).append(job)
    return sorted(by_values.values(), key=lambda c: tuple(sort_key(v, sweep.order.get(k, []))
                                                          for k, v in zip(sweep.keys, c.values)))


def placed(job: Job) -> bool:
    return bool(job.overrides) or job.status == "completed"


def pareto_front(points: Sequence[Tuple[Optional[float], Optional[float]]]) -> List[int]:
    """Indices of the points no other point dominates, lower x (cost) and higher y (score) being
    better, sorted by x. A point dominates another when it is at least as good on both axes and
    better on one; points missing a coordinate take no part; equal points are all on the front."""
    valid = [(i, x, y) for i, (x, y) in enumerate(points) if x is not None and y is not None]
    front = [i for i, x, y in valid
             if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for _, x2, y2 in valid)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
