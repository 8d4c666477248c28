"""`xnet experiment PLAN` (and `python -m xnet_model.experiments PLAN`): run a plan, skipping
finished runs, then write the summary tables and plots (docs/experiments.md)."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from ..config import ConfigError

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xnet experiment",
        description="Run an experiment plan (config/experiments/*.yaml); finished runs are "
                    "skipped, so re-running continues an interrupted plan (docs/experiments.md).")
    p.add_argument("plan", help="plan YAML")
    p.add_argument("--out-dir", help="run folders and summaries (default: the plan's out_dir)")
    p.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs (all seeds)")
    p.add_argument("--max-runs", type=int, metavar="N", help="stop after starting N jobs")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run up to N jobs at once, each in its own process (default 1); "
                        "each uses the plan's num_threads")
    p.add_argument("--list", action="store_true", help="list the jobs and their state; run none")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: summarise the finished runs")
    p.add_argument("--docs", metavar="DIR",
                   help="also copy the summary (JSON, CSV) and plots into DIR as "
                        "experiments_<plan>.*")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from .plan import expand, load_plan
    from .runner import job_status, run_plan

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        plan = load_plan(args.plan, args.out_dir)
    except ConfigError as exc:
        print(f"xnet experiment: plan error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for job in expand(plan):
            print(f"{job_status(job):8} {job.id:40} {job.dir}")
        return 0
    statuses: dict[str, str] = {}
    if not args.report_only:
        try:
            statuses = run_plan(plan, args.only, args.max_runs, workers=args.workers)
        except ValueError as exc:
            print(f"xnet experiment: {exc}", file=sys.stderr)
            return 2
    paths = report(plan, args.docs)
    print(Path(paths[2]).read_text())
    counts = {s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))}
    if counts:
        print("jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    print("summary: " + ", ".join(str(p) for p in paths))
    return 1 if any(s in ("failed", "blocked") for s in statuses.values()) else 0


def report(plan, docs: str | None = None) -> list[Path]:
    """Write summary.{json,csv,md} and one plot per group into the plan's out_dir (and copy the
    JSON, CSV and plots to `docs` as experiments_<plan>.*)."""
    from .plot import plot_group
    from .results import aggregate, write_summary
    from .runner import collect_results

    summary = aggregate(plan, collect_results(plan))
    out = Path(plan.out_dir)
    paths = write_summary(summary, out)
    plots = []
    for name, group in summary["groups"].items():
        if plan.groups[name].plot and any(r["n"] for r in group["rows"]):
            plots.append(plot_group(group, out / f"plot_{name}.png"))
    if docs:
        target = Path(docs)
        target.mkdir(parents=True, exist_ok=True)
        for src in [paths[0], paths[1], *plots]:
            suffix = src.name.removeprefix("summary").removeprefix("plot")
            shutil.copyfile(src, target / f"experiments_{plan.name}{suffix}")
    return [*paths, *plots]


if __name__ == "__main__":
    sys.exit(main())
