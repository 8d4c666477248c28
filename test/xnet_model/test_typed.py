"""typed.build: the one dataclass builder of the model, training and experiment configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from xnet_model.typed import ConfigError, build


@dataclass
class Head:
    max_depth: float = 10.0
    names: list[str] | None = None


@dataclass
class Net:
    name: str
    mode: Literal["a", "b"] = "a"
    head: Head | None = field(default_factory=Head)
    extra: dict[str, Any] = field(default_factory=dict)
    size: list[int] | None = None
    lr: float = 1e-3


def test_builds_nested_and_optional_dataclasses_with_coercion():
    net = build(Net, {"name": "x", "head": {"max_depth": 80}, "size": (96, 320), "lr": "3e-4"})
    assert net.head == Head(max_depth=80.0) and isinstance(net.head.max_depth, float)
    assert net.size == [96, 320] and net.lr == 3e-4
    assert build(Net, {"name": "x", "head": None}).head is None
    given = Head(1.0)
    assert build(Net, {"name": "x", "head": given}).head is given  # built already: kept


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "head": {"max_dpth": 1}}, "net.head: unknown key(s) ['max_dpth'] "
                                             "(net.head.max_dpth); known: ['max_depth', 'names']"),
    ({}, "net: missing key(s) ['name']"),
    ({"name": "x", "mode": "c"}, "net.mode: 'c' does not fit the type 'a' | 'b'"),
    ({"name": "x", "head": {"max_depth": "far"}}, "net.head.max_depth: 'far' does not fit"),
    ({"name": 3}, "net.name: 3 does not fit the type str"),
    ({"name": "x", "head": 5}, "net.head: 5 does not fit"),
    ({"name": "x", "lr": True}, "net.lr: True does not fit"),
    ("x", "net: expected a mapping, got str"),
])
def test_bad_input_names_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        build(Net, data, "net")
    assert message in str(info.value)


def test_the_three_configs_share_it():
    from xnet_model.config import resolve
    from xnet_model.experiments.plan import load_plan
    from xnet_model.train.config import load_train_config

    with pytest.raises(ConfigError, match=r"decoder\.kind: 'unet' does not fit"):
        resolve({"decoder": {"kind": "unet"}})
    with pytest.raises(ConfigError, match=r"optim\.lr: 'fast' does not fit the type float"):
        load_train_config({"optim": {"lr": "fast"}})
    assert load_train_config({"optim": {"lr": "1e-4", "max_steps": 1}}).optim.lr == 1e-4
    plan = {"name": "p", "out_dir": "out", "runs": [{"name": "c", "kind": "classifier",
                                                     "classifier": {"steps": 5}}]}
    assert load_plan(plan).runs[0].classifier.steps == 5
    with pytest.raises(ConfigError, match=r"runs\[0\]\.classifier: unknown key\(s\) \['stps'\]"):
        load_plan({**plan, "runs": [{"name": "c", "classifier": {"stps": 5}}]})
    with pytest.raises(ConfigError, match=r"runs\[0\]: missing key\(s\) \['name'\]"):
        load_plan({**plan, "runs": [{"kind": "train"}]})
