"""Recording stand-ins for the parts of `launch`, `launch_ros` and `ament_index_python` that
launch/xnet.launch.py uses, so the launch file itself runs where the launch packages are not
installed (the PyPI-wheel dev environment). Each action records its keyword arguments; the
behaviour of the real packages is checked by the LaunchService tests where they exist.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Action:
    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs


class LaunchDescription(Action):
    @property
    def entities(self) -> list:
        return list(self.args[0])


class DeclareLaunchArgument(Action):
    @property
    def name(self) -> str:
        return self.args[0]


class OpaqueFunction(Action):
    pass


class LifecycleNode(Action):
    pass


class Node(Action):
    pass


class LaunchContext:
    """What `LaunchConfiguration(name).perform(context)` reads."""

    def __init__(self, values: dict[str, str]):
        self.launch_configurations = dict(values)


class LaunchConfiguration:
    def __init__(self, name: str):
        self.name = name

    def perform(self, context: LaunchContext) -> str:
        return context.launch_configurations[self.name]


class PackageNotFoundError(KeyError):
    pass


class Logger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def warning(self, msg: str) -> None:
        self.records.append(("warning", msg))

    def info(self, msg: str) -> None:
        self.records.append(("info", msg))

    def error(self, msg: str) -> None:
        self.records.append(("error", msg))


class Environment:
    """The stub modules; `share_dir` and `installed` stand in for the ament index."""

    def __init__(self, share_dir: Path, installed: Iterable[str] = ("xnet_ros",)):
        self.share_dir = Path(share_dir)
        self.installed = set(installed)
        self.logger = Logger()
        self.modules = self._build()

    def _get_package_prefix(self, package: str) -> str:
        if package not in self.installed:
            raise PackageNotFoundError(f"package '{package}' not found")
        return str(self.share_dir.parent.parent)

    def _get_package_share_directory(self, package: str) -> str:
        self._get_package_prefix(package)
        return str(self.share_dir)

    def _build(self) -> dict[str, types.ModuleType]:
        def module(name: str, **attrs: Any) -> types.ModuleType:
            mod = types.ModuleType(name)
            mod.__dict__.update(attrs)
            return mod

        mods = {
            "launch": module("launch", LaunchDescription=LaunchDescription),
            "launch.actions": module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                     OpaqueFunction=OpaqueFunction),
            "launch.substitutions": module("launch.substitutions",
                                           LaunchConfiguration=LaunchConfiguration),
            "launch.logging": module("launch.logging", get_logger=lambda name=None: self.logger),
            "launch_ros": module("launch_ros"),
            "launch_ros.actions": module("launch_ros.actions", LifecycleNode=LifecycleNode,
                                         Node=Node),
            "ament_index_python": module("ament_index_python"),
            "ament_index_python.packages": module(
                "ament_index_python.packages", PackageNotFoundError=PackageNotFoundError,
                get_package_prefix=self._get_package_prefix,
                get_package_share_directory=self._get_package_share_directory),
        }
        for name, mod in mods.items():
            if "." in name:
                parent, child = name.rsplit(".", 1)
                setattr(mods[parent], child, mod)
        return mods

    def install(self, setitem=None) -> None:
        """Put the stubs into sys.modules (with pytest's monkeypatch.setitem when given, so
        they are removed after the test)."""
        for name, mod in self.modules.items():
            if setitem is None:
                sys.modules[name] = mod
            else:
                setitem(sys.modules, name, mod)
