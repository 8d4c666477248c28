"""xnet_model: the xNet dense-prediction network (pre-trained encoder x pre-trained decoder),
its training, evaluation, export and inference. Never imports ROS."""

from .config import ConfigError, ModelConfig, resolve
from .persistence import load_model, model_digest
from .weights import WeightsError
from .xnet import XNet, build_model

__all__ = [
    "ConfigError", "ModelConfig", "Prediction", "Predictor", "WeightsError", "XNet",
    "build_model", "load_model", "model_digest", "resolve",
]


def __getattr__(name: str):
    if name in ("Predictor", "Prediction"):  # lazy: keeps `import xnet_model` light
        from . import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
