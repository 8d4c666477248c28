"""Process-wide allocator tuning for per-frame pipelines (renderer, point clouds, the node)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def tune_malloc(threshold_bytes: int = 256 << 20) -> bool:
    """Keep freed multi-MB frame buffers mapped (glibc mallopt); False where unavailable.

    With glibc's defaults every full-frame temporary above 128 KiB is mmapped, unmapped on
    free, and page-faulted in again on the next frame: a 640x480 point cloud takes 8-13 ms
    instead of ~2.7 ms, the synthetic renderer runs at half speed. The cost is up to
    `threshold_bytes` of freed memory kept by the process.
    """
    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(m_trim_threshold, threshold_bytes)) and bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)
    )


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let the threads created from now on share at most `arenas` glibc malloc arenas; False
    where unavailable.

    glibc gives busy threads arenas of their own (up to 8 per core), and with `tune_malloc`
    each keeps up to its trim threshold of freed memory. A multi-threaded node (executor,
    inference, delivery and CPU-stream threads) then holds hundreds of MB it does not use:
    4 cameras on 2 cores, 1202-1230 MB with the default arenas against 955-991 MB with 2, at
    the same frames/s (docs/benchmarks.md).
    """
    m_arena_max = -8
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(m_arena_max, int(arenas)))


def release_free_memory() -> bool:
    """Return freed heap pages to the OS (glibc malloc_trim) after a one-off burst such as
    loading a model, so a long-running process does not keep them; False where unavailable."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
