"""``table.csv`` (every metric, one row per cell) and ``report.md`` (the question, the chosen metrics
as mean ± 95 % CI with n, the plots, and every job that did not complete with its error)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ftexp.compare import plots, select
from ftexp.compare.collect import CompareError, Sweep
from ftexp.compare.stats import (FEW_SEEDS, UNSET, Cell, cells as make_cells, chance, fmt, number_text, paired,
                                 placed, row0)
from ftexp.utils.io import atomic_write_text

log = logging.getLogger(__name__)

PRIMARY = ("test/accuracy", "test/mc2", "test/mc1", "test/rougeL", "test/exact_match", "test/loss")
STATS = ("mean", "std", "ci95_low", "ci95_high", "n")


def all_metrics(sweep: Sweep) -> List[str]:
    return sorted({m for j in sweep.completed for m in j.metrics})


def primary_metric(sweep: Sweep, asked: Optional[str]) -> str:
    """``asked`` (--metric), else the jobs' report.metric, else the first of PRIMARY they have."""
    found = all_metrics(sweep)
    where = "metric" if asked else "report.metric (declared by the jobs' experiment or sweep file)"
    asked = asked or select.declared(sweep, "metric")
    if asked:
        if found and asked not in found:
            near = [m for m in found if asked.split("/")[-1] in m][:8]
            raise CompareError(f"{where} '{asked}' is in no completed job's results"
                               f"{'; close: ' + ', '.join(near) if near else ''}; all: {', '.join(found[:40])}")
        return asked
    return next((m for m in PRIMARY if m in found), found[0] if found else "test/accuracy")


def shown_metrics(kinds: Sequence[str], cells: Sequence[Cell], metric: str,
                  declared_metrics: Sequence[str] = ()) -> List[str]:
    """The report's columns: the primary metric, what the sweep's plots are about and the jobs' report.metrics."""
    out = [metric] + select.slices(cells, metric)
    split = metric.split("/")[0]
    out += [m for m in (f"{split}/macro_f1",) if select.has(cells, m)]
    if "mitigation" in kinds:
        out += [m for m in ("cl/acc", "cl/bwt", "cl/mean_forgetting") if select.has(cells, m)]
        out += select.metrics_like(cells, "cl/forgetting/") + select.metrics_like(cells, "cl/retention/")
        tasks = [m.split("/")[-1] for m in select.metrics_like(cells, "cl/retention/")]
        out += [f"{t}/{metric}" for t in tasks if select.has(cells, f"{t}/{metric}")]  # the other tasks' final score
    if "pareto" in kinds:
        out += select.cost_axes(cells)
    if "review" in kinds:
        out += [m for m, _ in select.REVIEW + select.HUMAN_CI + select.AGREEMENT + select.RATERS
                if select.has(cells, m)]
    return list(dict.fromkeys(out + list(declared_metrics)))


def problem_text(cell: Cell) -> str:
    counts: Dict[str, int] = {}
    for j in cell.problems:
        counts[j.status] = counts.get(j.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def write_csv(path: Path, sweep: Sweep, cells: Sequence[Cell], metrics: Sequence[str]) -> Path:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([*sweep.keys, "n", "not_completed", "seeds", *(f"{m}:{s}" for m in metrics for s in STATS)])
    for c in cells:
        row: List[object] = [*c.values, c.n, len(c.problems), " ".join(str(j.seed) for j in c.jobs)]
        for m in metrics:
            s = c.summary(m)
            row += [s.mean, s.std, s.low, s.high, s.n]
        w.writerow(["" if v is None else v for v in row])
    atomic_write_text(path, buf.getvalue())
    return path


def md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def arrow(metric: str) -> str:
    return "↑" if select.higher_better(metric) else "↓"


def few_seeds(cells: Sequence[Cell]) -> List[str]:
    """The warning for cells with fewer than FEW_SEEDS completed seeds (none when every cell has enough)."""
    few = [c for c in cells if 0 < c.n < FEW_SEEDS]
    if not few:
        return []
    ns = sorted({c.n for c in few})
    return [f"**Warning: {len(few)} of {len(cells)} cells have fewer than {FEW_SEEDS} seeds (n = "
            f"{', '.join(map(str, ns))}).** With so few seeds an interval is very wide (n = 2: ±12.7 standard "
            "deviations / √2) or absent (n = 1), and a difference between cells may be seed noise; run more seeds "
            "before drawing a conclusion.", ""]


def baseline_lines(sweep: Sweep, cells: Sequence[Cell], metrics: Sequence[str]) -> List[str]:
    """Row 0 (the untrained model) and chance for the metrics that have them."""
    jobs = [j for c in cells for j in c.jobs]
    lines = []
    for m in metrics:
        parts = []
        r0 = row0(jobs, m)
        if r0.n:
            spread = len({round(j.row0[m], 12) for j in jobs if m in j.row0}) > 1
            parts.append(f"row 0 (the untrained model, each job's rows[0]) {number_text(r0.mean)}"
                         + (" on average (it differs between jobs: another model or data per cell?)" if spread else ""))
        p = chance(jobs, m)
        if p is not None:
            parts.append(f"chance 1/{round(1 / p)} = {number_text(p)}")
        if parts:
            lines.append(f"- {md(m)}: " + "; ".join(parts))
    return ["**Baselines.**", "", *lines, ""] if lines else []


def missing_reasons(keys: Sequence[str], cells: Sequence[Cell], metrics: Sequence[str]) -> List[str]:
    """Why a reviewed cell has no Cohen's κ: it is undefined when either side never varies."""
    lines = []
    if select.KAPPA not in metrics:
        return lines
    for c in cells:
        for j in c.jobs:
            n, passed = j.metrics.get("review/sample/agreement/n"), j.metrics.get("review/sample/agreement/n_auto_pass")
            human = j.metrics.get("review/sample/correctness")
            if select.KAPPA in j.metrics or not n:
                continue
            why = ("the automated verdicts never vary (all pass)" if passed == n else
                   "the automated verdicts never vary (all fail)" if passed == 0 else
                   "the human verdicts never vary" if human in (0.0, 1.0) else f"fewer than 2 rated rows (n = {n:g})")
            lines.append(f"- {md(c.label(keys))}, seed {md(j.seed)}: Cohen's κ undefined: {why}.")
    return ["**Why κ is missing.**", "", *lines, ""] if lines else []


def signed(text: str, mean: Optional[float]) -> str:
    return f"+{text}" if mean is not None and mean > 0 else text


def difference_lines(sweep: Sweep, cells: Sequence[Cell], metrics: Sequence[str]) -> List[str]:
    """Each arm minus the reference arm (the first cell), seed by seed, with a t interval over the pairs."""
    arms = [c for c in cells if c.n]
    if len(arms) < 2:
        return []
    ref = arms[0]
    lines = ["## Paired differences", "",
             f"Each cell minus the reference cell **{md(ref.label(sweep.keys))}** (the first in the sweep's order), "
             "seed by seed (the same seed in both = one pair), then mean ± 95 % t interval over the pairs (cut at "
             "the difference's range: `*`). Positive: higher than the reference, which is better for ↑ metrics and "
             "worse for ↓ ones. An interval that holds 0 does not tell the cells apart.", ""]
    header = [*sweep.keys, "pairs", *(f"Δ {m} {arrow(m)}" for m in metrics)]
    lines += ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    for c in arms[1:]:
        found = [paired(c, ref, m) for m in metrics]
        most = max(len(p.seeds) for p in found)
        row = [*c.values, most, *(("no shared seed" if not p.seeds else signed(fmt(p.diff, most), p.diff.mean))
                                  for p in found)]
        lines.append("| " + " | ".join(md(v) for v in row) + " |")
    return lines + [""]


def write_md(path: Path, sweep: Sweep, cells: Sequence[Cell], metrics: Sequence[str], drawn: Dict[str, str],
             failed_plots: Dict[str, str]) -> Path:
    counts: Dict[str, int] = {}
    for j in sweep.jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    lines = [f"# Compare: {sweep.source}", ""]
    lines += [f"**Question.** {q}  " for q in sweep.question] or ["**Question.** (no sweep file or tag found)  "]
    if sweep.command:
        lines.append(f"**Command.** `{sweep.command}`  ")
    lines.append(f"**Tags.** {', '.join(sweep.tags) or '—'} · **Swept.** {', '.join(sweep.keys) or 'nothing'}"
                 f" (seed: replicates)  ")
    lines += [f"**Jobs.** {len(sweep.jobs)} found: " + ", ".join(f"{n} {s}" for s, n in counts.items()), ""]
    lines += ["## Results", "", "Mean ± 95 % confidence interval over seeds (Student's t, n − 1 degrees of freedom, "
              "sample standard deviation); `[low, high]*`: the interval passed the metric's range (accuracy below 0) "
              "and was cut at its bound; `(n=1)`: a single completed job, no interval; `—`: no value. ↑: higher is "
              "better, ↓: lower is better. Every metric, with std and interval bounds: [table.csv](table.csv).", ""]
    if not sweep.completed:
        lines += ["**No job completed: there is nothing to average.** See below for why.", ""]
    lines += few_seeds([c for c in cells if c.n])
    header = [*sweep.keys, "n", "seeds", *(f"{m} {arrow(m)}" for m in metrics), "not completed"]
    lines += ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    for c in cells:
        row = [*c.values, c.n, " ".join(str(j.seed) for j in c.jobs) or "—",
               *(fmt(c.summary(m), c.n) for m in metrics), problem_text(c) or "—"]
        lines.append("| " + " | ".join(md(v) for v in row) + " |")
    lines += [""] + baseline_lines(sweep, cells, metrics) + missing_reasons(sweep.keys, cells, metrics)
    lines += difference_lines(sweep, cells, metrics)
    lines += ["## Plots", ""]
    lines += [f"![{kind}]({name})" for kind, name in drawn.items()]
    lines += [f"- {kind}: not drawn ({md(why)})" for kind, why in failed_plots.items()]
    if not drawn and not failed_plots:
        lines.append("None: no completed job.")
    lines += select.plot_notes(sweep, [*drawn, *failed_plots])
    lines += ["", "## Jobs that did not complete", ""]
    if sweep.problems:
        lines += ["| job | status | cell | seed | error | where |", "|---|---|---|---|---|---|"]
        for j in sweep.problems:
            cell = ", ".join(f"{k}={j.overrides.get(k, UNSET)}" for k in sweep.keys) if placed(j) else "(unknown)"
            seed = "—" if j.seed is None else j.seed
            lines.append(f"| {md(j.name)} | {j.status} | {md(cell or 'all jobs')} | {md(seed)} | {md(j.error)} | "
                         f"{md(j.source)} |")
    else:
        lines.append("None: every job completed.")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_report(sweep: Sweep, out_dir: Path, metric: Optional[str] = None) -> Path:
    """table.csv, the plots and report.md in ``out_dir``; returns report.md's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = primary_metric(sweep, metric)
    cells = make_cells(sweep)
    kinds = select.choose(sweep, cells) if sweep.completed else []
    shown = shown_metrics(kinds, cells, metric, select.declared(sweep, "metrics") or [])
    write_csv(out_dir / "table.csv", sweep, cells, shown + [m for m in all_metrics(sweep) if m not in shown])
    few = [c for c in cells if 0 < c.n < FEW_SEEDS]
    if few:
        log.warning("ftexp.compare: warning: %d of %d cells have fewer than %d seeds (n = %s): their intervals are "
                    "wide or absent; see %s", len(few), len([c for c in cells if c.n]), FEW_SEEDS,
                    ", ".join(sorted({str(c.n) for c in few})), out_dir / "report.md")
    drawn, failed = {}, {}
    for stale in plots.TITLES:  # a previous compare's plots that this one may not draw
        (out_dir / f"{stale}.png").unlink(missing_ok=True)
    for kind in kinds:
        try:
            drawn[kind] = plots.draw(kind, sweep, cells, metric, out_dir).name
        except Exception as exc:  # noqa: BLE001 - a plot must never cost the table
            log.warning("ftexp.compare: could not draw %s: %s", kind, exc)
            failed[kind] = f"{type(exc).__name__}: {exc}"
    return write_md(out_dir / "report.md", sweep, cells, shown, drawn, failed)
