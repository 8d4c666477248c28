"""Evaluation report: metrics.json, report.md and PNG plots (matplotlib, Agg, no pyplot state)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xnet_model.metrics import DEPTH_METRIC_KEYS, json_safe

from ..colorize import colorize_depth, colorize_labels

ABS_REL_PLOT = "abs_rel_over_time.png"
ERROR_HISTOGRAM = "error_histogram.png"
SPARSE_GT = 0.3  # below this fraction of valid pixels, GT is dilated for display
METRIC_TITLES = {"abs_rel": "AbsRel", "sq_rel": "SqRel", "rmse": "RMSE", "rmse_log": "RMSElog",
                 "log10": "log10", "silog": "SILog", "d1": "δ<1.25", "d2": "δ<1.25²",
                 "d3": "δ<1.25³"}


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


class ReportWriter:
    """Collects panels while the evaluation runs, then writes plots, metrics.json, report.md."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.panels: list[str] = []
        self.plots: list[tuple[str, str]] = []  # (file, caption)

    # -- panels -----------------------------------------------------------------------------

    def panel(self, index: int, rgb: np.ndarray, gt_depth: np.ndarray | None,
              pred_depth: np.ndarray | None, gt_labels: np.ndarray | None,
              pred_labels: np.ndarray | None, min_depth: float, max_depth: float,
              palette: np.ndarray) -> None:
        """RGB | GT | prediction | error, for depth and/or labels, as panel_<index>.png."""
        tiles: list[tuple[str, np.ndarray | None]] = [("RGB", rgb)]
        if pred_depth is not None:
            tiles += [("GT depth", None if gt_depth is None else _show_depth(
                          gt_depth, min_depth, max_depth)),
                      ("predicted depth", colorize_depth(pred_depth, min_depth, max_depth)),
                      ("|pred - GT| depth", None if gt_depth is None else _depth_error(
                          pred_depth, gt_depth, min_depth, max_depth))]
        if pred_labels is not None:
            tiles += [("GT labels", None if gt_labels is None else
                       colorize_labels(gt_labels, palette)),
                      ("predicted labels", colorize_labels(pred_labels, palette)),
                      ("label errors (red)", None if gt_labels is None else
                       _label_errors(pred_labels, gt_labels, len(palette)))]
        height, width = rgb.shape[:2]
        cols = 2 if width > 1.6 * height else 4
        rows = math.ceil(len(tiles) / cols)
        tile_w = 6.0 if cols == 2 else 3.5
        fig = Figure(figsize=(tile_w * cols, rows * (tile_w * height / width + 0.4)))
        for i, (title, image) in enumerate(tiles):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.set_axis_off()
            ax.set_title(title if image is not None else f"{title}: no ground truth",
                         fontsize=9)
            if image is not None:
                ax.imshow(image, interpolation="nearest")
        fig.suptitle(f"frame {index}", fontsize=10)
        fig.tight_layout()
        name = f"panel_{index:06d}.png"
        _save(fig, self.directory / name)
        self.panels.append(name)

    # -- final outputs ----------------------------------------------------------------------

    def write(self, doc: dict[str, Any], frames: list[dict[str, Any]],
              errors: list[np.ndarray]) -> None:
        if doc.get("depth") is not None and self._plot_abs_rel(frames):
            self.plots.append((ABS_REL_PLOT, "AbsRel per frame (x: frames without GT depth)"))
        if errors and self._plot_error_histogram(np.concatenate(errors)):
            self.plots.append((ERROR_HISTOGRAM, "signed depth error pred - GT on valid pixels"))
        doc["files"] = {"plots": [name for name, _ in self.plots], "panels": list(self.panels)}
        (self.directory / "metrics.json").write_text(
            json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        (self.directory / "report.md").write_text(self._markdown(doc))

    def _plot_abs_rel(self, frames: list[dict[str, Any]]) -> bool:
        if not frames:
            return False
        t0 = min(f["stamp_ns"] for f in frames)
        seconds = np.array([(f["stamp_ns"] - t0) / 1e9 for f in frames])
        values = np.array([f["depth"]["abs_rel"] if f.get("depth") else np.nan for f in frames])
        order = np.argsort(seconds, kind="stable")
        seconds, values = seconds[order], values[order]
        fig = Figure(figsize=(8, 3.2))
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(seconds, values, marker=".", linewidth=1)
        missing = np.isnan(values)
        if missing.any():
            ax.plot(seconds[missing], np.zeros(missing.sum()), "rx", label="no GT / no valid px")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel("time since first frame [s] (header stamp)")
        ax.set_ylabel("AbsRel")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        _save(fig, self.directory / ABS_REL_PLOT)
        return True

    def _plot_error_histogram(self, errors: np.ndarray) -> bool:
        errors = errors[np.isfinite(errors)]
        if errors.size == 0:
            return False
        lo, hi = np.percentile(errors, [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        fig = Figure(figsize=(6, 3.2))
        ax = fig.add_subplot(1, 1, 1)
        ax.hist(errors, bins=100, range=(lo, hi), color="tab:blue")
        ax.axvline(0.0, color="k", linewidth=0.8)
        ax.set_xlabel("pred - GT [m] (0.5-99.5 percentile range)")
        ax.set_ylabel("pixels (sampled)")
        ax.set_title(f"mean {errors.mean():+.3f} m, median {np.median(errors):+.3f} m, "
                     f"n={errors.size}", fontsize=9)
        fig.tight_layout()
        _save(fig, self.directory / ERROR_HISTOGRAM)
        return True

    def _markdown(self, doc: dict[str, Any]) -> str:
        s, c = doc["settings"], doc["counts"]
        match = (f"nearest header stamp within ±{s['tolerance_ms']:g} ms"
                 if s["match"] == "nearest" else "equal header stamps")
        lines = ["# xNet bag evaluation", "",
                 f"- bag: `{doc['bag']}`",
                 f"- model: `{doc['model']['name']}` (`{doc['model']['path']}`)",
                 f"- images: `{s['image_topic']}` (every {s['every']})",
                 f"- GT depth: `{s['depth_topic']}`" if s["depth_topic"] else "- GT depth: none",
                 f"- GT labels: `{s['labels_topic']}`" if s["labels_topic"]
                 else "- GT labels: none",
                 f"- matching: {match}",
                 f"- depth range: {s['min_depth']:g}-{s['max_depth']:g} m, crop: {s['crop']}",
                 ""]
        if doc.get("read_error"):
            lines += [f"> **Incomplete:** the bag could not be read to the end "
                      f"({doc['read_error']}); results cover the frames read before.", ""]
        lines += ["## Counts", "",
                  "| images | matched | partial GT | without GT | failed to decode |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {c['images']} | {c['matched']} | {c['partial']} | {c['without_gt']} "
                  f"| {c['failed']} |", ""]
        if doc.get("depth") is not None:
            depth = doc["depth"]
            lines += [f"## Depth (mean over {depth['count']} images)", "",
                      "| " + " | ".join(METRIC_TITLES[k] for k in DEPTH_METRIC_KEYS) + " |",
                      "|" + "---:|" * len(DEPTH_METRIC_KEYS),
                      "| " + " | ".join(_fmt(depth.get(k)) for k in DEPTH_METRIC_KEYS) + " |",
                      ""]
            if c["depth"].get("no_valid_pixels"):
                lines += [f"{c['depth']['no_valid_pixels']} matched frame(s) had no valid GT "
                          "pixel and are not in the mean.", ""]
        if doc.get("segmentation") is not None:
            seg = doc["segmentation"]
            lines += ["## Segmentation", "",
                      "| mIoU | mAcc | aAcc |", "|---:|---:|---:|",
                      f"| {_fmt(seg['mIoU'])} | {_fmt(seg['mAcc'])} | {_fmt(seg['aAcc'])} |", "",
                      "| id | class | IoU | Acc |", "|---:|---|---:|---:|"]
            lines += [f"| {x['id']} | {x['name']} | {_fmt(x['IoU'])} | {_fmt(x['Acc'])} |"
                      for x in seg["classes"]]
            lines.append("")
        if self.plots or self.panels:
            lines += ["## Plots", ""]
            lines += [f"![{caption}]({name})\n" for name, caption in self.plots]
            lines += [f"![{name}]({name})\n" for name in self.panels]
        missing = [f for f in doc["frames"] if f["gt"] != "matched"]
        if missing:
            lines += ["## Frames without (complete) ground truth", "",
                      "| frame | stamp [ns] | GT |", "|---:|---:|---|"]
            lines += [f"| {f['index']} | {f['stamp_ns']} | {f['gt']} |" for f in missing[:100]]
            if len(missing) > 100:
                lines.append(f"\n… and {len(missing) - 100} more (see metrics.json).")
            lines.append("")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}"


def _show_depth(gt: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """GT depth colourised; sparse GT (LiDAR) dilated so that it is visible."""
    valid = np.isfinite(gt) & (gt > 0)
    if valid.mean() < SPARSE_GT:
        filled = cv2.dilate(np.where(valid, gt, 0).astype(np.float32), np.ones((5, 5), np.uint8))
        gt = np.where(valid, gt, filled)
    return colorize_depth(gt, min_depth, max_depth)


def _depth_error(pred: np.ndarray, gt: np.ndarray, min_depth: float,
                 max_depth: float) -> np.ndarray:
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    error = np.where(valid, np.abs(np.clip(np.nan_to_num(pred, nan=min_depth), min_depth,
                                           max_depth) - np.where(valid, gt, 0)), 0)
    error = error.astype(np.float32)
    scale = float(np.percentile(error[valid], 95)) if valid.any() else 1.0
    level = np.clip(error / max(scale, 1e-6) * 255, 0, 255).astype(np.uint8)
    if valid.mean() < SPARSE_GT:
        level = cv2.dilate(level, np.ones((5, 5), np.uint8))
        valid = cv2.dilate(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    rgb = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def _label_errors(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    labelled = (gt != 255) & (gt < num_classes)
    out = np.zeros(gt.shape + (3,), dtype=np.uint8)
    out[labelled & (pred == gt)] = (40, 160, 40)
    out[labelled & (pred != gt)] = (230, 30, 30)
    return out
