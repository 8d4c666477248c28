"""Allocator tuning (glibc mallopt) for the per-frame pipelines and the node."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from xnet_model import memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")


@glibc
def test_arena_limit_bounds_what_threads_keep():
    """Eight live threads, in turn, each allocate 24 MB in pieces and free it. With an arena
    each (glibc's default) and `tune_malloc`'s trim threshold, every arena keeps its 24 MB;
    sharing 2 arenas, each thread reuses what the previous ones freed."""
    script = textwrap.dedent("""
        import sys, threading
        from xnet_model import memory
        assert memory.tune_malloc()
        if sys.argv[1] == "limited":
            assert memory.limit_malloc_arenas(2)
        turns = [threading.Event() for _ in range(9)]
        finished = threading.Event()
        def run(i):
            import numpy as np
            turns[i].wait()
            bufs = [np.ones(3 << 20, np.uint8) for _ in range(8)]  # 8 x 3 MB, then freed
            del bufs
            turns[i + 1].set()
            finished.wait()  # stay alive: the arena stays attached to this thread
        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        turns[0].set()
        turns[8].wait()
        rss = [int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmRSS")][0]
        finished.set()
        for t in threads:
            t.join()
        print(rss // 1024)
    """)
    rss = {}
    for mode in ("default", "limited"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        rss[mode] = int(out.stdout.split()[-1])
    # 8 x 24 MB kept against 1-2 x 24 MB: at least 4 threads' worth apart
    assert rss["default"] - rss["limited"] >= 96, rss


def test_tuning_reports_success_on_glibc():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc mallopt")
    assert memory.tune_malloc() is True
    assert memory.limit_malloc_arenas(64) is True  # generous: does not change this process
