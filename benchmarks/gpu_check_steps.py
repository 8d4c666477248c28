"""The steps of benchmarks/gpu_check.py; each runs in its own process (`--step NAME`).

A step returns a dict (JSON) and may call `emit(partial)` whenever it has finished a part, so a
step stopped by its timeout still reports what it measured. `_status` ok / failed / skipped and
`_reason` say how it went.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from xnet_model.runtime.backends import BackendError, TorchBackend

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "xnet_model" / "assets" / "demo_model"
PAPER_MODEL = "swinl_x_convnextv2t_nyu"
# Table 9 of the xNet paper: xNet ConvNeXtV2-T x Swin-L on NYU, RTX 2080 Super
PAPER_FPS = {PAPER_MODEL: (5.21, "paper Table 9: 5.21 FPS on an RTX 2080 Super")}
LATENCY_MODELS = ["demo", "atto_x_atto", "convnextt_x_convnextt", PAPER_MODEL]


class Context:
    def __init__(self, device: str, quick: bool, result: Path, workdir: Path):
        self.device, self.quick, self.result_path = device, quick, result
        self.workdir = workdir
        self.result: dict = {}

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def emit(self, **values) -> None:
        self.result.update(values)
        tmp = self.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.result_path)

    def require_device(self) -> None:
        if self.cuda and not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False (torch "
                               f"{torch.__version__}, built for CUDA {torch.version.cuda})")


def load_net(name: str):
    """(model, saved dir or None): the demo model's trained weights, else random weights."""
    from xnet_model import build_model, load_model

    if name == "demo":
        return load_model(DEMO_MODEL), DEMO_MODEL
    torch.manual_seed(0)
    return build_model(name).eval(), None


def synthetic_frame(height: int, width: int, seed: int = 3) -> np.ndarray:
    """A synthetic room rendered small and scaled (cheap at any size; a procedural pattern
    where the renderer's OpenCV is missing)."""
    from xnet_model.runtime.images import synthetic_rgb

    return synthetic_rgb(seed, height, width)


def predictor_models(ctx: Context) -> list[tuple[str, object]]:
    """(label, model or saved dir) for the Predictor steps: the demo model; on a real run also
    a random-weight ConvNeXt-T x ConvNeXt-T."""
    from xnet_model import build_model

    models: list[tuple[str, object]] = [("demo", DEMO_MODEL)]
    if not ctx.quick:
        torch.manual_seed(0)
        models.append(("convnextt_x_convnextt (480x640 network)",
                       build_model("convnextt_x_convnextt").eval()))
    return models


def free_cuda() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- steps -----------------------------------------------------------------------------------

def step_environment(ctx: Context) -> dict:
    import dataclasses

    from xnet_model.runtime.doctor import run_checks

    rows, can_run = run_checks(model=str(DEMO_MODEL), backend="auto",
                               device=None if ctx.cuda else "cpu")
    gpu = {}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = {"name": p.name, "capability": f"{p.major}.{p.minor}",
               "memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count}
    ctx.emit(torch=torch.__version__, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
             else None, gpu=gpu, rows=[dataclasses.asdict(r) for r in rows])
    ctx.require_device()
    return {"_status": "ok"}


def step_gpu_tests(ctx: Context) -> dict:
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return {"_status": "skipped", "_reason": "pytest is not importable"}
    target = REPO / "test" / "xnet_model"
    if ctx.quick:
        target = target / "test_backends.py"
    # modules that cannot be imported here (no cv2, no rclpy) are reported, not fatal
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "-o", "addopts=-ra", "--continue-on-collection-errors", str(target)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    text = out.stdout + out.stderr
    counts = {k: int(v) for v, k in re.findall(
        r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", text)}
    uncollected = sorted(set(re.findall(r"ERROR collecting (\S+)", text)))
    ctx.emit(returncode=out.returncode, counts=counts, uncollected=uncollected,
             summary=text.strip().splitlines()[-25:])
    if counts.get("failed"):
        return {"_status": "failed", "_reason": f"{counts['failed']} gpu test(s) failed"}
    if out.returncode in (0, 5) or (uncollected and out.returncode == 1):
        note = f"; not importable here: {', '.join(uncollected)}" if uncollected else ""
        return {"_status": "ok", "_reason": f"{counts}{note}" if note else ""}
    return {"_status": "failed", "_reason": f"pytest exit {out.returncode}: {counts}"}


def step_parity(ctx: Context) -> dict:
    from xnet_model import Predictor, load_model
    from xnet_model.runtime.artifact import export_pt2_artifact
    from xnet_model.runtime.tensorrt_backend import unavailable_reason

    ctx.require_device()
    h, w = (120, 160) if ctx.quick else (480, 640)
    frame = synthetic_frame(h, w)
    ref = Predictor(DEMO_MODEL, device="cpu").predict(frame)
    device = ctx.device
    cases = [("torch fp32", dict(backend="torch", precision="fp32"), 1e-2, 0.99),
             ("torch bf16", dict(backend="torch", precision="bf16"), None, 0.93)]
    if not ctx.quick:  # (the CPU CI run keeps to the cheap cases)
        cases.insert(1, ("torch fp16", dict(backend="torch", precision="fp16"), None, 0.95))
        artifact = ctx.workdir / "demo_pt2"
        export_pt2_artifact(load_model(DEMO_MODEL), artifact, 120, 160, model_path=DEMO_MODEL)
        cases.append(("pt2 artifact fp32", dict(path=artifact), 1e-2, 0.99))
    if ctx.cuda and unavailable_reason() is None:
        for prec, tol, agree in (("fp32", 1e-2, 0.99), ("fp16", None, 0.95)):
            cases.append((f"tensorrt {prec}", dict(backend="tensorrt", precision=prec,
                                                    cache_dir=ctx.workdir / "engines"),
                           tol, agree))
    rows, failed = [], []
    for label, options, max_tol, min_agree in cases:
        row = {"case": label, "device": device}
        try:
            path = options.pop("path", DEMO_MODEL)
            t0 = time.perf_counter()
            p = Predictor(path, device=device, **options)
            row["init_s"] = round(time.perf_counter() - t0, 2)
            got = p.predict(frame)
            diff = np.abs(got.depth - ref.depth)
            row.update(max_abs_m=float(diff.max()), mean_abs_m=float(diff.mean()),
                       label_agreement=float((got.labels == ref.labels).mean()),
                       backend=p.backend.describe())
            ok = row["label_agreement"] >= min_agree and (
                row["max_abs_m"] <= max_tol if max_tol else row["mean_abs_m"] <= 0.1)
            row["ok"] = bool(ok)
            if not ok:
                failed.append(label)
        except Exception as exc:
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:400]}")
            failed.append(label)
        rows.append(row)
        ctx.emit(frame=f"{h}x{w} synthetic room (seed 3)", reference="torch fp32 on cpu",
                 rows=rows)
        free_cuda()
    return {"_status": "failed" if failed else "ok",
            "_reason": f"outside tolerance or failed: {', '.join(failed)}" if failed else ""}


def step_predictor_1080p(ctx: Context) -> dict:
    from xnet_model import Predictor

    ctx.require_device()
    frames = [synthetic_frame(1080, 1920, seed) for seed in (1, 2)]
    models = predictor_models(ctx)
    precision = "fp16" if ctx.cuda else "fp32"
    warmup, iters = (1, 2) if ctx.quick else (3, 20)
    rows = []
    for label, model in models:
        p = Predictor(model, device=ctx.device, precision=precision)
        for i in range(warmup):
            p.predict(frames[i % 2])
        times = {"pre_ms": [], "infer_ms": [], "post_ms": [], "total_ms": []}
        for i in range(iters):
            t0 = time.perf_counter()
            pred = p.predict(frames[i % 2])
            times["total_ms"].append((time.perf_counter() - t0) * 1e3)
            for k in ("pre_ms", "infer_ms", "post_ms"):
                times[k].append(pred.timings[k])
        assert pred.depth.shape == (1080, 1920) and pred.labels.shape == (1080, 1920)
        med = {k: round(float(np.median(v)), 2) for k, v in times.items()}
        rows.append({"model": label, "backend": p.backend.describe(), **med,
                     "fps": round(1e3 / med["total_ms"], 2),
                     "network_size": "x".join(map(str, p.network_size(1080, 1920)))})
        ctx.emit(input="1920x1080 uint8 RGB", postprocess="host (cv2 resize; device-side "
                 "post-processing is issue 11)", rows=rows)
        del p
        free_cuda()
    return {"_status": "ok"}


def step_batching(ctx: Context) -> dict:
    """One forward over B camera frames (the multi-camera node's `predict_batch`) against B
    single forwards: ms per call, frames/s, batching gain B * t(1) / t(B), peak memory."""
    from xnet_model import Predictor

    ctx.require_device()
    frame = synthetic_frame(480, 640)
    models = predictor_models(ctx)
    batches = (1, 2) if ctx.quick else (1, 2, 4, 8)
    warmup, iters = (1, 2) if ctx.quick else (5, 30)
    precision = "fp16" if ctx.cuda else "fp32"
    rows = []
    for label, model in models:
        p = Predictor(model, device=ctx.device, precision=precision)
        single_ms = None
        for b in batches:
            frames = [frame] * b
            for _ in range(warmup):
                p.predict_batch(frames)
            if ctx.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                out = p.predict_batch(frames)  # host outputs: the backend has synchronised
                times.append((time.perf_counter() - t0) * 1e3)
            assert len(out) == b and out[-1].depth.shape == (480, 640)
            median = float(np.median(times))
            single_ms = single_ms or median
            rows.append({"model": label, "batch": b, "median_ms": round(median, 2),
                         "fps": round(1e3 * b / median, 1),
                         "gain": round(b * single_ms / median, 2),
                         "peak_mem_mb": (round(torch.cuda.max_memory_allocated() / 2**20)
                                         if ctx.cuda else None),
                         "backend": p.backend.describe()})
            ctx.emit(input="480x640 uint8 RGB, the same frame B times", rows=rows)
        del p
        free_cuda()
    return {"_status": "ok"}


def step_training(ctx: Context) -> dict:
    ctx.require_device()
    out = Path(tempfile.mkdtemp(prefix="train_", dir=ctx.workdir))
    steps = 3 if ctx.quick else 60
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "xnet_model.cli", "train", "--config",
           str(REPO / "config" / "train" / "demo_synthetic.yaml"),
           f"out_dir={out}", f"export.dir={out / 'model'}", f"optim.max_steps={steps}",
           "optim.warmup_steps=2", f"device={'cuda' if ctx.cuda else 'cpu'}",
           f"log_interval={1 if ctx.quick else 10}", "checkpoint_interval=0",
           "eval.max_batches=1", "progress=false", "tensorboard=false"]
    if ctx.quick:  # the CI check of the wiring: small batches, fp32 (bf16 is slow on CPUs)
        cmd += ["precision=fp32", "data.batch_size=2", "data.val_batch_size=2",
                "data.synthetic.val_length=2"]
    else:
        cmd += ["precision=bf16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    lines = []
    with contextlib.suppress(OSError):
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    train = [x for x in lines if x.get("kind") == "train"]
    group = re.search(r"joined the (\w+) process group", log)
    result = {"command": " ".join(cmd[:6]) + " ... " + " ".join(cmd[8:]),
              "precision": "fp32" if ctx.quick else "bf16", "returncode": proc.returncode,
              "seconds": round(seconds, 1), "steps": steps,
              "process_group": group.group(1) if group else None,
              "loss": [round(x["loss"].get("total", float("nan")), 4) for x in train],
              "images_per_s": round(float(np.mean([x["samples_per_s"] for x in train[1:]
                                                   or train])), 1) if train else None,
              "log_tail": log.strip().splitlines()[-8:]}
    ctx.emit(**result)
    if proc.returncode != 0:
        errors = [e for e in re.findall(r"^\S*(?:Error|Exception)\b.*$", log, re.M)
                  if "elastic" not in e]  # the worker's error, not torchrun's summary
        return {"_status": "failed", "_reason": f"torchrun exit {proc.returncode}"
                + (f": {errors[-1][:300]}" if errors else "")}
    if not result["loss"]:
        return {"_status": "failed", "_reason": "no training metrics were written"}
    if not ctx.quick and not result["loss"][-1] < result["loss"][0]:  # 3 quick steps: noise
        return {"_status": "failed", "_reason": f"loss did not go down: {result['loss']}"}
    expected = "nccl" if ctx.cuda else "gloo"
    if result["process_group"] not in (None, expected):
        return {"_status": "failed", "_reason": f"process group {result['process_group']}"}
    if result["process_group"] is None:
        return {"_status": "failed", "_reason": f"the trainer joined no {expected} process group"}
    return {"_status": "ok"}


class CudaGraphBackend(TorchBackend):
    """Eager fp16 captured once per shape as a CUDA graph and replayed (no per-kernel launch
    overhead); registered as backend 'cudagraph' for the latency step only."""

    name = "cudagraph"

    def __init__(self, model, device=None, precision: str = "fp16"):
        super().__init__(model, device, precision)
        if self.device.type != "cuda":
            raise BackendError("CUDA graphs need a CUDA device")
        self.graphs: dict[tuple, tuple] = {}

    def _forward(self, x):
        # autocast's weight cache must be off while capturing (the graph keeps the casts)
        with torch.inference_mode(), torch.autocast(
                "cuda", dtype=self.autocast_dtype or torch.float16,
                enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self.graph(x)

    def run(self, x):
        key = tuple(x.shape)
        if key not in self.graphs:
            static = x.clone()
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(3):
                    self._forward(static)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(static)
            self.graphs[key] = (graph, static, out)
        graph, static, out = self.graphs[key]
        static.copy_(x)
        graph.replay()
        return out

    def describe(self) -> str:
        return f"eager {self.precision} replayed as a CUDA graph on {self.device}"


def latency(ctx: Context, specs: list[str], reason_if_skipped: str | None = None) -> dict:
    from xnet_model.runtime import backends
    from xnet_model.runtime.bench import bench_model

    if reason_if_skipped:
        return {"_status": "skipped", "_reason": reason_if_skipped}
    ctx.require_device()
    backends.BACKENDS["cudagraph"] = CudaGraphBackend
    size = (64, 96) if ctx.quick else (480, 640)
    models = LATENCY_MODELS[:2] if ctx.quick else LATENCY_MODELS
    warmup, iters = (1, 2) if ctx.quick else (3, 20)
    rows, failed = [], []
    for name in models:
        try:
            model, path = load_net(name)
        except Exception as exc:
            rows.append({"model": name, "backend": ",".join(specs),
                         "details": f"model failed to build: {type(exc).__name__}: {exc}"})
            failed.append(name)
            continue
        options = {"cache_dir": ctx.workdir / "engines"} if "tensorrt:fp16" in specs else {}
        for row in bench_model(name, model, specs, [size], warmup, iters, ctx.device,
                               False, path, **options):
            entry = {"model": name, "backend": row.backend, "size": f"{size[0]}x{size[1]}",
                     "median_ms": row.median_ms, "p90_ms": row.p90_ms, "fps": row.fps,
                     "peak_mem_mb": row.peak_mem_mb, "init_s": row.init_s,
                     "details": row.details}
            if name in PAPER_FPS:
                entry["paper"] = PAPER_FPS[name][1]
            if row.median_ms is None:
                failed.append(f"{name} {row.backend}")
            rows.append(entry)
            if row.backend.startswith("tensorrt") and row.median_ms is not None:
                entry["build_s"] = row.init_s
                entry["cache_hit_load_s"] = tensorrt_reload_seconds(model, path, size, ctx)
            ctx.emit(size=f"{size[0]}x{size[1]}", rows=rows)
        del model
        free_cuda()
    return {"_status": "failed" if failed else "ok",
            "_reason": f"failed: {', '.join(failed)}" if failed else ""}


def tensorrt_reload_seconds(model, path, size, ctx: Context) -> float | None:
    from xnet_model.runtime.backends import create_backend

    t0 = time.perf_counter()
    backend = create_backend("tensorrt", model, ctx.device, precision="fp16", input_size=size,
                             model_path=path, cache_dir=ctx.workdir / "engines")
    seconds = time.perf_counter() - t0
    return round(seconds, 2) if backend.cache_hit else None


def step_latency_eager(ctx):
    return latency(ctx, ["torch:fp16", "torch:bf16"] if ctx.cuda else ["torch"])


def step_latency_cudagraph(ctx):
    return latency(ctx, ["cudagraph:fp16"],
                   None if ctx.cuda else "CUDA graphs need a CUDA device")


def step_latency_tensorrt(ctx):
    from xnet_model.runtime.tensorrt_backend import unavailable_reason

    return latency(ctx, ["tensorrt:fp16"], unavailable_reason())


def step_latency_inductor(ctx):
    return latency(ctx, ["inductor:fp16"], None if ctx.cuda else
                   "Inductor compiles for minutes on a CPU; run without --quick on a GPU")


def _step_node_pipeline(ctx: Context) -> dict:
    from benchmarks.gpu_check_pipeline import step_node_pipeline

    return step_node_pipeline(ctx)


STEP_FUNCTIONS = {
    "environment": step_environment, "gpu_tests": step_gpu_tests, "parity": step_parity,
    "predictor_1080p": step_predictor_1080p, "batching": step_batching,
    "node_pipeline": _step_node_pipeline, "training": step_training,
    "latency_eager": step_latency_eager, "latency_cudagraph": step_latency_cudagraph,
    "latency_tensorrt": step_latency_tensorrt, "latency_inductor": step_latency_inductor,
}


def run_in_process(name: str, device: str, quick: bool, result: Path, workdir: Path) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = Context(device, quick, result, workdir)
    try:
        outcome = STEP_FUNCTIONS[name](ctx)
    except Exception as exc:
        traceback.print_exc()
        outcome = {"_status": "failed", "_reason": f"{type(exc).__name__}: {str(exc)[:500]}"}
    ctx.emit(**outcome)
    return 0
