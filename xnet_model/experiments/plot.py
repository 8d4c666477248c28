"""One PNG per result group: final metrics (mean ± std bars, one dot per seed) on the top row,
mean evaluation curves over training steps below."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import PERCENT, _title


def plot_group(group: dict[str, Any], path: str | Path, dpi: int = 72) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    metrics, rows = group["metrics"], group["rows"]
    cols = len(metrics) + 1  # the last column: legend above, training loss below
    fig, axes = plt.subplots(2, cols, figsize=(3.4 * cols, 6.4), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    labels = [r["label"] for r in rows]
    for j, metric in enumerate(metrics):
        scale = 100.0 if metric in PERCENT else 1.0
        ax = axes[0][j]
        for i, row in enumerate(rows):
            s = row["metrics"].get(metric)
            if s is None:
                continue
            ax.bar(i, s["mean"] * scale, yerr=(s["std"] or 0.0) * scale, capsize=3,
                   color=colors[i % 10], alpha=0.75)
            ax.plot([i] * len(s["values"]), [v * scale for v in s["values"]], "k.", ms=4)
        ax.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=8)
        ax.set_title(_title(metric), fontsize=10)
        values = [v * scale for r in rows for v in r["metrics"].get(metric, {}).get("values", [])]
        if values:  # zoom on the range the rows span
            lo, hi = min(values), max(values)
            pad = 0.25 * (hi - lo) + 1e-6
            ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        ax = axes[1][j]
        for i, row in enumerate(rows):
            curve = row["curves"].get(metric) or []
            if curve:
                ax.plot([p[0] for p in curve], [p[1] * scale for p in curve],
                        color=colors[i % 10], label=row["label"], lw=1.5)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_title(f"{_title(metric)} (held-out, mean of seeds)", fontsize=9)
        ax.tick_params(labelsize=8)
    ax = axes[1][-1]
    losses = [(i, row["curves"].get("train_loss") or []) for i, row in enumerate(rows)]
    for i, curve in losses:
        if curve:
            ax.plot([p[0] for p in curve], [p[1] for p in curve], color=colors[i % 10], lw=1)
    if any(curve for _, curve in losses):
        ax.set_xlabel("training step", fontsize=8)
        ax.set_title("training loss (mean of seeds)", fontsize=9)
        ax.tick_params(labelsize=8)
    else:  # e.g. a classifier group, or runs logged without training losses
        ax.axis("off")
    handles = [matplotlib.patches.Patch(color=colors[i % 10], label=label)
               for i, label in enumerate(labels)]
    axes[0][-1].axis("off")
    axes[0][-1].legend(handles=handles, fontsize=8, loc="center", frameon=False)
    fig.suptitle(group["title"], fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
