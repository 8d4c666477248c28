"""Fixtures shared by the xnet_ros tests: a tiny random multi-task model (10 classes)."""

from pathlib import Path

import pytest

from xnet_model import Predictor, build_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "atto"
    build_model("atto_x_atto_multitask", data={"input_size": [32, 64]}).save(path)
    return path


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(model_dir)
