"""`xnet` dispatch: built-in commands, entry-point plugins, and no knowledge of xnet_ros."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from xnet_model import cli

PACKAGE = Path(cli.__file__).resolve().parent


def test_xnet_model_never_names_the_ros_package():
    named = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if "xnet_ros" in p.read_text()]
    assert named == []


def _plugin(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=cli.PLUGIN_GROUP)


def test_plugin_commands_run_and_are_listed(monkeypatch, capsys):
    calls = []

    def fake_main(argv):
        """say hello"""
        calls.append(argv)
        return 3

    monkeypatch.setattr(cli, "plugin_commands", lambda: {"hello": _FakeEntryPoint(fake_main)})
    assert cli.main(["hello", "--x", "1"]) == 3
    assert calls == [["--x", "1"]]
    assert cli.main(["--help"]) == 0
    assert "  hello    say hello" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_a_broken_plugin_does_not_break_help(monkeypatch, capsys):
    monkeypatch.setattr(cli, "plugin_commands",
                        lambda: {"broken": _plugin("broken", "no_such_module_xyz:main")})
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "cannot be loaded: ModuleNotFoundError" in out


def test_installed_bag_command_is_a_plugin():
    """The editable install declares `bag` in the xnet.commands group (setup.py)."""
    plugins = cli.plugin_commands()
    if "bag" not in plugins:
        pytest.skip("the package is not installed with its entry points (pip install -e .)")
    assert plugins["bag"].value == "xnet_ros.bag.cli:main"
    assert "bag" not in cli.COMMANDS


class _FakeEntryPoint:
    def __init__(self, fn):
        self.fn, self.value = fn, f"tests:{fn.__name__}"

    def load(self):
        return self.fn


def test_entry_points_of_a_shadowed_distribution_are_found(monkeypatch):
    """The ROS build puts an xnet_ros egg-info without entry points first on sys.path; the
    installed distribution's `xnet.commands` must still be found (first on sys.path wins)."""
    from types import SimpleNamespace

    shadow = SimpleNamespace(entry_points=[])
    installed = SimpleNamespace(entry_points=[_plugin("bag", "first:main"),
                                              EntryPoint("x", "y:z", "console_scripts")])
    later = SimpleNamespace(entry_points=[_plugin("bag", "second:main")])
    monkeypatch.setattr(cli, "distributions", lambda: [shadow, installed, later])
    assert {n: ep.value for n, ep in cli.plugin_commands().items()} == {"bag": "first:main"}
