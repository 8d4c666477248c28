"""Version tolerance (torch 2.4 - 2.14, timm 1.0.x): version parsing, support ranges, and a
static check that APIs newer than torch 2.4 are only used behind the guards in compat.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import xnet_model
from xnet_model.runtime import compat

PACKAGE = Path(xnet_model.__file__).resolve().parent
# torch APIs newer than 2.4 that xnet_model must not use unguarded (release that added them)
NEWER_THAN_2_4 = {
    "torch.accelerator": "2.6", "set_stance": "2.6", "export_for_training": "2.5",
    "flex_attention": "2.5", "draft_export": "2.7", "triton_op": "2.6",
    "recompile_limit": "2.6", "torch.uint32": "2.3 dtype with few ops before 2.6",
}
# token in the code -> the guard that must be called in the same file
GUARD_TOKENS = {"move_to_device_pass": "move_program_to_device", "dynamo=True":
                "onnx_dynamo_problem"}


def code_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "compat.py")


def strip_docstrings_and_comments(text: str) -> str:
    text = re.sub(r'"""(.|\n)*?"""', "", text)
    return re.sub(r"#.*", "", text)


@pytest.mark.parametrize(("text", "expected"), [
    ("2.11.0+cu128", (2, 11, 0)), ("2.4.1", (2, 4, 1)), ("1.0.31", (1, 0, 31)),
    ("2.14", (2, 14)), ("2.6.0a0+git1234", (2, 6, 0)), (None, ()), ("nightly", ())])
def test_version_tuple(text, expected):
    assert compat.version_tuple(text) == expected


def test_support_ranges():
    assert compat.support_problem("torch", "2.4.0", compat.SUPPORTED_TORCH) is None
    assert compat.support_problem("torch", "2.14.1+cu130", compat.SUPPORTED_TORCH) is None
    assert compat.support_problem("torch", "2.11.0", compat.SUPPORTED_TORCH) is None
    assert "outside the supported range 2.4 - 2.14" in compat.support_problem(
        "torch", "2.3.1", compat.SUPPORTED_TORCH)
    assert "outside" in compat.support_problem("timm", "0.9.16", compat.SUPPORTED_TIMM)
    assert compat.support_problem("timm", "1.0.31", compat.SUPPORTED_TIMM) is None
    assert compat.support_problem("timm", None, compat.SUPPORTED_TIMM) == "timm is not installed"


def test_guarded_apis_are_only_used_behind_their_guard():
    assert set(GUARD_TOKENS.values()) == {g for _, g in compat.GUARDED.values()}
    for path in code_files():
        code = strip_docstrings_and_comments(path.read_text())
        for token, guard in GUARD_TOKENS.items():
            if token in code:
                assert guard in code, f"{path.name} uses {token} without compat.{guard}"
        for api in NEWER_THAN_2_4:
            assert api not in code, f"{path.relative_to(PACKAGE)} uses {api} (newer than 2.4)"


def test_onnx_guard_and_device_move_on_this_torch():
    assert compat.onnx_dynamo_problem() is None  # the pinned torch has dynamo=True
    ep = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), strict=False)
    moved = compat.move_program_to_device(ep, torch.device("cpu"))
    assert isinstance(moved, torch.export.ExportedProgram)


def test_onnx_guard_names_the_version_on_an_old_torch(monkeypatch):
    def old_export(model, args, f, export_params=True, verbose=False):  # torch 2.4's shape
        pass

    monkeypatch.setattr(torch.onnx, "export", old_export)
    assert "needs torch >= 2.5" in compat.onnx_dynamo_problem()
    from xnet_model.runtime.export import ExportError, export_onnx

    with pytest.raises(ExportError, match="needs torch >= 2.5"):
        export_onnx(torch.nn.Linear(2, 2), "/nonexistent/x.onnx", 32, 32)


def test_triton_is_hidden_only_while_loading_without_cuda(monkeypatch):
    import sys

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    with compat.triton_hidden_without_cuda(), pytest.raises(ImportError):
        import triton  # noqa: F401
    assert "triton" not in sys.modules  # importable again afterwards
