"""Loading a saved model directory (`XNet.save`) with no network access."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .config import ConfigError, ModelConfig, resolve
from .weights import WeightsError, load_state, read_checkpoint
from .xnet import CONFIG_FILE, WEIGHTS_FILE, XNet


def read_model_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"not a saved xNet model directory (no {CONFIG_FILE}): {directory}")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"corrupt model config {path}: {exc}") from exc
    return resolve(doc.get("model", doc))


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> XNet:
    """Rebuild a saved model: config.json -> architecture (no pretrained download), then the
    exact saved tensors (strict: a missing or mis-shaped tensor is an error naming it)."""
    directory = Path(directory)
    cfg = read_model_config(directory)
    cfg.encoder.pretrained = False  # every weight comes from the saved file
    cfg.decoder.pretrained = False
    model = XNet(cfg)
    state = read_checkpoint(directory / WEIGHTS_FILE)
    report = load_state(model, state, str(directory / WEIGHTS_FILE))
    if report.unexpected:
        raise WeightsError(f"saved weights do not fit the saved config: {report.summary()}")
    return model.to(device).eval()


def model_digest(directory: str | Path) -> str:
    """SHA-256 over the saved weights and config (cache keys for compiled engines)."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(Path(directory) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
