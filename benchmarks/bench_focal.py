"""Metric depth through different lenses (issue 17): held-out synthetic scenes rendered with
horizontal fields of view of 40-90 degrees, scored with and without the camera's focal length.

Each model gets one row group: abs_rel and the median of GT / prediction per field of view,
`Predictor.predict(image)` ("no focal"), and either `predict(image, fx=K[0, 0])` (a
camera-aware model: "focal given") or the naive correction depth x fx / fx_train of a model
trained through one lens (fx_train: the 60-degree camera at the same image size). Depth is
scored at the rendered size, 1 mm to 10 m, all pixels (no crop); both statistics are means /
medians over scenes of the per-scene value. The target of the issue: with the focal given,
abs_rel at 40 and 90 degrees within 15 % of abs_rel at 60 degrees.

Run from the repository root:
``python -m benchmarks.bench_focal --model xnet_model/assets/demo_model [--model OTHER]
[--scenes 40] [--append docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xnet_model.data.synthetic import intrinsics, render_scene
from xnet_model.metrics import depth_metrics

FOVS = (40.0, 50.0, 60.0, 75.0, 90.0)
SCENES = 40
SEED_OFFSET = 2_000_000  # the demo model's held-out seeds (docs/demo_model.md)
SIZE = (240, 320)
TRAIN_FOV = 60.0  # the lens of a single-camera synthetic model (the naive correction's f_train)
MAX_DEPTH = 10.0
TOLERANCE = 0.15  # abs_rel at the ends within 15 % of abs_rel at TRAIN_FOV


@dataclass
class View:
    rgb: np.ndarray
    depth: np.ndarray
    fx: float


@dataclass
class Row:
    model: str
    mode: str  # "no focal" | "focal given" | "naive correction"
    abs_rel: dict[float, float] = field(default_factory=dict)
    median_ratio: dict[float, float] = field(default_factory=dict)  # GT / prediction

    def spread(self, reference: float = TRAIN_FOV) -> dict[float, float]:
        """abs_rel at each lens relative to abs_rel at `reference` (0.1 = 10 % worse)."""
        base = self.abs_rel[reference]
        return {fov: value / base - 1 for fov, value in self.abs_rel.items()}


def render_views(fovs=FOVS, scenes: int = SCENES, seed_offset: int = SEED_OFFSET,
                 size: tuple[int, int] = SIZE) -> dict[float, list[View]]:
    views = {}
    for fov in fovs:
        views[fov] = []
        for seed in range(seed_offset, seed_offset + scenes):
            frame = render_scene(seed, size[0], size[1], fov_deg=fov)
            views[fov].append(View(frame.rgb, frame.depth, float(frame.K[0, 0])))
    return views


def score(predictions: list[np.ndarray], views: list[View]) -> tuple[float, float]:
    """(mean abs_rel, median of the per-scene median GT / prediction) over the scenes."""
    abs_rel, ratios = [], []
    for pred, view in zip(predictions, views):
        abs_rel.append(depth_metrics(pred, view.depth, max_depth=MAX_DEPTH)["abs_rel"])
        valid = (view.depth > 1e-3) & (view.depth < MAX_DEPTH) & (pred > 0)
        ratios.append(float(np.median(view.depth[valid] / pred[valid])))
    return float(np.mean(abs_rel)), float(np.median(ratios))


def bench_model(path: str, views: dict[float, list[View]], label: str | None = None
                ) -> list[Row]:
    from xnet_model import Predictor

    if str(path).endswith(".pt"):  # a training checkpoint (best.pt / last.pt)
        from xnet_model.train.checkpoint import model_from_checkpoint

        predictor = Predictor(model_from_checkpoint(path)[0])
    else:
        predictor = Predictor(path)
    label = label or Path(path).name
    aware = predictor.meta.canonical_focal is not None
    plain, second = Row(label, "no focal"), Row(label, "focal given" if aware
                                                else "naive correction")
    for fov, group in views.items():
        f_train = intrinsics(*group[0].depth.shape, TRAIN_FOV)[0, 0]
        raw = [predictor.predict(v.rgb).depth for v in group]
        if aware:  # what predict(rgb, fx=...) returns, without a second forward pass
            scales = predictor.depth_scales([v.rgb for v in group], [v.fx for v in group])
            corrected = [d * k for d, k in zip(raw, scales)]
        else:
            corrected = [d * np.float32(v.fx / f_train) for d, v in zip(raw, group)]
        for row, preds in ((plain, raw), (second, corrected)):
            row.abs_rel[fov], row.median_ratio[fov] = score(preds, group)
    return [plain, second]


def markdown(rows: list[Row]) -> str:
    fovs = list(rows[0].abs_rel)
    head = " | ".join(f"{fov:g}°" for fov in fovs)
    lines = [f"| model | focal | statistic | {head} |",
             "|---|---|---|" + "---:|" * len(fovs)]
    for row in rows:
        lines.append(f"| {row.model} | {row.mode} | abs_rel | "
                     + " | ".join(f"{row.abs_rel[f]:.3f}" for f in fovs) + " |")
        lines.append(f"| {row.model} | {row.mode} | median GT / prediction | "
                     + " | ".join(f"{row.median_ratio[f]:.2f}" for f in fovs) + " |")
    return "\n".join(lines)


def verdict(rows: list[Row], baseline_60: float | None = None) -> str:
    """The issue's target for each camera-aware row."""
    out = []
    for row in rows:
        if row.mode != "focal given" or TRAIN_FOV not in row.abs_rel:
            continue
        spread = row.spread()
        ends = {fov: spread[fov] for fov in (min(spread), max(spread))}
        ok = all(abs(v) <= TOLERANCE for v in ends.values())
        text = ", ".join(f"{fov:g}° {v:+.0%}" for fov, v in ends.items())
        line = (f"- {row.model}, focal given: abs_rel vs {TRAIN_FOV:g}°: {text} "
                f"(target within ±{TOLERANCE:.0%}: {'met' if ok else 'missed'})")
        if baseline_60 is not None:
            at_60 = row.abs_rel[TRAIN_FOV]
            line += (f"; {TRAIN_FOV:g}° abs_rel {at_60:.3f} vs {baseline_60:.3f} before "
                     f"({'no worse' if at_60 <= baseline_60 else 'worse'})")
        out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="a saved model or deploy artifact directory, or a training "
                             "checkpoint .pt (repeatable); "
                             "LABEL=DIR names its rows")
    parser.add_argument("--scenes", type=int, default=SCENES)
    parser.add_argument("--seed-offset", type=int, default=SEED_OFFSET)
    parser.add_argument("--fovs", default=",".join(f"{f:g}" for f in FOVS),
                        help="horizontal fields of view in degrees, comma-separated; "
                             f"must include {TRAIN_FOV:g}")
    parser.add_argument("--append", help="append the section to this Markdown report")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--notes", default="", help="a paragraph under the command")
    args = parser.parse_args(argv)
    fovs = tuple(float(f) for f in args.fovs.split(","))
    if TRAIN_FOV not in fovs:
        parser.error(f"--fovs must include {TRAIN_FOV:g}")
    views = render_views(fovs, args.scenes, args.seed_offset)
    rows: list[Row] = []
    for spec in args.model:
        label, sep, path = spec.partition("=")
        rows += bench_model(path if sep else label, views, label if sep else None)
    before = [r.abs_rel[TRAIN_FOV] for r in rows if r.mode == "no focal"]
    table = markdown(rows) + "\n\n" + verdict(rows, before[0] if len(before) > 1 else None)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    if args.append:
        from xnet_model.runtime.bench import append_report, report_section

        command = "python -m benchmarks.bench_focal " + " ".join(argv or sys.argv[1:])
        title = (f"Metric depth through different lenses: {args.scenes} held-out synthetic "
                 f"scenes per lens, {SIZE[1]}x{SIZE[0]}")
        append_report(args.append, report_section(title, table, command, args.notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
