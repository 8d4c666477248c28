"""The Markdown section of a gpu_check.json report (benchmarks/gpu_check.py)."""

from __future__ import annotations


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return out


def _env(step: dict) -> list[str]:
    r = step.get("result", {})
    gpu = r.get("gpu") or {}
    lines = [f"- torch {r.get('torch', '?')} (CUDA {r.get('cuda')}, cuDNN {r.get('cudnn')})",
             f"- GPU: {gpu.get('name', 'none')}" + (
                 f" (sm {gpu['capability']}, {gpu['memory_gib']} GiB, {gpu['sms']} SMs)"
                 if gpu else "")]
    for row in r.get("rows", []):
        if row.get("ok") is False:
            lines.append(f"- no {row['name']}: {row.get('reason') or row.get('detail')}")
        elif row["name"] in ("auto would pick", "torch_tensorrt", "tensorrt", "onnxruntime-gpu"):
            lines.append(f"- {row['name']}: {row.get('detail')}")
    return lines


def _parity(step: dict) -> list[str]:
    r = step.get("result", {})
    rows = [[x["case"], x.get("device", ""), _fmt(x.get("max_abs_m"), 5),
             _fmt(x.get("mean_abs_m"), 5), _fmt(x.get("label_agreement"), 4),
             "ok" if x.get("ok") else f"NO {x.get('error', '')}"] for x in r.get("rows", [])]
    return [f"Reference: {r.get('reference')}, frame: {r.get('frame')}.", ""] + _table(
        ["case", "device", "max abs depth m", "mean abs depth m", "label agreement", ""], rows)


def _latency(steps: list[dict]) -> list[str]:
    rows = []
    for step in steps:
        for x in step.get("result", {}).get("rows", []):
            extra = x.get("paper", "")
            if x.get("build_s") is not None:
                extra = (f"build {x['build_s']:.1f} s, cache-hit load "
                         f"{_fmt(x.get('cache_hit_load_s'), 2)} s; " + extra)
            rows.append([x["model"], x["backend"], x.get("size", ""), _fmt(x.get("median_ms")),
                         _fmt(x.get("p90_ms")), _fmt(x.get("fps"), 2),
                         _fmt(x.get("peak_mem_mb"), 0), _fmt(x.get("init_s")),
                         (extra + " " + x.get("details", "")).strip()])
    if not rows:
        return ["No latency rows."]
    return _table(["model", "backend", "size", "median ms", "p90 ms", "FPS", "peak MB",
                   "init s", "notes"], rows)


def _predictor(step: dict) -> list[str]:
    r = step.get("result", {})
    rows = [[x["model"], x["network_size"], _fmt(x["pre_ms"]), _fmt(x["infer_ms"]),
             _fmt(x["post_ms"]), _fmt(x["total_ms"]), _fmt(x["fps"], 2), x["backend"]]
            for x in r.get("rows", [])]
    return [f"Input {r.get('input')}; post-processing: {r.get('postprocess')}.", ""] + _table(
        ["model", "network", "pre ms", "infer ms", "post ms", "total ms", "FPS", "backend"],
        rows)


def _batching(step: dict) -> list[str]:
    r = step.get("result", {})
    rows = [[x["model"], x["batch"], _fmt(x["median_ms"]), _fmt(x["fps"]), _fmt(x["gain"], 2),
             _fmt(x["peak_mem_mb"], 0), x["backend"]] for x in r.get("rows", [])]
    return [f"Input {r.get('input')}; gain = B x t(batch 1) / t(batch B).", ""] + _table(
        ["model", "batch", "ms per call", "frames/s", "gain", "peak MB", "backend"], rows)


def _node_pipeline(step: dict) -> list[str]:
    r = step.get("result", {})
    rows = [[x["mode"], _fmt(x["fps"]), _fmt(x["infer_ms"]), _fmt(x["post_ms"]), x["frames"]]
            for x in r.get("rows", [])]
    return [f"Input {r.get('input')}, on {r.get('backend')}; \"in turn\": outputs built and "
            "copied once after each forward pass; \"overlapped\": while the next one runs.",
            ""] + _table(["delivery", "frames/s", "infer ms", "post ms", "frames"], rows)


def _training(step: dict) -> list[str]:
    r = step.get("result", {})
    lines = [f"{r.get('steps')} steps {r.get('precision')} via torchrun (1 process, process "
             f"group: {r.get('process_group')}) in {r.get('seconds')} s: loss {r.get('loss')}, "
             f"{r.get('images_per_s')} images/s."]
    if r.get("process_group_note"):
        lines += ["", f"Note: {r['process_group_note']}."]
    return lines


def markdown(report: dict) -> str:
    steps = {s["name"]: s for s in report["steps"]}
    env = steps.get("environment", {}).get("result", {})
    gpu = (env.get("gpu") or {}).get("name") or report["device"]
    title = f"## GPU check: {gpu}" + (" (--quick)" if report.get("quick") else "")
    lines = [title, "", f"{report['started']}, `python3 benchmarks/gpu_check.py` "
             f"(device {report['device']}, budget {report['budget_s']:.0f} s, took "
             f"{report.get('elapsed_s')} s). Random weights except the demo model.", ""]
    lines += _table(["step", "status", "seconds", "reason"],
                    [[s["name"], s["status"], s["seconds"], s.get("reason", "")]
                     for s in report["steps"]])
    if "environment" in steps:
        lines += ["", "### Environment", ""] + _env(steps["environment"])
    if "parity" in steps:
        lines += ["", "### Parity against CPU fp32", ""] + _parity(steps["parity"])
    latency = [s for n, s in steps.items() if n.startswith("latency")]
    if latency:
        lines += ["", "### Latency (backend.infer, batch 1)", ""] + _latency(latency)
    if "predictor_1080p" in steps:
        lines += ["", "### Predictor end to end, 1920x1080", ""] + \
            _predictor(steps["predictor_1080p"])
    if "batching" in steps:
        lines += ["", "### Batched forward (several cameras, one pass)", ""] + \
            _batching(steps["batching"])
    if "node_pipeline" in steps:
        lines += ["", "### The node's frame path, 1920x1080 (no ROS)", ""] + \
            _node_pipeline(steps["node_pipeline"])
    if "training" in steps:
        lines += ["", "### Training", ""] + _training(steps["training"])
    if "gpu_tests" in steps:
        r = steps["gpu_tests"].get("result", {})
        lines += ["", "### gpu-marked tests", "", f"{r.get('counts')}"]
    return "\n".join(lines) + "\n"
