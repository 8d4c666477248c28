"""metrics.jsonl (one JSON object per line) and optional TensorBoard scalars."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..metrics import json_safe

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """metrics.jsonl (one JSON object per line, flushed) and optional TensorBoard scalars."""

    def __init__(self, folder: Path | None, tensorboard: bool):
        self.path = folder / METRICS_FILE if folder is not None else None
        self.writer = None
        if folder is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                log.info("tensorboard not installed: scalars go to %s only", METRICS_FILE)
            else:
                self.writer = SummaryWriter(str(folder / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        if self.writer is not None:
            prefix = record.get("kind", "train")
            for key, value in _flatten(record).items():
                if key not in ("step", "kind") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
