"""The forgetting matrix of one run as a PNG: the score table and each task's curve over stages."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence


def plot_matrix(R: Sequence[Sequence[Optional[float]]], tasks: Sequence[str], stages: Sequence[str],
                keys: Dict[str, str], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (table, curves) = plt.subplots(1, 2, figsize=(4 + 1.6 * len(tasks) + 4, 1.2 + 0.55 * len(R)),
                                        gridspec_kw={"width_ratios": [max(1, len(tasks)), 2]})
    # Table: colour each column by its own range (scores of different tasks are not comparable).
    for j, task in enumerate(tasks):
        col = [row[j] for row in R if row[j] is not None]
        lo, hi = (min(col), max(col)) if col else (0.0, 1.0)
        lower_better = keys[task].endswith(("loss", "perplexity"))
        for k, row in enumerate(R):
            v = row[j]
            shade = 0.5 if v is None or hi == lo else (v - lo) / (hi - lo)
            if lower_better:
                shade = 1 - shade
            table.add_patch(plt.Rectangle((j, k), 1, 1, color=plt.cm.RdYlGn(shade), alpha=0.8))
            table.text(j + 0.5, k + 0.5, "-" if v is None else f"{v:.3f}", ha="center", va="center", fontsize=9)
    table.set_xlim(0, len(tasks))
    table.set_ylim(len(R), 0)
    table.set_xticks([j + 0.5 for j in range(len(tasks))], [f"{t}\n{keys[t]}" for t in tasks], fontsize=8)
    table.set_yticks([k + 0.5 for k in range(len(R))], [f"{k}: {s}" for k, s in enumerate(stages)], fontsize=8)
    table.set_title("R[k][j]: task j after stage k", fontsize=9)
    # The colours are per column (worst to best of that task), so the scale's ends are named, not numbered.
    scale = fig.colorbar(plt.cm.ScalarMappable(cmap=plt.cm.RdYlGn, norm=plt.Normalize(0, 1)), ax=table,
                         fraction=0.05, pad=0.02, ticks=[0, 1])
    scale.ax.set_yticklabels(["worst", "best"], fontsize=7)
    scale.set_label("within each task's column", fontsize=7)
    # Curves: scores on the left axis, losses (lower is better) dashed on a right axis of their own.
    losses = None
    handles = []
    for j, task in enumerate(tasks):
        values = [row[j] for row in R]
        if keys[task].endswith(("loss", "perplexity")):
            losses = losses or curves.twinx()
            handles += losses.plot(range(len(R)), values, marker="s", linestyle="--", color=f"C{j}",
                                   label=f"{task} ({keys[task]}, right)")
        else:
            handles += curves.plot(range(len(R)), values, marker="o", color=f"C{j}", label=f"{task} ({keys[task]})")
    curves.set_xticks(range(len(R)), ["0\n(base)", *(str(k) for k in range(1, len(R)))])
    curves.set_xlabel("after stage (0: the untrained model)")
    scored = [keys[t] for t in tasks if not keys[t].endswith(("loss", "perplexity"))]
    if scored:
        curves.set_ylabel(f"score: {', '.join(sorted(set(scored)))} (higher is better)", fontsize=8)
    if losses is not None:
        losses.set_ylabel("loss or perplexity (lower is better)", fontsize=8)
    curves.legend(handles=handles, fontsize=7)
    curves.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
