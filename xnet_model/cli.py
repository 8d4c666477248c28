"""`xnet` command line: dispatches subcommands to the modules that own them (lazy imports).

Other installed packages add subcommands through the entry point group `xnet.commands`
(name -> a callable taking argv and returning an exit code; its docstring's first line is the
help line), as the ROS package does for `xnet bag`. This package never names them.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, distributions

PLUGIN_GROUP = "xnet.commands"

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS = {
    "train": ("xnet_model.train.cli", "train_main", "train a model from a YAML config"),
    "eval": ("xnet_model.train.cli", "eval_main", "evaluate a saved model on a dataset"),
    "experiment": ("xnet_model.experiments.cli", "main",
                   "run a resumable plan of seeded training runs; tables and plots"),
    "export": ("xnet_model.runtime.cli", "export_main", "export to ONNX / .pt2 / TensorRT"),
    "bench": ("xnet_model.runtime.cli", "bench_main", "latency/FPS table per backend and size"),
    "doctor": ("xnet_model.runtime.doctor", "main",
               "what this machine can run (torch/CUDA/TensorRT, cache, backend, ROS) and why"),
}


def group_entry_points(group: str) -> dict[str, EntryPoint]:
    """Every entry point of `group`, by name (the first on sys.path wins). Unlike
    `importlib.metadata.entry_points`, a distribution's entry points are not hidden by another
    metadata directory of the same name earlier on sys.path (the ROS build installs one)."""
    found: dict[str, EntryPoint] = {}
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == group:
                found.setdefault(ep.name, ep)
    return found


def plugin_commands() -> dict[str, EntryPoint]:
    """Subcommands other packages declare in the `xnet.commands` entry point group."""
    return {name: ep for name, ep in group_entry_points(PLUGIN_GROUP).items()
            if name not in COMMANDS}


def _plugin_help(ep: EntryPoint) -> str:
    """The first line of the command's docstring (it is imported to read it)."""
    try:
        doc = inspect.getdoc(ep.load()) or ""
    except Exception as exc:  # a broken or partial install must not break `xnet --help`
        return f"(from {ep.value}; cannot be loaded: {type(exc).__name__}: {exc})"
    return doc.splitlines()[0] if doc else f"(from {ep.value})"


def usage() -> str:
    lines = ["usage: xnet <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += [f"  {name:<8} {_plugin_help(ep)}" for name, ep in plugin_commands().items()]
    lines += ["", "Run 'xnet <command> --help' for a command's options."]
    return "\n".join(lines)


def _command(name: str) -> Callable[[list[str]], int]:
    if name in COMMANDS:
        module, func, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), func)
    return plugin_commands()[name].load()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS and argv[0] not in plugin_commands():
        print(f"xnet: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = _command(argv[0])
    return int(command(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
