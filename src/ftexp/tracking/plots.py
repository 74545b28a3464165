"""The forgetting matrix of one run as a PNG: the score table and each task's curve over stages."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence


LOWER_BETTER = ("loss", "perplexity")


def plot_matrix(R: Sequence[Sequence[Optional[float]]], tasks: Sequence[str], stages: Sequence[str],
                keys: Dict[str, str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (table, curves) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(tasks) + 4, 1.2 + 0.55 * len(R)),
                                        gridspec_kw={"width_ratios": [max(1, len(tasks)), 2]})
    _table(fig, table, R, tasks, stages, keys)
    _curves(curves, R, tasks, keys)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _table(fig, ax, R, tasks, stages, keys) -> None:
    """The scores R[k][j], each column coloured by its own range (scores of different tasks are not comparable)."""
    import matplotlib.pyplot as plt

    for j, task in enumerate(tasks):
        col = [row[j] for row in R if row[j] is not None]
        lo, hi = (min(col), max(col)) if col else (0.0, 1.0)
        lower_better = keys[task].endswith(LOWER_BETTER)
        for k, row in enumerate(R):
            v = row[j]
            shade = 0.5 if v is None or hi == lo else (v - lo) / (hi - lo)
            if lower_better:
                shade = 1 - shade
            ax.add_patch(plt.Rectangle((j, k), 1, 1, color=plt.cm.RdYlGn(shade), alpha=0.8))
            ax.text(j + 0.5, k + 0.5, "-" if v is None else f"{v:.3f}", ha="center", va="center", fontsize=9)
    ax.set_xlim(0, len(tasks))
    ax.set_ylim(len(R), 0)
    ax.set_xticks([j + 0.5 for j in range(len(tasks))], [f"{t}\n{keys[t]}" for t in tasks], fontsize=8)
    ax.set_yticks([k + 0.5 for k in range(len(R))], [f"{k}: {s}" for k, s in enumerate(stages)], fontsize=8)
    ax.set_title("R[k][j]: task j after stage k", fontsize=9)
    # The colours are per column (worst to best of that task), so the scale's ends are named, not numbered.
    scale = fig.colorbar(plt.cm.ScalarMappable(cmap=plt.cm.RdYlGn, norm=plt.Normalize(0, 1)), ax=ax,
                         fraction=0.05, pad=0.02, ticks=[0, 1])
    scale.ax.set_yticklabels(["worst", "best"], fontsize=7)
    scale.set_label("within each task's column", fontsize=7)


def _curves(ax, R, tasks, keys) -> None:
    """Each task's score over the stages on the left axis; losses (lower is better) dashed on a right axis."""
    losses = None
    handles = []
    for j, task in enumerate(tasks):
        values = [row[j] for row in R]
        if keys[task].endswith(LOWER_BETTER):
            losses = losses or ax.twinx()
            handles += losses.plot(range(len(R)), values, marker="s", linestyle="--", color=f"C{j}",
                                   label=f"{task} ({keys[task]}, right)")
        else:
            handles += ax.plot(range(len(R)), values, marker="o", color=f"C{j}", label=f"{task} ({keys[task]})")
    ax.set_xticks(range(len(R)), ["0\n(base)", *(str(k) for k in range(1, len(R)))])
    ax.set_xlabel("after stage (0: the untrained model)")
    scored = [keys[t] for t in tasks if not keys[t].endswith(LOWER_BETTER)]
    if scored:
        ax.set_ylabel(f"score: {', '.join(sorted(set(scored)))} (higher is better)", fontsize=8)
    if losses is not None:
        losses.set_ylabel("loss or perplexity (lower is better)", fontsize=8)
    ax.legend(handles=handles, fontsize=7)
    ax.grid(alpha=0.3)
