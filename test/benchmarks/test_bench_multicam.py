"""benchmarks/bench_multicam.py: the report it writes from measured rows (no nodes started)."""

from __future__ import annotations

from benchmarks.bench_multicam import (
    markdown,
    medians,
    proc_cpu_s,
    proc_memory,
    start_nodes,
    verdict,
)


def row(config, n, fps, rss):
    return {"config": config, "cameras": n, "offered_fps": 10.0 * n, "fps": fps,
            "latency_ms": "70", "rss_mb": rss, "peak_rss_mb": rss, "cpu_ms_per_frame": 50.0,
            "load_before": 1.0, "load_after": 2.0}


def test_verdict_compares_four_cameras_with_one_and_four_nodes():
    rows = [row("separate", 1, 10.0, 1000.0), row("multi", 4, 30.0, 1200.0),
            row("separate", 4, 25.0, 4000.0)]
    # by hand: 1200 / 1000 = 1.20x; 4000 / 1000 = 4.00x; 30 >= 25
    assert verdict(rows) == ("4 cameras: RSS 1200 MB = 1.20x one single-camera node (target "
                             "<= 1.3x; four nodes: 4.00x); throughput 30.0 vs 25.0 frames/s "
                             "for four nodes (target >=: met).")
    assert verdict(rows[:2]) == ""  # not every configuration measured
    table = markdown(rows).splitlines()
    assert table[2] == ("| 1 | 1 single-camera node | 10.0 (10) | 70 | 1000 (1000) | 50 | "
                        "1.0 → 2.0 |")
    assert table[3].startswith("| 4 | one node, `cameras` x4 | 30.0 (40) |")


def test_rounds_are_judged_on_their_medians():
    rows = [{**row(config, n, fps, rss), "round": r}
            for r, fps4 in ((1, (36.0, 38.0)), (2, (40.0, 37.0)), (3, (39.0, 39.5)))
            for config, n, fps, rss in (("separate", 1, 10.0, 1000.0),
                                        ("multi", 4, fps4[0], 1100.0 + r),
                                        ("separate", 4, fps4[1], 4000.0))]
    m = medians(rows)
    assert m[("multi", 4)]["fps"] == 39.0 and m[("separate", 4)]["fps"] == 38.0
    assert m[("multi", 4)]["fps_rounds"] == [36.0, 40.0, 39.0]
    assert m[("multi", 4)]["rss_mb"] == 1102.0
    assert verdict(rows) == (
        "4 cameras: RSS 1102 MB = 1.10x one single-camera node (target <= 1.3x; four nodes: "
        "4.00x); throughput 39.0 vs 38.0 frames/s for four nodes (medians of 3 rounds: "
        "[36.0, 40.0, 39.0] vs [38.0, 37.0, 39.5]) (target >=: met).")
    table = markdown(rows).splitlines()
    assert table[0].startswith("| cameras | configuration | round | processed frames/s")
    assert table[2] == ("| 1 | 1 single-camera node | 1 | 10.0 (10) | 70 | 1000 (1000) | 50 | "
                        "1.0 → 2.0 |")
    assert len(table) == 2 + 9


def test_process_readers_and_node_command_lines(tmp_path, monkeypatch):
    import os

    assert proc_memory(os.getpid())["VmRSS"] > 1.0 and proc_cpu_s(os.getpid()) > 0.0
    assert proc_memory(2**22 + 12345) == {}  # no such process
    started, envs = [], []

    class FakePopen:
        def __init__(self, args, **kwargs):
            started.append(args)
            envs.append(kwargs["env"])

    monkeypatch.setattr("benchmarks.bench_multicam.subprocess.Popen", FakePopen)
    start_nodes("multi", 2, tmp_path, {"device": "cuda"})
    start_nodes("separate", 2, tmp_path, env={"OMP_NUM_THREADS": "1"})
    tails = [a[a.index("--ros-args") + 1:] for a in started]
    assert tails == [
        ["-r", "__ns:=/bench", "-p", "cameras:=[cam0,cam1]", "-p", "log_period:=0.0", "-p",
         "device:=cuda"],
        ["-r", "__ns:=/bench/cam0", "-p", "log_period:=0.0"],
        ["-r", "__ns:=/bench/cam1", "-p", "log_period:=0.0"]]
    assert envs[0] == dict(os.environ)  # the benchmark's own environment (loopback DDS)
    assert [e["OMP_NUM_THREADS"] for e in envs[1:]] == ["1", "1"]


def test_all_outputs_env_and_configs_reach_every_measurement(monkeypatch):
    import benchmarks.bench_multicam as bench

    calls = []

    def fake_measure(rclpy, config, n, seconds, warmup, rate, size, log_dir, params, log, env,
                     outputs):
        calls.append((config, n, params, env, outputs))
        return {**row(config, n, 10.0, 1000.0), "latency_ms": {"cam0": 70.0}}

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench, "apply_loopback_dds", lambda: None)
    assert bench.main(["--cameras", "4", "--outputs", "all", "--configs", "multi",
                       "--env", "XNET_NATIVE_THREADS=1", "--param", "fy:=500",
                       "--size", "1280x720"]) == 0
    (config, n, params, env, outputs), = calls
    assert (config, n) == ("multi", 4)
    assert outputs == ("depth", "depth/camera_info", "semantic/labels", "semantic/color",
                       "points")
    assert params == {"fx": "1024.0", "fy": "500"}  # points need intrinsics; --param wins
    assert env == {"XNET_NATIVE_THREADS": "1"}
    calls.clear()
    bench.main(["--cameras", "1", "--separate-env", "OMP_NUM_THREADS=1"])
    assert [(c[0], c[2], c[3], c[4]) for c in calls] == [
        ("multi", {}, {}, ("depth",)), ("separate", {}, {"OMP_NUM_THREADS": "1"}, ("depth",))]
