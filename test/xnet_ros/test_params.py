"""Parameter schema of xnet_node (no ROS): defaults valid, each bad value names its parameter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from xnet_ros.params import (
    CONFIGURE,
    STARTUP,
    ModelPathError,
    NodeParams,
    markdown_table,
    param_specs,
    resolve_model_path,
)


def test_defaults_are_valid_and_documented():
    assert NodeParams().validate() == []
    specs = param_specs()
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert s.description and s.description.endswith("."), s.name
        assert isinstance(s.default, s.type), s.name
        assert s.check(s.default) is None, s.name
    table = markdown_table()
    assert all(f"`{s.name}`" in table for s in specs)


def test_read_only_and_configure_time_parameters():
    by_name = {s.name: s for s in param_specs()}
    assert by_name["autostart"].read_only and by_name["autostart"].when == STARTUP
    for name in ("model", "backend", "device", "image_transport", "input_qos", "output_qos"):
        assert by_name[name].when == CONFIGURE and not by_name[name].read_only
    assert not by_name["points_stride"].read_only


@pytest.mark.parametrize("name, value", [
    ("precision", "fp8"),
    ("image_transport", "theora"),
    ("input_qos", "fast"),
    ("output_qos", ""),
    ("output_width", -1),
    ("output_height", 100000),
    ("min_depth", -0.5),
    ("points_stride", 0),
    ("points_stride", 65),
    ("points_max_range", -1.0),
    ("points_max_range", math.nan),
    ("fx", -1.0),
    ("cy", -2.0),
    ("error_throttle_sec", -1.0),
    ("diagnostics_period", 0.0),
    ("log_period", 1e9),
    ("device", "gpu"),
    ("device", "cuda:x"),
    ("backend", ""),
    ("backend", "Torch RT"),
    # wrong types
    ("points_stride", 2.0),
    ("points_stride", True),
    ("lazy", "yes"),
    ("fx", "500"),
    ("model", 3),
])
def test_invalid_value_is_rejected_with_its_name(name, value):
    errors = NodeParams(**{name: value}).validate()
    assert errors, f"{name}={value!r} accepted"
    assert errors[0].name == name and str(errors[0]).startswith(f"{name}: "), errors


@pytest.mark.parametrize("changes, name", [
    ({"output_width": 640}, "output_height"),
    ({"output_height": 480}, "output_width"),
    ({"fx": 500.0}, "fy"),
    ({"fy": 500.0}, "fx"),
])
def test_pairs_must_be_set_together(changes, name):
    errors = NodeParams(**changes).validate()
    assert len(errors) == 1 and errors[0].name == name, errors
    assert str(errors[0]).startswith(f"{name}: must be set together with "), errors


def test_valid_non_defaults():
    p = NodeParams(output_width=640, output_height=480, fx=500.0, fy=501.0, cx=320.0,
                   device="cuda:1", backend="onnxruntime", image_transport="compressed",
                   input_qos="reliable", points_stride=64, points_max_range=20.0)
    assert p.validate() == []
    assert p.output_size == (480, 640) and p.has_intrinsics
    assert NodeParams().output_size is None and not NodeParams().has_intrinsics


def test_from_mapping_coerces_ints_and_reports_unknown_and_wrong_types():
    p, errors = NodeParams.from_mapping({"fx": 500, "fy": 500, "lazy": False, "typo": 1,
                                         "points_stride": "2"})
    assert p.fx == 500.0 and isinstance(p.fx, float) and p.lazy is False
    assert p.points_stride == NodeParams().points_stride  # default kept for the bad value
    assert sorted(e.name for e in errors) == ["points_stride", "typo"]
    assert str(sorted(errors)[1]) == "typo: unknown parameter of xnet_node"


def test_model_path_resolution(tmp_path, monkeypatch):
    assert resolve_model_path(str(tmp_path)) == tmp_path
    with pytest.raises(ModelPathError, match=r"^model: .* does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ModelPathError, match=r"^model: .* not a directory"):
        resolve_model_path(str(f))
    # '' = the demo model committed in this source tree (the tests import the package from it)
    demo = Path(__file__).resolve().parents[2] / "xnet_model" / "assets" / "demo_model"
    default = resolve_model_path("")
    assert default.parts[-3:] == ("xnet_model", "assets", "demo_model")
    assert default.resolve() == demo
    assert (default / "config.json").is_file() and (default / "model.safetensors").is_file()
    # a demo model missing from an installation is reported with its path
    import xnet_ros.params

    monkeypatch.setattr(xnet_ros.params, "default_model_dir", lambda: tmp_path / "gone")
    with pytest.raises(ModelPathError) as info:
        resolve_model_path("")
    assert str(info.value).startswith("model: '' (the packaged demo model")
    assert str(tmp_path / "gone") in str(info.value)


def test_docs_list_every_parameter():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "node.md").read_text()
    missing = [s.name for s in param_specs() if f"`{s.name}`" not in docs]
    assert not missing, f"docs/node.md does not document {missing}"


def test_updated_returns_name_message_pairs():
    """A `ros2 param set` on a running node, decided without ROS."""
    p = NodeParams()
    new, errors, pending = p.updated({"points_stride": 4}, configured=True)
    assert (new.points_stride, errors, pending) == (4, [], [])
    new, errors, pending = p.updated({"model": "/m", "points_stride": 3}, configured=True)
    assert new is p and [e.name for e in errors] == ["model"] and pending == []
    assert errors[0].message.startswith("applied at configure; deactivate and clean up")
    assert p.updated({"model": "/m"}, configured=False)[0].model == "/m"
    new, errors, _ = p.updated({"points_stride": 0, "lazy": False}, configured=False)
    assert new is p and [str(e) for e in errors] == ["points_stride: 0 is out of range [1, 64]"]
    # half a pair: accepted, reported as pending, named by the parameter still unset
    new, errors, pending = p.updated({"fx": 500.0}, configured=True)
    assert new.fx == 500.0 and errors == [] and [e.name for e in pending] == ["fy"]
    new, errors, pending = new.updated({"fy": 400.0}, configured=True)
    assert (new.fx, new.fy, errors, pending) == (500.0, 400.0, [], [])
    # an unrelated change does not repeat the warning of an incomplete pair
    half = p.replace(output_width=320)
    assert half.updated({"frame_id": "x"}, configured=True)[2] == []


@pytest.mark.parametrize("cameras, max_batch, expected", [
    ([], 0, 1), ([], 4, 1),  # a single-camera node never batches (nor splits its threads)
    (["a", "b", "c"], 0, 3), (["a", "b", "c"], 2, 2), (["a", "b", "c"], 8, 3),
])
def test_batch_size_is_max_batch_up_to_one_frame_per_camera(cameras, max_batch, expected):
    assert NodeParams(cameras=cameras, max_batch=max_batch).batch_size == expected
