"""Files written atomically (checkpoints, experiment results) get the permissions `open()` would
give them: the umask's, not mkstemp's owner-only 0600."""

from __future__ import annotations

import json
import os
import stat

import pytest

from xnet_model.files import current_umask, default_file_mode


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_mode_is_what_open_creates(tmp_path, umask_027):
    assert current_umask() == 0o027
    assert default_file_mode() == 0o640
    (tmp_path / "plain").write_text("x")
    assert mode_of(tmp_path / "plain") == default_file_mode()


def test_checkpoints_and_results_follow_the_umask(tmp_path, umask_027):
    pytest.importorskip("torch")
    from xnet_model.experiments.runner import atomic_write_json
    from xnet_model.train.checkpoint import atomic_save, atomic_write

    atomic_save({"step": 1}, tmp_path / "last.pt")
    atomic_write_json({"abs_rel": 0.1}, tmp_path / "result.json")
    atomic_write(tmp_path / "private", lambda f: f.write(b"k"), mode=0o600)
    assert mode_of(tmp_path / "last.pt") == 0o640
    assert mode_of(tmp_path / "result.json") == 0o640
    assert json.loads((tmp_path / "result.json").read_text()) == {"abs_rel": 0.1}
    assert mode_of(tmp_path / "private") == 0o600  # an explicit mode wins
