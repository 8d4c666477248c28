"""benchmarks/gpu_check.py stays runnable: its CPU `--quick` mode (what the GPU machine runs,
in miniature) writes the JSON and Markdown it promises, every step ok or skipped with a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_quick_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"),
                           "--device", "cpu", "--quick", "--out", str(out), "--budget", "900"],
                          capture_output=True, text=True, timeout=1000, cwd=tmp_path)
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["environment", "parity", "predictor_1080p", "batching",
                           "node_pipeline", "training", "gpu_tests",
                           "latency_eager", "latency_cudagraph", "latency_tensorrt",
                           "latency_inductor"]
    bad = {n: (s["status"], s["reason"], s.get("log_tail", "")[-800:])
           for n, s in steps.items() if s["status"] not in ("ok", "skipped")}
    assert not bad and proc.returncode == 0, (bad, proc.stdout[-2000:])
    for name in ("environment", "parity", "predictor_1080p", "batching", "node_pipeline",
                 "training", "gpu_tests", "latency_eager"):
        assert steps[name]["status"] == "ok", (name, steps[name]["reason"])
    assert all(s["reason"] for s in steps.values() if s["status"] == "skipped")
    assert report["device"] == "cpu" and report["quick"] is True
    assert report["elapsed_s"] <= report["budget_s"]

    env = steps["environment"]["result"]
    assert {r["name"] for r in env["rows"]} >= {"torch", "cuda", "engine cache", "model"}
    parity = {r["case"]: r for r in steps["parity"]["result"]["rows"]}
    assert parity["torch fp32"]["max_abs_m"] == 0.0 and parity["torch fp32"]["ok"]
    assert parity["torch bf16"]["ok"] and parity["torch bf16"]["label_agreement"] > 0.9
    (e2e,) = steps["predictor_1080p"]["result"]["rows"]
    assert e2e["network_size"] == "120x160" and e2e["total_ms"] > 0
    batching = steps["batching"]["result"]["rows"]
    assert [(r["model"], r["batch"]) for r in batching] == [("demo", 1), ("demo", 2)]
    assert batching[0]["gain"] == 1.0 and all(r["median_ms"] > 0 for r in batching)
    assert batching[1]["fps"] == pytest.approx(2e3 / batching[1]["median_ms"], rel=0.01)
    node = {r["mode"]: r for r in steps["node_pipeline"]["result"]["rows"]}
    assert set(node) == {"in turn", "overlapped"}
    assert all(r["frames"] >= 1 and r["fps"] > 0 and r["post_ms"] > 0 for r in node.values())
    training = steps["training"]["result"]
    assert training["returncode"] == 0 and training["process_group"] in ("gloo", None)
    assert "precision=fp32" in training["command"]  # quick: the wiring, not bf16 speed
    assert len(training["loss"]) == 3 and training["images_per_s"] > 0
    latency = steps["latency_eager"]["result"]["rows"]
    assert {(r["model"], r["backend"]) for r in latency} == {("demo", "torch"),
                                                             ("atto_x_atto", "torch")}
    assert all(r["median_ms"] > 0 and r["size"] == "64x96" for r in latency)
    assert "torch_tensorrt" in steps["latency_tensorrt"]["reason"] or \
        steps["latency_tensorrt"]["status"] == "ok"
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("## GPU check: cpu (--quick)")
    assert "### Batched forward (several cameras, one pass)" in md
    assert "### The node's frame path, 1920x1080 (no ROS)" in md
    assert "### Parity against CPU fp32" in md and "| demo | torch | 64x96 |" in md
