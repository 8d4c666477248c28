"""Aggregating finished runs: mean and spread over seeds, differences against a baseline row,
mean curves, and the JSON / CSV / Markdown summaries.

Spread is the sample standard deviation over seeds (n - 1 in the denominator). A difference
against the baseline is called real (`beyond_spread`) only when |difference of the means| is
larger than the sum of the two rows' standard deviations; with one seed nothing is.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from .plan import Plan, expand, group_rows
from .runner import atomic_write_json

LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}
PERCENT = {"mIoU", "mAcc", "aAcc", "accuracy", "balanced_accuracy"}  # shown x100, 1 decimal


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def compare(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Difference of means (row - baseline), the spread it is judged against, the verdict."""
    diff = row["mean"] - base["mean"]
    if row["std"] is None or base["std"] is None:
        return {"diff": diff, "spread": None, "beyond_spread": False}
    spread = row["std"] + base["std"]
    return {"diff": diff, "spread": spread, "beyond_spread": abs(diff) > spread}


def _mean_curve(results: list[dict[str, Any]], metric: str,
                kind: str = "eval") -> list[list[float]]:
    """[[step, mean over the seeds that have it], ...] of an evaluation metric (or, with
    kind='train', of the logged training loss 'loss')."""
    by_step: dict[int, list[float]] = {}
    for r in results:
        for point in r.get("curves", {}).get(kind, []):
            value = point.get(metric)
            if isinstance(value, int | float) and math.isfinite(value):
                by_step.setdefault(int(point["step"]), []).append(float(value))
    return [[s, sum(v) / len(v)] for s, v in sorted(by_step.items())]


def aggregate(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per group: one row per run (plan order) with each metric's mean, std and seed values,
    the comparison with the group's baseline, and mean evaluation curves."""
    per_run: dict[str, list[dict[str, Any]]] = {}
    for job in expand(plan):
        if job.id in results:
            per_run.setdefault(job.spec.name, []).append(results[job.id])
    groups: dict[str, Any] = {}
    for gname, group in plan.groups.items():
        rows = []
        for run in group_rows(plan, gname):
            done = per_run.get(run.name, [])
            row: dict[str, Any] = {"name": run.name, "label": run.label or run.name,
                                   "seeds": [r["seed"] for r in done], "n": len(done),
                                   "metrics": {}, "curves": {}}
            for metric in group.metrics:
                values = [float(r["metrics"][metric]) for r in done
                          if isinstance(r["metrics"].get(metric), int | float)]
                if values:
                    mean, std = mean_std(values)
                    row["metrics"][metric] = {"mean": mean, "std": std, "values": values}
                row["curves"][metric] = _mean_curve(done, metric)
            row["curves"]["train_loss"] = _mean_curve(done, "loss", "train")
            rows.append(row)
        base = next((r for r in rows if r["name"] == group.baseline), None)
        for row in rows:
            if base is None or row is base:
                continue
            row["vs_baseline"] = {m: compare(row["metrics"][m], base["metrics"][m])
                                  for m in group.metrics
                                  if m in row["metrics"] and m in base["metrics"]}
        groups[gname] = {"title": group.title, "metrics": group.metrics,
                         "baseline": group.baseline, "rows": rows}
    return {"plan": plan.name, "groups": groups}


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if metric in PERCENT else f"{value:.3f}"


def cell(stats: dict[str, Any] | None, metric: str) -> str:
    """'mean ± std' (fractions such as mIoU / d1 / accuracy in %, depth errors as is)."""
    if stats is None:
        return "-"
    if stats["std"] is None:
        return _fmt(stats["mean"], metric)
    return f"{_fmt(stats['mean'], metric)} ± {_fmt(stats['std'], metric)}"


def markdown(summary: dict[str, Any]) -> str:
    """One Markdown table per group; Δ columns mark differences beyond the spread with '*'."""
    out = []
    for group in summary["groups"].values():
        metrics, baseline = group["metrics"], group["baseline"]
        head = ["row", "n"] + [_title(m) for m in metrics]
        if baseline:
            head += [f"Δ{_title(m)} vs {baseline}" for m in metrics]
        lines = [f"### {group['title']}", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join(["---", "---:"] + ["---:"] * (len(head) - 2)) + "|"]
        for row in group["rows"]:
            cells = [row["label"], str(row["n"])]
            cells += [cell(row["metrics"].get(m), m) for m in metrics]
            if baseline:
                for m in metrics:
                    c = row.get("vs_baseline", {}).get(m)
                    cells.append("" if c is None else _fmt_diff(c, m))
            lines.append("| " + " | ".join(cells) + " |")
        out += lines + [""]
    return "\n".join(out)


def _title(metric: str) -> str:
    name = {"d1": "δ1", "mIoU": "mIoU %", "aAcc": "aAcc %", "accuracy": "acc %",
            "balanced_accuracy": "bal. acc %"}.get(metric, metric)
    return name + (" ↓" if metric in LOWER_IS_BETTER else " ↑")


def _fmt_diff(c: dict[str, Any], metric: str) -> str:
    text = (f"{100 * c['diff']:+.1f}" if metric in PERCENT else f"{c['diff']:+.3f}")
    return text + ("*" if c["beyond_spread"] else "")


def to_csv(summary: dict[str, Any]) -> str:
    """group, row, label, n, metric, mean, std, values (one line per group x row x metric)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", "row", "label", "n", "metric", "mean", "std", "values",
                "diff_vs_baseline", "beyond_spread"])
    for gname, group in summary["groups"].items():
        for row in group["rows"]:
            for metric, s in row["metrics"].items():
                c = row.get("vs_baseline", {}).get(metric, {})
                w.writerow([gname, row["name"], row["label"], row["n"], metric,
                            f"{s['mean']:.6g}", "" if s["std"] is None else f"{s['std']:.6g}",
                            " ".join(f"{v:.6g}" for v in s["values"]),
                            "" if not c else f"{c['diff']:.6g}",
                            "" if not c else int(c["beyond_spread"])])
    return buf.getvalue()


def write_summary(summary: dict[str, Any], folder: str | Path,
                  stem: str = "summary") -> list[Path]:
    """<stem>.json (without curves: compact), <stem>.csv and <stem>.md in `folder`."""
    folder = Path(folder)
    compact = {**summary, "groups": {
        g: {**v, "rows": [{k: x for k, x in r.items() if k != "curves"} for r in v["rows"]]}
        for g, v in summary["groups"].items()}}
    paths = [folder / f"{stem}.json", folder / f"{stem}.csv", folder / f"{stem}.md"]
    atomic_write_json(compact, paths[0])
    paths[1].write_text(to_csv(summary))
    paths[2].write_text(markdown(summary))
    return paths
