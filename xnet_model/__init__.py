"""xnet_model: the xNet dense-prediction network (pre-trained encoder x pre-trained decoder),
its training, evaluation, export and inference. Never imports ROS.

Every name is imported on first use: `import xnet_model` costs nothing, and loading a deploy
artifact (`Predictor("model_pt2/")`) never imports timm or builds the network.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "ConfigError": "config", "ModelConfig": "config", "resolve": "config",
    "load_model": "persistence", "model_digest": "persistence",
    "WeightsError": "weights",
    "XNet": "xnet", "build_model": "xnet",
    "Prediction": "predictor", "Predictor": "predictor",
    "ModelMetadata": "metadata",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'xnet_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
