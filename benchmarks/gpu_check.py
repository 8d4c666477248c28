"""One prepared check of the CUDA / TensorRT path on a bare GPU machine: JSON + a Markdown section.

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--out DIR] [--budget 480] [--append FILE]
    python3 benchmarks/gpu_check.py --device cpu --quick          # what CI runs (~1 min)

Runs with whatever interpreter executes it (torch >= 2.4 and timm; no project venv, no ROS, no
network, random weights except the packaged demo model). Each step runs in its own process with
a timeout planned from the time budget (default 480 s = 8 min in all); a step that fails, hangs
or crashes is reported with its reason and log tail, and the rest still run. Steps write their
results incrementally, so a step that times out still reports what it finished. Steps:

  environment      `xnet doctor` rows, GPU, driver (nvidia-smi)
  parity           Predictor on the device in fp32 / fp16 / bf16 (+ pt2 artifact, TensorRT when
                   importable) against CPU fp32 on one synthetic frame
  predictor_1080p  Predictor end to end, uint8 1920x1080 in -> depth/labels out
  batching         predict_batch of B = 1, 2, 4, 8 frames at 480x640 (the multi-camera node's
                   one forward): ms per call, frames/s, gain B*t(1)/t(B), peak GPU memory
  node_pipeline    the node's frame path without ROS at 1920x1080, every output: frames/s and
                   post ms, outputs published in turn vs overlapped with the next forward pass
  training         60 bf16 steps through torchrun (1 process, nccl on CUDA): loss, images/s
  gpu_tests        the `gpu`-marked tests (if pytest imports)
  latency_eager    median / p90 ms, FPS, peak GPU memory at 480x640: eager fp16 and bf16 for
                   the demo model, atto_x_atto, convnextt_x_convnextt, swinl_x_convnextv2t_nyu
  latency_cudagraph  the same, eager fp16 replayed as a CUDA graph
  latency_tensorrt   TensorRT fp16 when torch_tensorrt imports: build time, cache-hit load
  latency_inductor   torch.compile (Inductor) fp16, smallest model first
The paper model's row carries the paper's Table 9 figure (5.21 FPS, RTX 2080 Super).

Output: <out>/gpu_check.json and <out>/gpu_check.md (default out: $OUT if set, else
./gpu_check_out); `--append docs/benchmarks.md` also appends the Markdown section there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # a plain checkout works without PYTHONPATH too
    sys.path.insert(0, str(REPO))

# name, planned seconds (cap) on a GPU, cap in --quick mode (CPU CI)
STEPS = [
    ("environment", 40, 45),
    ("parity", 60, 60),
    ("predictor_1080p", 45, 45),
    ("batching", 40, 30),
    ("node_pipeline", 45, 30),
    ("training", 100, 90),
    ("gpu_tests", 70, 60),
    ("latency_eager", 70, 60),
    ("latency_cudagraph", 60, 10),
    ("latency_tensorrt", 150, 10),
    ("latency_inductor", 180, 10),
]
MIN_STEP_S = 8  # a step is not started with less than this left
SCHEMA = 1


def run_step(name: str, cap: float, args, deadline: float, later_min: float,
             workdir: Path) -> dict:
    """Run one step in a child process with a planned timeout; never raises."""
    left = deadline - time.monotonic() - later_min
    timeout = min(cap, left)
    record = {"name": name, "status": "skipped", "seconds": 0.0, "timeout_s": round(timeout),
              "reason": "", "result": {}}
    skip = known_skip(name, args)
    if skip:
        record["reason"] = skip
        return record
    if timeout < MIN_STEP_S:
        record["reason"] = f"time budget exhausted ({max(left, 0):.0f} s left for this step)"
        return record
    result_file = workdir / f"{name}.json"
    log_file = workdir / f"{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--device",
           args.device, "--result", str(result_file), "--workdir", str(workdir)]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    t0 = time.monotonic()
    with open(log_file, "w") as log:
        # own process group: a timeout also ends what the step started (torchrun, pytest)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            kill_group(proc)
    record["seconds"] = round(time.monotonic() - t0, 1)
    try:
        record["result"] = json.loads(result_file.read_text())
    except (OSError, ValueError):
        record["result"] = {}
    tail = log_file.read_text(errors="replace")[-3000:]
    status = record["result"].pop("_status", None)
    reason = record["result"].pop("_reason", "")
    if rc is None:
        record["status"], record["reason"] = "timeout", \
            f"stopped after {timeout:.0f} s (planned cap {cap:.0f} s); partial results kept"
        record["log_tail"] = tail
    elif rc != 0 or status is None:
        record["status"] = "failed"
        record["reason"] = reason or f"exit code {rc}: " + (tail.strip().splitlines() or [""])[-1]
        record["log_tail"] = tail
    else:
        record["status"], record["reason"] = status, reason
        if status == "failed":
            record["log_tail"] = tail
    return record


def known_skip(name: str, args) -> str | None:
    """Why a step cannot run here, when that is clear without starting it (saves a process
    start and a torch import each)."""
    import importlib.util

    if name == "latency_cudagraph" and not args.device.startswith("cuda"):
        return "CUDA graphs need a CUDA device"
    if name == "latency_inductor" and args.quick and not args.device.startswith("cuda"):
        return "Inductor compiles for minutes on a CPU; run without --quick on a GPU"
    if name == "latency_tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not installed"
    if name == "gpu_tests" and importlib.util.find_spec("pytest") is None:
        return "pytest is not importable"
    if name == "node_pipeline" and importlib.util.find_spec("cv2") is None:
        return "the node's outputs need OpenCV (cv2), which is not installed"
    return None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the step's whole process group (leader and children)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if sig == signal.SIGTERM:
            time.sleep(1)  # let children of an exited leader finish too


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "executable": sys.executable, "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"unavailable: {exc}"
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and iterations (CI)")
    p.add_argument("--out", type=Path, default=None, help="output directory")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for everything (default 480; --quick 240)")
    p.add_argument("--only", help="comma-separated step names to run")
    p.add_argument("--append", type=Path, help="also append the Markdown section to this file")
    # internal: run one step in this process
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        from benchmarks.gpu_check_steps import run_in_process

        return run_in_process(args.step, args.device, args.quick, args.result, args.workdir)

    t_start = time.monotonic()
    default_budget = 240.0 if args.quick else 480.0
    budget = args.budget or default_budget
    deadline = t_start + budget - 5  # the report itself
    out = args.out or Path(os.environ.get("OUT") or "gpu_check_out")
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "steps"
    workdir.mkdir(exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    scale = max(1.0, budget / default_budget)  # a larger budget (slow machine) widens caps
    steps = [(n, (q if args.quick else c) * scale) for n, c, q in STEPS
             if only is None or n in only]
    report = {"schema": SCHEMA, "script": "benchmarks/gpu_check.py",
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "device": args.device, "quick": args.quick, "budget_s": budget,
              "machine": machine(), "steps": []}
    for i, (name, cap) in enumerate(steps):
        later_min = MIN_STEP_S * (len(steps) - i - 1)
        record = run_step(name, cap, args, deadline, later_min, workdir)
        report["steps"].append(record)
        print(f"[gpu_check] {name}: {record['status']} ({record['seconds']} s)"
              + (f" - {record['reason']}" if record["reason"] else ""), flush=True)
    report["elapsed_s"] = round(time.monotonic() - t_start, 1)
    from benchmarks.gpu_check_report import markdown

    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    section = markdown(report)
    (out / "gpu_check.md").write_text(section)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + section)
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} "
          f"in {report['elapsed_s']} s")
    bad = [s["name"] for s in report["steps"] if s["status"] in ("failed", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
