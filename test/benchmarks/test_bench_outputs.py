"""bench_outputs: one row per size, both settings timed on the same frames."""

from __future__ import annotations

import pytest

from benchmarks import bench_outputs
from xnet_ros import native


@pytest.mark.skipif(not native.available(), reason=native.status())
def test_rows_time_both_settings_and_restore_the_split():
    previous = native.set_split(1, 123)
    try:
        rows = bench_outputs.run(sizes=((64, 48), (128, 96)), frames=2, log=lambda _: None)
        assert native.set_split(1, 123) == 1  # put back as it was
    finally:
        native.set_split(previous)
    assert [r["name"] for r in rows] == ["build_outputs 64x48", "build_outputs 128x96"]
    for r in rows:
        assert r["one_thread_ms"] > 0 and r["halves_ms"] > 0
        assert r["halves_vs_one"] == pytest.approx(r["halves_ms"] / r["one_thread_ms"])


def test_a_missing_library_is_a_skip_not_an_error():
    logged = []
    with native.disabled():
        assert bench_outputs.run(sizes=((64, 48),), frames=1, log=logged.append) == []
    assert logged and "skipped" in logged[0]
