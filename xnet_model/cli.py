"""`xnet` command line: dispatches subcommands to the modules that own them (lazy imports)."""

from __future__ import annotations

import importlib
import logging
import sys

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS = {
    "train": ("xnet_model.train.cli", "train_main", "train a model from a YAML config"),
    "eval": ("xnet_model.train.cli", "eval_main", "evaluate a saved model on a dataset"),
    "export": ("xnet_model.runtime.cli", "export_main", "export to ONNX / .pt2 / TensorRT"),
    "bench": ("xnet_model.runtime.cli", "bench_main", "latency/FPS table per backend and size"),
    "bag": ("xnet_ros.bag.cli", "main", "offline rosbag tools: infer, eval (no ROS needed)"),
}


def usage() -> str:
    lines = ["usage: xnet <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'xnet <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"xnet: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module, func, _ = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
