"""Latency / FPS / memory per backend and input size, as a Markdown table (`xnet bench`).

Each (model, backend, size) gets a fresh backend built for that size (its init time, which
includes any export or compile, is reported apart from the latency) and `warmup` untimed runs;
then `iters` timed rounds call every backend's `infer` once per round on one (1, 3, H, W)
batch (interleaved, so a shared machine's load hits all backends alike). That is what the
Predictor's `infer_ms` measures: host<->device copies and argmax included, resize/normalise
excluded. Peak memory is the growth over the warm-up runs: RSS high-water mark minus RSS before
them on CPU (/proc/self/clear_refs resets the mark), torch.cuda.max_memory_allocated on GPU.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .backends import accepted_options, backend_factory, create_backend

if TYPE_CHECKING:
    from ..xnet import XNet

log = logging.getLogger(__name__)

REPORT_HEADER = """# Benchmarks

Latency of `backend.infer` on one (1, 3, H, W) normalised batch (host<->device copies and the
semantic argmax included; image resize/normalise excluded), median and 90th percentile over
`--iters` timed runs after `--warmup` untimed ones; the timed runs of all backends of a table
are interleaved (round-robin), so load from other processes hits them alike. FPS = 1000 /
median. Peak memory: growth during the warm-up runs, RSS high-water mark minus RSS before them
(CPU; allocator caches make it a lower bound), `torch.cuda.max_memory_allocated` (GPU).
Init = building the backend for that size (ONNX export / compile / engine build on a cache
miss, cache load on a hit). Models named by variant have random weights: the timings are the
architecture's. GFLOPs are counted by `torch.utils.flop_counter.FlopCounterMode`
(2 x multiply-accumulates of conv / matmul). `xnet bench` tunes glibc malloc like the node
(`xnet_model.memory.tune_malloc`).

Reproduce a section with the command printed under it (`make setup` first), e.g.

    .venv/bin/xnet bench --model atto_x_atto_multitask --backends torch,onnxruntime \\
        --sizes 240x320 --append docs/benchmarks.md

Sections are appended; each names its machine and date.
"""


@dataclass
class BenchRow:
    model: str
    backend: str
    size: tuple[int, int]
    median_ms: float | None = None
    p90_ms: float | None = None
    peak_mem_mb: float | None = None
    init_s: float | None = None
    details: str = ""
    params_m: float | None = None
    gflops: float | None = None

    @property
    def fps(self) -> float | None:
        return 1e3 / self.median_ms if self.median_ms else None


def _proc_status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _batch(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)


def warm_up(backend, size: tuple[int, int], warmup: int) -> float | None:
    """Run `warmup` untimed inferences; returns the peak memory growth over them in MB."""
    batch = _batch(size)
    cuda = backend.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(backend.device)
        torch.cuda.reset_peak_memory_stats(backend.device)
        base = torch.cuda.memory_allocated(backend.device)
    else:
        can_reset = _reset_peak_rss()
        base = _proc_status_mb("VmRSS")
    for _ in range(max(1, warmup)):
        backend.infer(batch)
    if cuda:
        return (torch.cuda.max_memory_allocated(backend.device) - base) / 2**20
    hwm = _proc_status_mb("VmHWM")
    return hwm - base if can_reset and hwm is not None and base is not None else None


def time_interleaved(backends: list, size: tuple[int, int], iters: int) -> list[list[float]]:
    """`iters` timed rounds; each round runs every backend once, so load from other
    processes (shared machines) lands on all backends alike. Milliseconds per backend."""
    batch = _batch(size)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(iters):
        for i, backend in enumerate(backends):
            t0 = time.perf_counter()
            backend.infer(batch)  # returns numpy: device work is finished when it returns
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def model_complexity(model: XNet, size: tuple[int, int]) -> tuple[float, float]:
    """(parameters in millions, GFLOPs of one forward pass at `size`) on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters()) / 1e6
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, *size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return params, counter.get_total_flops() / 1e9


def parse_backend_spec(spec: str) -> tuple[str, dict]:
    """'torch:bf16' -> ('torch', {'precision': 'bf16'}); 'onnxruntime' -> ('onnxruntime', {})."""
    name, _, precision = spec.partition(":")
    return name, ({"precision": precision} if precision else {})


def bench_model(label: str, model: XNet, backends: list[str], sizes: list[tuple[int, int]],
                warmup: int = 2, iters: int = 10, device=None, flops: bool = False,
                model_path=None, **backend_options) -> list[BenchRow]:
    """One row per (backend, size); backends are built per size, then timed interleaved."""
    rows = []
    for size in sizes:
        params_m, gflops = model_complexity(model, size) if flops else (None, None)
        live, live_rows = [], []
        for spec in backends:
            name, options = parse_backend_spec(spec)
            row = BenchRow(label, spec, size, params_m=params_m, gflops=gflops)
            rows.append(row)
            t0 = time.perf_counter()
            try:
                shared = accepted_options(backend_factory(name), backend_options, True)
                backend = create_backend(name, model, device, input_size=size,
                                         model_path=model_path, **options, **shared)
                row.init_s = time.perf_counter() - t0
                row.peak_mem_mb = warm_up(backend, size, warmup)
                row.details = backend.describe()
                live.append(backend)
                live_rows.append(row)
            except Exception as exc:  # an unusable backend is a row saying why, not a crash
                row.details = f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"
                log.warning("bench %s %s %s: %s", label, spec, size, row.details)
        for row, times in zip(live_rows, time_interleaved(live, size, iters)):
            row.median_ms = float(np.median(times))
            row.p90_ms = float(np.percentile(times, 90))
            log.info("bench %s %s %dx%d: %.1f ms", label, row.backend, *size, row.median_ms)
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[BenchRow]) -> str:
    flops = any(r.gflops is not None for r in rows)
    head = ["model", "backend", "size", "median ms", "p90 ms", "FPS", "peak mem MB", "init s"]
    head += ["params M", "GFLOPs"] if flops else []
    lines = ["| " + " | ".join(head + ["details"]) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for r in rows:
        cells = [r.model, r.backend, f"{r.size[0]}x{r.size[1]}", _fmt(r.median_ms),
                 _fmt(r.p90_ms), _fmt(r.fps, 2), _fmt(r.peak_mem_mb, 0), _fmt(r.init_s)]
        cells += [_fmt(r.params_m, 2), _fmt(r.gflops, 1)] if flops else []
        lines.append("| " + " | ".join(cells + [r.details.replace("|", "/")]) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"CPU: {cpu_model()}, {cores} cores usable ({os.cpu_count()} online), "
             f"torch threads {torch.get_num_threads()}",
             f"torch {torch.__version__}, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}"]
    try:
        import onnxruntime

        parts.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        pass
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(i)
        parts.append(f"GPU: {torch.cuda.get_device_name(i)} (sm {major}.{minor})")
    else:
        parts.append("GPU: none")
    if hasattr(os, "getloadavg"):
        parts.append("load average at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return "\n".join(f"- {p}" for p in parts)


def report_section(title: str, table: str, command: str, notes: str = "") -> str:
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = [f"## {title}", "", f"{date}", "", machine_description(), "",
            f"Command: `{command}`", ""]
    if notes:
        body += [notes, ""]
    return "\n".join(body + [table, ""])


def append_report(path: str | Path, section: str) -> Path:
    """Append `section` to the Markdown report, creating it with REPORT_HEADER if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text().strip():
        path.write_text(REPORT_HEADER)
    with open(path, "a") as f:  # append only: other sections stay as they are
        f.write("\n" + section.rstrip("\n") + "\n")
    return path
