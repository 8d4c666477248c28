"""Running a plan: one job at a time, each writing `result.json` atomically when it finishes.

Re-running a plan skips every job whose result file exists with the job's current digest, so a
killed plan continues where it stopped (and a train job killed half-way resumes from its own
`last.pt`). A job whose configuration changed since its folder was written starts afresh.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from pathlib import Path
from typing import Any

from ..metrics import json_safe
from .plan import Plan, RunJob, expand

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"  # the digest (and config) a job folder was started with
DROP_AFTER = ("last.pt", "best.pt")  # resumable state, useless once the result is written

DONE, SKIPPED, FAILED, BLOCKED, PENDING = "done", "skipped", "failed", "blocked", "pending"


def atomic_write_json(obj: Any, path: Path) -> None:
    """JSON (NaN-free) written all or nothing, with the umask's permissions (`atomic_write`)."""
    from ..train.checkpoint import atomic_write  # torch and timm: not for `--list`

    data = (json.dumps(json_safe(obj), indent=1, allow_nan=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def read_result(job: RunJob) -> dict[str, Any] | None:
    """The job's finished result, or None when it is missing, unreadable or from another
    configuration (digest)."""
    try:
        result = json.loads((job.dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("digest") == job.digest else None


def _started_with_this_config(job: RunJob) -> bool:
    """The job folder's spec.json has the job's current digest."""
    try:
        return json.loads((job.dir / SPEC_FILE).read_text()).get("digest") == job.digest
    except (OSError, ValueError):
        return False


def job_status(job: RunJob) -> str:
    if read_result(job) is not None:
        return DONE
    return "partial" if _started_with_this_config(job) else PENDING


def _prepare(job: RunJob) -> None:
    """A fresh folder unless it holds a partial run of this very configuration."""
    if job.dir.exists() and not _started_with_this_config(job):
        log.info("%s: configuration changed (or unknown): starting afresh", job.id)
        shutil.rmtree(job.dir)
    atomic_write_json({"digest": job.digest, "id": job.id, "config": job.config},
                      job.dir / SPEC_FILE)


def _curves(metrics_file: Path) -> dict[str, list[dict[str, Any]]]:
    """Training loss and evaluation metrics by step, from the trainer's metrics.jsonl."""
    curves: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    if not metrics_file.is_file():
        return curves
    for line in metrics_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") == "train":
            curves["train"].append({"step": rec["step"], "loss": rec["loss"].get("total")})
        elif rec.get("kind") == "eval":
            curves["eval"].append({"step": rec["step"], **rec["metrics"]})
    for key in curves:  # a resumed run repeats the steps after its last checkpoint: keep the last
        by_step = {r["step"]: r for r in curves[key]}
        curves[key] = [by_step[s] for s in sorted(by_step)]
    return curves


def run_train_job(job: RunJob) -> dict[str, Any]:
    from ..train.config import load_train_config
    from ..train.trainer import METRICS_FILE, Trainer

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    cfg = load_train_config(job.config)
    trainer = Trainer(cfg)
    model_cfg = cfg.model_config()  # the trainer's copy says False once it resumes
    loaded = {}
    for part in ("encoder", "decoder"):
        report = getattr(getattr(trainer.model, part), "load_report", None)
        loaded[part] = {"source": getattr(model_cfg, part).pretrained or None,
                        "tensors": None if report is None else len(report.loaded)}
    init = trainer.init_report.to_dict() if trainer.init_report is not None else None
    out = trainer.fit()
    metrics = out["eval"] or trainer.run_eval()  # resumed after the last step: evaluate again
    return {
        "metrics": metrics,
        "curves": _curves(Path(cfg.out_dir) / METRICS_FILE),
        "steps": out["step"],
        "pretrained": loaded,
        "init_from": init,
        "wall_s": time.perf_counter() - t_wall,  # this process only, after a resume
        "cpu_s": time.process_time() - t_cpu,
    }


def run_job(job: RunJob, num_threads: int | None) -> dict[str, Any]:
    if job.spec.kind == "classifier":
        from .classifier import train_classifier

        return train_classifier(job.spec.classifier, job.seed, job.dir, num_threads)
    return run_train_job(job)


def run_plan(plan: Plan, only: list[str] | None = None, max_runs: int | None = None,
             on_status: Callable[[RunJob, str], None] | None = None,
             workers: int = 1) -> dict[str, str]:
    """Run every unfinished job of `plan` (or of the runs named in `only`).

    Jobs start in plan order as soon as the jobs whose outputs they read are finished, up to
    `workers` at a time (each in its own process when > 1). `max_runs` stops after that many
    jobs were started (the rest stay pending). Returns {job id: done | skipped | failed |
    blocked | pending} in plan order; a failure is logged with its traceback and blocks the jobs
    that need its output, and the others go on.
    """
    jobs = expand(plan)
    if only:
        unknown = sorted(set(only) - {j.spec.name for j in jobs})
        if unknown:
            raise ValueError(f"--only: no run named {unknown}")
    statuses: dict[str, str] = {}
    queue: list[RunJob] = []
    for job in jobs:
        if read_result(job) is not None:
            statuses[job.id] = SKIPPED
        elif only and job.spec.name not in only:
            statuses[job.id] = PENDING
        else:
            queue.append(job)

    def settle(job: RunJob, status: str) -> None:
        statuses[job.id] = status
        if on_status is not None:
            on_status(job, status)

    started = 0
    pool = _pool(workers, plan.num_threads)
    running: dict[Future, RunJob] = {}
    try:
        while queue or running:
            for job in list(queue):
                deps = [statuses.get(n) for n in job.needs]  # None: queued or running
                if any(d in (FAILED, BLOCKED) for d in deps):
                    queue.remove(job)
                    settle(job, BLOCKED)
                elif any(d == PENDING for d in deps) or (
                        max_runs is not None and started >= max_runs):
                    queue.remove(job)
                    settle(job, PENDING)
                elif all(d in (DONE, SKIPPED) for d in deps) and len(running) < workers:
                    queue.remove(job)
                    started += 1
                    running[pool.submit(_execute, job, plan.num_threads)] = job
            if not running:
                continue  # whatever is left in the queue is settled in the next pass
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    settle(job, future.result())
                except Exception:  # a worker process died
                    log.error("%s: worker failed:\n%s", job.id, traceback.format_exc())
                    settle(job, FAILED)
    except BaseException:  # Ctrl-C: stop the runs now; they resume from their checkpoints
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return {job.id: statuses[job.id] for job in jobs}


class _InlineExecutor(Executor):
    """workers=1: run each job right here, when it is submitted."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _pool(workers: int, num_threads: int | None) -> Executor:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        return _InlineExecutor()
    # spawn: a fresh interpreter per worker (forking a process that holds torch threads is
    # unsafe); each worker logs to the same stderr
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init,
                               initargs=(logging.getLogger().getEffectiveLevel(),))


def _worker_init(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the plan's process dies, so that killing the plan stops
    its runs (they resume from their checkpoints next time) instead of orphaning them."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no glibc: workers finish their run
        pass


def _execute(job: RunJob, num_threads: int | None) -> str:
    log.info("=== %s: starting (digest %s) ===", job.id, job.digest)
    _prepare(job)
    try:
        result = run_job(job, num_threads)
    except Exception:  # one broken run must not stop the plan
        log.error("%s failed:\n%s", job.id, traceback.format_exc())
        return FAILED
    record = {"id": job.id, "name": job.spec.name, "label": job.spec.label or job.spec.name,
              "group": job.spec.group, "kind": job.spec.kind, "seed": job.seed,
              "digest": job.digest, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **result}
    atomic_write_json(record, job.dir / RESULT_FILE)
    for name in DROP_AFTER:
        (job.dir / name).unlink(missing_ok=True)
    log.info("=== %s: done in %.0f s (cpu %.0f s) ===", job.id, result["wall_s"],
             result["cpu_s"])
    return DONE


def collect_results(plan: Plan) -> dict[str, dict[str, Any]]:
    """{job id: result} of every finished job of the plan (current digests only)."""
    out = {}
    for job in expand(plan):
        result = read_result(job)
        if result is not None:
            out[job.id] = result
    return out
