"""`make bench`: every component benchmark in one table (point clouds, output building,
synthetic data, bags, the node's per-frame overhead at 640x480, 1280x720 and 1920x1080, many
cameras).

Model/backends latency has its own command: `xnet bench` (see docs/runtime.md).
Usage: python -m benchmarks.run_all [--append docs/benchmarks.md] [--only NAME,...]
$XNET_SENSOR_MSGS_PY (a path to sensor_msgs_py/point_cloud2.py) adds the point-cloud comparison
with sensor_msgs_py to bench_pointcloud.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xnet_model.runtime.bench import append_report, report_section
from xnet_ros.outputs import tune_malloc

SUITES = ("bench_pointcloud", "bench_synthetic", "bench_bag", "bench_node",
          "bench_multicam")  # bench_multicam: ~5 min (node processes, 20 s windows)


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    keys = ["suite"] + sorted({k for r in rows for k in r} - {"suite"}, key=lambda k: k != "name")
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--append", help="append the table to this Markdown report")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    args = parser.parse_args(argv)
    tune_malloc()  # as the node does (see xnet_ros.outputs.tune_malloc)
    rows: list[dict] = []
    for suite in args.only.split(","):
        module = importlib.import_module(f"benchmarks.{suite}")
        print(f"running {suite} ...", flush=True)
        rows += [{"suite": suite, **row} for row in module.run()]
    table = markdown(rows)
    print(table)
    if args.append:
        section = report_section("Component benchmarks", table, "make bench")
        print(f"appended to {append_report(args.append, section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
