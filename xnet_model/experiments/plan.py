"""An experiment plan: typed dataclasses loaded from YAML (config/experiments/*.yaml).

A plan is a list of runs, each repeated over seeds. A `train` run is a training config for
`xnet_model.train` (the plan's `base` mapping merged with the run's `train` overrides); a
`classifier` run trains the ImageNet stand-in (`experiments.classifier`). A string `@name`
anywhere in a train run's config (base or overrides) refers to the output of the earlier run
`name` (same seed when that run has it, else its first seed): a classifier's timm checkpoint,
or a train run's saved model folder (for `init_from`). `expand` turns a plan into concrete
`RunJob`s, in order, each with a digest of everything that decides its result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, deep_merge, load_mapping
from ..typed import build

RUN_KINDS = ("train", "classifier")
CLASSIFIER_FILE = "classifier.pth"  # timm state dict (head included) of a classifier run
MODEL_DIR = "model"  # a train run's exported model folder


@dataclass
class ClassifierSpec:
    """The classification pre-training stand-in (docs/experiments.md, step 1)."""

    model: str = "convnext_atto"  # any timm classifier; the dense runs load it by path
    crop_size: int = 64
    render_size: list[int] = field(default_factory=lambda: [96, 128])  # scenes rendered [H, W]
    train_scenes: int = 4000  # scene pool; every epoch cuts new crops from it
    train_seed_offset: int = 10_000_000
    val_scenes: int = 1000  # held out: one fixed crop per scene
    val_seed_offset: int = 11_000_000
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    eval_interval: int = 200  # 0 = only at the end
    checkpoint_interval: int = 100  # resumable state every N steps


@dataclass
class RunSpec:
    name: str
    kind: Literal["train", "classifier"] = "train"
    label: str | None = None  # display name in tables and plots (None = name)
    group: str | None = None  # the results table it belongs to (None = not tabulated)
    seeds: list[int] | None = None  # None = the plan's seeds
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides over `base`
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec)


@dataclass
class GroupSpec:
    title: str = ""
    metrics: list[str] = field(default_factory=lambda: ["abs_rel", "d1", "mIoU"])
    baseline: str | None = None  # run name the others are compared with
    plot: bool = True  # draw this group's bars and curves
    # The rows, in order; None = the runs whose `group` is this one (plan order). A run may be
    # a row of several groups this way.
    runs: list[str] | None = None


@dataclass
class Plan:
    name: str
    out_dir: str  # run folders and summaries; relative paths are relative to the plan file
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    num_threads: int | None = 1  # torch CPU threads for every run
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig mapping under every run
    runs: list[RunSpec] = field(default_factory=list)
    groups: dict[str, GroupSpec] = field(default_factory=dict)


@dataclass
class RunJob:
    """One run of one seed, with every reference resolved."""

    spec: RunSpec
    seed: int
    dir: Path
    config: dict[str, Any]  # train: the TrainConfig mapping; classifier: the ClassifierSpec
    needs: list[str]  # ids of the jobs whose outputs this one reads
    digest: str  # changes when anything that decides the result changes

    @property
    def id(self) -> str:
        return f"{self.spec.name}/seed{self.seed}"


def load_plan(source: str | Path | dict[str, Any], out_dir: str | None = None) -> Plan:
    """A checked Plan from a YAML file or mapping; `out_dir` overrides the plan's."""
    root = Path.cwd()
    if isinstance(source, dict):
        data = dict(source)
    else:
        data = load_mapping(source)
        root = Path(source).resolve().parent
    for key in ("name", "out_dir"):
        if key not in data and not (key == "out_dir" and out_dir):
            raise ConfigError(f"plan: missing key {key!r}")
    runs = []
    for i, run in enumerate(data.pop("runs", None) or []):
        runs.append(build(RunSpec, run, f"runs[{i}]"))
    groups = {name: build(GroupSpec, g or {}, f"groups.{name}")
              for name, g in (data.pop("groups", None) or {}).items()}
    plan = build(Plan, {**data, "runs": runs, "groups": groups}, "plan")
    plan.out_dir = str((root / (out_dir or plan.out_dir)).resolve())
    validate(plan)
    return plan


def validate(plan: Plan) -> None:
    if not plan.runs:
        raise ConfigError("plan: no runs")
    if not plan.seeds:
        raise ConfigError("plan.seeds: need at least one seed")
    seen: set[str] = set()
    for run in plan.runs:
        if run.kind not in RUN_KINDS:
            raise ConfigError(f"run {run.name}: kind {run.kind!r} is not one of {RUN_KINDS}")
        if not run.name or "/" in run.name or run.name in seen:
            raise ConfigError(f"run name {run.name!r}: must be unique, non-empty, without '/'")
        refs = _references(deep_merge(plan.base, run.train)) if run.kind == "train" else []
        for ref in refs:
            if ref not in seen:
                raise ConfigError(f"run {run.name}: @{ref} must name an earlier run")
        if run.group is not None and run.group not in plan.groups:
            raise ConfigError(f"run {run.name}: group {run.group!r} is not in plan.groups")
        seen.add(run.name)
    for name, group in plan.groups.items():
        for run_name in [group.baseline, *(group.runs or [])]:
            if run_name is not None and run_name not in seen:
                raise ConfigError(f"groups.{name}: no run named {run_name!r}")


def group_rows(plan: Plan, group: str) -> list[RunSpec]:
    """The runs that are the rows of `group`, in table order."""
    by_name = {r.name: r for r in plan.runs}
    names = plan.groups[group].runs
    if names is not None:
        return [by_name[n] for n in names]
    return [r for r in plan.runs if r.group == group]


def _references(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("@"):
        return [value[1:]]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def digest_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def output_of(job: RunJob) -> Path:
    """What `@name` resolves to: a classifier's checkpoint or a train run's model folder."""
    return job.dir / (CLASSIFIER_FILE if job.spec.kind == "classifier" else MODEL_DIR)


def expand(plan: Plan) -> list[RunJob]:
    """Every (run, seed) job in plan order, references resolved to the referenced job's output.

    The run-level fields the runner owns (out_dir, seed, resume, export, progress) are set here.
    """
    jobs: dict[str, RunJob] = {}
    by_run: dict[str, list[RunJob]] = {}
    out = Path(plan.out_dir)
    for run in plan.runs:
        by_run[run.name] = []
        for seed in run.seeds if run.seeds is not None else plan.seeds:
            folder = out / run.name / f"seed{seed}"
            needs: list[str] = []

            def resolve(value: Any, seed: int = seed, needs: list[str] = needs) -> Any:
                if isinstance(value, str) and value.startswith("@"):
                    candidates = by_run[value[1:]]
                    dep = next((j for j in candidates if j.seed == seed), candidates[0])
                    needs.append(dep.id)
                    return str(output_of(dep))
                if isinstance(value, dict):
                    return {k: resolve(v) for k, v in value.items()}
                if isinstance(value, list):
                    return [resolve(v) for v in value]
                return value

            if run.kind == "classifier":
                config: dict[str, Any] = dataclasses.asdict(run.classifier)
            else:
                config = resolve(deep_merge(plan.base, run.train))
                config = deep_merge(config, {
                    "seed": seed, "out_dir": str(folder), "resume": True, "progress": False,
                    "tensorboard": False, "num_threads": plan.num_threads,
                    "export": {"dir": str(folder / MODEL_DIR), "source": "last",
                               "half": False},
                })
            decisive = {k: v for k, v in config.items() if k != "num_threads"}
            parts = {"kind": run.kind, "seed": seed, "config": decisive,
                     "needs": {n: jobs[n].digest for n in needs}}
            # paths inside the config differ between machines: the digest uses the relative form
            digest = digest_of(json.loads(json.dumps(parts, default=str).replace(
                str(out), "<out>")))
            job = RunJob(run, seed, folder, config, list(dict.fromkeys(needs)), digest)
            jobs[job.id] = job
            by_run[run.name].append(job)
    return list(jobs.values())
