"""The sweep's plots, as its ``report.plot`` declares (else by its swept keys); error bars are 95 % CIs over seeds.

learning_curve (E2, ``data.n_train``), share_curve (E1, ``data.synthetic.share``), mitigation bars of
ACC and forgetting (E3, ``mitigation``), pareto: score vs cost, latency and parameters with the Pareto
front (E5, ``model``), review: human vs automated verdicts and their agreement (E4, or any sweep with
imported ratings), generic: the primary metric per cell. matplotlib is imported only to draw.
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ftexp.compare.collect import Sweep
from ftexp.compare.select import AGREEMENT, REVIEW, axis_label, cost_axes, higher_better, metrics_like, slices, x_key
from ftexp.compare.stats import Cell, chance, pareto_front, row0

TITLES = {"learning_curve": "Learning curve", "share_curve": "Synthetic share", "mitigation": "Forgetting and ACC",
          "pareto": "Score vs cost (Pareto front)", "review": "Human vs automated verdicts", "generic": "Per cell"}

def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def n_note(cells: Sequence[Cell]) -> str:
    ns = sorted({c.n for c in cells if c.n})
    if not ns:
        return "no completed job"
    span = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    extra = " (no interval where n = 1)" if ns[0] == 1 else ""
    return f"mean ± 95 % CI over seeds, n = {span} per point{extra}"


def err(stats: Sequence[Any]) -> List[List[float]]:
    """Error bars below and above each mean: the interval as cut at the metric's range, 0 without one."""
    return [[s.mean - s.low if s.half is not None else 0.0 for s in stats],
            [s.high - s.mean if s.half is not None else 0.0 for s in stats]]


def baselines(ax: Any, cells: Sequence[Cell], metric: str, vertical: bool = False) -> bool:
    """Chance (1/classes) and row 0 (the untrained model, mean over the jobs) as lines across the plot.
    Returns whether row 0 differs between cells (another model per cell): then no line is drawn for it."""
    jobs = [j for c in cells for j in c.jobs]
    line = ax.axvline if vertical else ax.axhline
    p = chance(jobs, metric)
    if p is not None:
        line(p, color="grey", linestyle=":", linewidth=1.2, zorder=3, label=f"chance (1/{round(1 / p)})")
    per_cell = {round(r.mean, 9) for c in cells if (r := row0(c.jobs, metric)).n}
    if len(per_cell) == 1:
        line(row0(jobs, metric).mean, color="black", linestyle="-.", linewidth=1, alpha=0.7, zorder=3,
             label="row 0: untrained model")
    return len(per_cell) > 1


def row0_marks(ax: Any, xs: Sequence[float], cells: Sequence[Cell], metric: str) -> None:
    """Row 0 per cell, where it differs between cells: a short red dash at each bar (black would read as a cap)."""
    marks = [(x, r.mean) for x, c in zip(xs, cells) if (r := row0(c.jobs, metric)).n]
    ax.scatter([x for x, _ in marks], [y for _, y in marks], marker="_", s=300, color="C3", linewidths=2,
               zorder=5, label="row 0: untrained model")


def seed_points(ax: Any, xs: Sequence[float], cells: Sequence[Cell], metric: str, vertical: bool = False,
                labelled: bool = True) -> None:
    """Each job's value as a dot on its bar, so that two seeds far apart are seen as such."""
    for x, c in zip(xs, cells):
        values = [j.metrics[metric] for j in c.jobs if j.metrics.get(metric) is not None]
        pos = [x + 0.06 * (k - (len(values) - 1) / 2) for k in range(len(values))]
        ax.scatter(values if vertical else pos, pos if vertical else values, s=10, color="black", zorder=4,
                   label="one seed" if labelled and x == xs[0] else None)


def _finish(fig: Any, plt: Any, title: str, sweep: Sweep, cells: Sequence[Cell], path: Path) -> Path:
    tag = next((t for t in sweep.tags if t.startswith("E")), "")
    fig.suptitle(f"{tag + ': ' if tag else ''}{title}\n{n_note(cells)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps a legend outside the axes
    plt.close(fig)
    return path


def _series(sweep: Sweep, cells: Sequence[Cell], x_key: str) -> Dict[str, List[Cell]]:
    i = sweep.keys.index(x_key)
    out: Dict[str, List[Cell]] = {}
    for c in cells:
        rest = [f"{k}={v}" for j, (k, v) in enumerate(zip(sweep.keys, c.values)) if j != i]
        out.setdefault(", ".join(rest), []).append(c)
    return out


def _row0_per_series(ax, series: Dict[str, List[Cell]], metric: str, one_colour: bool) -> None:
    """A row-0 line (the untrained model's score) per series of a curve, in the series' colour."""
    for s_i, (name, members) in enumerate(series.items()):
        r0 = row0([j for c in members for j in c.jobs], metric)
        if r0.n:
            ax.axhline(r0.mean, color=f"C{0 if one_colour else s_i}", linestyle="-.", linewidth=1, alpha=0.7,
                       label=f"row 0: untrained model · {name}")


def curve(sweep: Sweep, cells: Sequence[Cell], metric: str, path: Path, x_key: str, kind: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    i = sweep.keys.index(x_key)
    ticks: Dict[float, str] = {}

    def x_of(c: Cell) -> Optional[float]:
        value = c.values[i]
        try:
            x = float(value)
            return 100 * x if kind == "share_curve" else x
        except ValueError:
            real = c.summary("data/n_train").mean if kind == "learning_curve" else None
            if real is not None:
                ticks[real] = f"{real:,.0f}\n({value})"
            return real

    names = [metric] + slices(cells, metric)
    for s_i, (series, members) in enumerate(_series(sweep, cells, x_key).items()):
        for m_i, m in enumerate(names):
            pts = sorted((x, c.summary(m)) for c in members if (x := x_of(c)) is not None and c.summary(m).n)
            if not pts:
                continue
            label = ("all of test" if m == metric else "slice " + m.split("/")[2]) if len(names) > 1 else m
            style = dict(color=f"C{m_i if len(names) > 1 else s_i}", linestyle=["-", "--", ":", "-."][s_i % 4])
            k, lines = s_i * len(names) + m_i, len(names) * len(_series(sweep, cells, x_key))
            shift = (k - (lines - 1) / 2) * 0.012  # dodge: overlapping error bars stay apart
            dodged = [x * (1 + shift) if kind == "learning_curve" else x + 100 * shift / 2 for x, _ in pts]
            ax.errorbar(dodged, [s.mean for _, s in pts], yerr=err([s for _, s in pts]), marker="o",
                        capsize=4, label=f"{label}{' · ' + series if series else ''}", **style)
            if kind == "share_curve" and m == metric and pts[0][0] == 0:
                ax.axhline(pts[0][1].mean, color=style["color"], linestyle=":", linewidth=1, alpha=0.6,
                           label=f"share 0 (real data only){' · ' + series if series else ''}")
    if baselines(ax, cells, metric):  # row 0 differs between series (another model): one line each
        _row0_per_series(ax, _series(sweep, cells, x_key), metric, one_colour=len(names) > 1)
    xs = sorted({x for c in cells if (x := x_of(c)) is not None})
    if kind == "learning_curve":
        ax.set_xscale("log")
        ax.set_xticks(xs, [ticks.get(x, f"{x:,.0f}") for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(f"training examples ({x_key}, log scale)")
    else:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(f"synthetic share of the training set ({x_key}, %)")
    ax.set_ylabel(axis_label(metric).replace(metric, metric.split("/")[-1] + " on the test set")
                  if len(names) > 1 else axis_label(metric))
    ax.grid(alpha=0.3)
    crowded = len(ax.get_legend_handles_labels()[1]) > 3  # then beside the axes, not over the curves
    ax.legend(fontsize=8, **(dict(loc="upper left", bbox_to_anchor=(1.01, 1.0)) if crowded else {}))
    return _finish(fig, plt, f"{TITLES[kind]}: {metric} vs {x_key}", sweep, cells, path)


def bars(ax: Any, sweep: Sweep, cells: Sequence[Cell], metrics: Sequence[Tuple[str, str]], ylabel: str,
         legend: Optional[str] = None) -> None:
    """Grouped bars, one group per cell, one bar per metric; ``legend``: its title (shown also for one metric)."""
    show = len(metrics) > 1 or legend is not None
    say_n = len({c.summary(m).n for c in cells for m, _ in metrics}) > 1  # else the subtitle says it
    width = 0.8 / max(1, len(metrics))
    for m_i, (m, name) in enumerate(metrics):
        xs = [k + (m_i - (len(metrics) - 1) / 2) * width for k in range(len(cells))]
        stats = [c.summary(m) for c in cells]
        ax.bar(xs, [s.mean or 0.0 for s in stats], width, color=f"C{m_i}", label=name if show else None)
        with_ci = [(x, s) for x, s in zip(xs, stats) if s.half is not None]
        if with_ci:
            ax.errorbar([x for x, _ in with_ci], [s.mean for _, s in with_ci], yerr=err([s for _, s in with_ci]),
                        fmt="none", ecolor="black", capsize=3, linewidth=1)
        seed_points(ax, xs, cells, m, labelled=m_i == 0)
        for x, s in zip(xs, stats) if say_n else []:
            ax.annotate("no data" if s.n == 0 else f"n={s.n}", (x, 0), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, rotation=90 if len(metrics) > 2 else 0)
    ax.axhline(0, color="black", linewidth=0.6)
    if len(metrics) == 1 and baselines(ax, cells, metrics[0][0]):
        row0_marks(ax, range(len(cells)), cells, metrics[0][0])
    if len(metrics) == 1:
        show = show or ax.get_legend_handles_labels()[1] != []
    labels = [c.label(sweep.keys, short=True) for c in cells]
    ax.set_xticks(range(len(cells)), labels, rotation=30 if max(map(len, labels), default=0) > 10 else 0,
                  ha="right" if max(map(len, labels), default=0) > 10 else "center", fontsize=8)
    ax.set_xlabel(", ".join(sweep.keys) or "all jobs")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    if show:
        ax.legend(fontsize=7, title=legend, title_fontsize=7)


def mitigation(sweep: Sweep, cells: Sequence[Cell], metric: str, path: Path) -> Path:
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    bars(left, sweep, cells, [("cl/acc", "ACC")], "cl/acc: mean final score over trained tasks (0–1)")
    left.set_title("ACC (higher is better)", fontsize=9)
    forgetting = [(m, m.split("/")[-1]) for m in metrics_like(cells, "cl/forgetting/")]
    bars(right, sweep, cells, forgetting or [("cl/mean_forgetting", "mean")],
         "cl/forgetting/<task>: best − final (0–1)", legend="task")
    right.set_title("Forgetting per task, Chaudhry (lower is better)", fontsize=9)
    return _finish(fig, plt, f"{TITLES['mitigation']} per {', '.join(sweep.keys) or 'cell'}", sweep, cells, path)


def _count(v: float) -> str:
    return f"{v / 1e9:.3g} B" if v >= 1e9 else f"{v / 1e6:.3g} M" if v >= 1e6 else f"{v / 1e3:.3g} k"


def pareto(sweep: Sweep, cells: Sequence[Cell], metric: str, path: Path) -> Path:
    plt = _plt()
    axes_x = cost_axes(cells)
    fig, axes = plt.subplots(1, len(axes_x), figsize=(4.4 * len(axes_x), 4.6), squeeze=False)
    crowded = len(cells) > 8  # then one colour, and only the front's points named
    colour = {id(c): "C0" if crowded else f"C{k % 10}" for k, c in enumerate(cells)}  # the same in every panel
    for ax, x_metric in zip(axes[0], axes_x):
        title, better = (("cost", "cheaper") if "cost" in x_metric else ("latency", "faster") if "_ms" in x_metric
                         else ("size", "smaller"))
        pts = [(c, c.summary(x_metric), c.summary(metric)) for c in cells]
        pts = [(c, sx, sy) for c, sx, sy in pts if sx.n and sy.n]
        sign = 1 if higher_better(metric) else -1
        front = [pts[i] for i in pareto_front([(sx.mean, sign * sy.mean) for _, sx, sy in pts])]
        for c, sx, sy in pts:
            # costs, latencies and sizes are never negative: a wide interval (n = 2) stops at zero
            xerr = None if sx.half is None else err([sx])
            yerr = None if sy.half is None else err([sy])
            ax.errorbar(sx.mean, sy.mean, xerr=xerr, yerr=yerr, marker="o", capsize=3, color=colour[id(c)],
                        label=c.label(sweep.keys, True))
            if crowded and any(c is f[0] for f in front):
                ax.annotate(", ".join(c.values), (sx.mean, sy.mean), xytext=(4, 4), textcoords="offset points",
                            fontsize=6)
        baselines(ax, cells, metric)
        ax.step([sx.mean for _, sx, _ in front], [sy.mean for _, _, sy in front], where="post", color="black",
                linestyle="--", linewidth=1, zorder=0, label="Pareto front")
        ax.scatter([sx.mean for _, sx, _ in front], [sy.mean for _, _, sy in front], s=160, facecolors="none",
                   edgecolors="black", linewidths=1, zorder=3)
        if "param" in x_metric:
            ax.set_xscale("log")
            xs = sorted({sx.mean for _, sx, _ in pts})
            logs = [math.log10(x) for x in xs if x > 0]
            # sizes close on the log axis (139 M and 272 M) would print their labels over each other
            close = any(b - a < 0.12 * ((logs[-1] - logs[0]) or 1) for a, b in zip(logs, logs[1:]))
            ax.set_xticks(xs, [_count(x) for x in xs], fontsize=8, rotation=40 if close else 0,
                          ha="right" if close else "center")
            ax.minorticks_off()
        else:  # costs like 0.0004: at most 5 ticks, in compact notation, so the labels do not run together
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.margins(x=0.1, y=0.08)
        ax.set_title(f"vs {title}: nothing on the front is beaten by\na point both {better} and better"
                     f"{'' if sign > 0 else ' (lower)'}", fontsize=8)
        ax.set_xlabel(axis_label(x_metric, "\n"), fontsize=8)
        ax.set_ylabel(axis_label(metric), fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not crowded:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   title=", ".join(sweep.keys) or None, title_fontsize=8)
    return _finish(fig, plt, f"{TITLES['pareto']}: {metric} (ringed: on the front)", sweep, cells, path)


def review(sweep: Sweep, cells: Sequence[Cell], metric: str, path: Path) -> Path:
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    bars(left, sweep, cells, REVIEW, "share of reviewed sample rows judged correct (0–1)")
    left.set_title("Correct: people vs the automated verdict", fontsize=9)
    bars(right, sweep, cells, AGREEMENT, "κ (−1…1); rates (0–1)")
    right.set_title("Agreement of the automated verdict with people", fontsize=9)
    return _finish(fig, plt, TITLES["review"], sweep, cells, path)


def generic(sweep: Sweep, cells: Sequence[Cell], metric: str, path: Path) -> Path:
    plt = _plt()
    labels = [c.label(sweep.keys, short=True) for c in cells]
    if len(cells) <= 6 and max(map(len, labels), default=0) <= 24:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.9 * len(cells)), 4.6))
        bars(ax, sweep, cells, [(metric, metric)], axis_label(metric))
    else:  # many cells or long names (a search): horizontal bars, names on the left
        fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.28 * len(cells)))
        stats = [c.summary(metric) for c in cells]
        ax.barh(range(len(cells)), [s.mean or 0.0 for s in stats], color="C0")
        with_ci = [(k, s) for k, s in enumerate(stats) if s.half is not None]
        ax.errorbar([s.mean for _, s in with_ci], [k for k, _ in with_ci], xerr=err([s for _, s in with_ci]),
                    fmt="none", ecolor="black", capsize=3, linewidth=1)
        seed_points(ax, range(len(cells)), cells, metric, vertical=True)
        baselines(ax, cells, metric, vertical=True)
        ax.legend(fontsize=7)
        ax.set_yticks(range(len(cells)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(axis_label(metric))
        ax.set_ylabel(", ".join(sweep.keys) or "all jobs", fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    return _finish(fig, plt, f"{metric} per {', '.join(sweep.keys) or 'cell'}", sweep, cells, path)


def draw(kind: str, sweep: Sweep, cells: Sequence[Cell], metric: str, out_dir: Path) -> Path:
    path = Path(out_dir) / f"{kind}.png"
    if kind in ("learning_curve", "share_curve"):
        return curve(sweep, cells, metric, path, x_key(sweep, kind), kind)
    draw_kind: Dict[str, Callable[..., Path]] = {"mitigation": mitigation, "pareto": pareto, "review": review,
                                                "generic": generic}
    return draw_kind[kind](sweep, cells, metric, path)
