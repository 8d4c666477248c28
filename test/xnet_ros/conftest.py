"""Fixtures shared by the xnet_ros tests: a tiny random multi-task model (10 classes)."""

from pathlib import Path

import pytest
import torch

from xnet_model import Predictor, build_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "atto"
    torch.manual_seed(0)  # the same random weights in every run: tests compare its outputs
    build_model("atto_x_atto_multitask", data={"input_size": [32, 64]}).save(path)
    return path


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor(model_dir)


@pytest.fixture(params=["native", "numpy"])
def kernels(request):
    """Runs a test with the native post-processing kernels (skipped, with the reason, when the
    library is not built) and again with the numpy path they replace."""
    from xnet_ros import native

    if request.param == "numpy":
        with native.disabled():
            yield request.param
        return
    if not native.available():
        pytest.skip(native.status())
    yield request.param
