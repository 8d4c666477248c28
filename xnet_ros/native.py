"""The native post-processing kernels (`src/postprocess.c`), loaded with ctypes; ROS-free.

`colcon build` (and `make msgs`) compile `libxnet_ros_postprocess.so` and install it beside this
module (colcon) or into `<prefix>/lib` (found through `LD_LIBRARY_PATH` or `AMENT_PREFIX_PATH`).
Without it, or with `XNET_NATIVE=0` in the environment, `available()` is False and the callers
(`geometry.depth_to_cloud`, `outputs.build_outputs`) run their numpy path: the same bytes
(test/xnet_ros/test_native.py), a few times slower. `status()` says which is in use and why.
ctypes releases the GIL for each call, so other threads run meanwhile.

Large outputs (from `SPLIT_MIN_BYTES`: 640x480 and up at the default stride) are built in two
halves of rows, the second on a helper thread the library starts on first use (not a Python
thread); the bytes are the same either way. `XNET_NATIVE_THREADS=1` keeps every call on the
caller's thread; `set_split` changes it at run time (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LIBRARY", "SPLIT_MIN_BYTES", "address", "all_above", "available", "cloud",
           "cloud_count", "disabled", "missing", "nearest_labels", "set_split", "split_calls",
           "splitting", "status"]

LIBRARY = "libxnet_ros_postprocess.so"
VERSION = 4  # xnet_postprocess_version() of the source this module matches (its signatures)
# Output bytes from which a call runs in two halves on two threads: below ~1 MB, waking the
# helper costs about what it saves (2-core VM: build_outputs 0.9x at 640x480, 0.75x at
# 1920x1080; docs/benchmarks.md).
SPLIT_MIN_BYTES = 1 << 20

_i64, _ptr, _f32, _int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "xnet_postprocess_version": ([], _int),
    "xnet_set_split": ([_int, _i64], _int),
    "xnet_split_calls": ([], _i64),
    "xnet_all_above": ([_ptr, _i64, ctypes.c_double], _int),
    "xnet_cloud_count": ([_ptr, ctypes.c_ssize_t, _i64, _i64, _i64, _int, _f32], _i64),
    "xnet_cloud": ([_ptr, ctypes.c_ssize_t, _i64, _i64, _i64, _ptr, _ptr, _int, _f32, _ptr,
                    ctypes.c_ssize_t, _ptr, ctypes.c_ssize_t, _int, _int, _ptr, _i64], _i64),
    "xnet_nearest_labels": ([_ptr, _i64, _i64, ctypes.c_ssize_t, _int, _ptr, _i64, _ptr, _i64,
                             _ptr, _ptr, _i64, _ptr], _int),
}


def _candidates() -> list[str]:
    explicit = os.environ.get("XNET_NATIVE_LIB")
    if explicit:
        return [explicit]
    paths = [str(Path(__file__).with_name(LIBRARY)), LIBRARY]  # beside us; LD_LIBRARY_PATH
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            paths.append(os.path.join(prefix, "lib", LIBRARY))
    return paths


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Any, str]:
    """(the library or None, how it was found or why not)."""
    if os.environ.get("XNET_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "off (XNET_NATIVE=0): numpy post-processing"
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(str(exc))
            continue
        try:
            version = lib.xnet_postprocess_version
            version.argtypes, version.restype = _SIGNATURES["xnet_postprocess_version"]
            found = version()
        except AttributeError:
            found = None
        if found != VERSION:
            return None, (f"{path} is version {found}, this code needs {VERSION} (rebuild: "
                          "colcon build / make msgs): numpy post-processing")
        for name, (args, result) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
        one_thread = os.environ.get("XNET_NATIVE_THREADS", "").strip() == "1"
        threads = 1 if one_thread or _cores() < 2 else 2
        lib.xnet_set_split(threads, SPLIT_MIN_BYTES)
        global _split
        _split = (threads, SPLIT_MIN_BYTES)
        one = ", one thread per call (XNET_NATIVE_THREADS=1)" if one_thread else ""
        return lib, f"native ({path}{one})"
    explicit = " (XNET_NATIVE_LIB)" if os.environ.get("XNET_NATIVE_LIB") else ""
    return None, (f"{LIBRARY} not found{explicit}, numpy post-processing (build it with colcon "
                  f"build or make msgs); tried: {'; '.join(errors[:3])}")


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_disabled = 0


def available() -> bool:
    return _load()[0] is not None and not _disabled


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """The numpy path inside this block, in every thread (benchmarks, tests)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def status() -> str:
    return _load()[1]


def missing() -> bool:
    """Not loaded although not turned off (XNET_NATIVE=0): worth a warning."""
    return _load()[0] is None and not _load()[1].startswith("off ")


def address(buffer: Any) -> int | None:
    """Where an array's first item, or a contiguous bytes-like buffer's first byte, is (None
    for None). ctypes' view of a writable contiguous buffer is 4x faster than numpy's
    `__array_interface__`; the hot path takes ~20 addresses per frame (kernels, CDR framing)."""
    if buffer is None:
        return None
    if isinstance(buffer, np.ndarray):
        flags = buffer.flags
        writable = flags.writeable and flags.c_contiguous and buffer.size
    else:
        buffer = memoryview(buffer)
        writable = not buffer.readonly and buffer.nbytes
    if writable:
        return ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    if not isinstance(buffer, np.ndarray):
        buffer = np.frombuffer(buffer, np.uint8)
    return buffer.ctypes.data


_split = (1, SPLIT_MIN_BYTES)  # what the library was last told (every change goes through here)


def set_split(threads: int, min_bytes: int = SPLIT_MIN_BYTES) -> int:
    """Run calls with at least `min_bytes` of output in two halves when `threads` is 2 (1:
    always on the caller's thread); the previous thread count."""
    global _split
    previous = _load()[0].xnet_set_split(threads, min_bytes)
    _split = (threads, min_bytes)
    return previous


@contextlib.contextmanager
def splitting(threads: int, min_bytes: int = SPLIT_MIN_BYTES) -> Iterator[None]:
    """`set_split(threads, min_bytes)` inside this block, the previous setting after it
    (tests, benchmarks)."""
    _load()
    previous = _split
    set_split(threads, min_bytes)
    try:
        yield
    finally:
        set_split(*previous)


def split_calls() -> int:
    """How many calls so far ran in two halves."""
    return _load()[0].xnet_split_calls()


def _buffer(out: Any) -> tuple[int | None, int]:
    """(address, size in bytes) of a writable bytes-like buffer."""
    view = memoryview(out)
    if view.readonly:
        raise ValueError("the output buffer is read-only")
    return (address(view) if view.nbytes else None), view.nbytes


def _grid(depth: np.ndarray, stride: int) -> tuple[int, int]:
    """(rows, cols) of every stride-th pixel; ValueError for what the kernels cannot read."""
    if depth.ndim != 2 or depth.dtype != np.float32 or depth.strides[1] != 4 or stride < 1:
        raise ValueError(f"depth must be (H, W) float32 with adjacent items and stride >= 1, "
                         f"got {depth.dtype} {depth.shape} strides {depth.strides}, {stride}")
    return -(-depth.shape[0] // stride), -(-depth.shape[1] // stride)


def _check_planes(depth: np.ndarray, rgb: np.ndarray | None, labels: np.ndarray | None,
                  rays: tuple[int, int], grid: tuple[int, int]) -> None:
    if rays != grid:
        raise ValueError(f"{rays[0]} row and {rays[1]} column factors for a {grid} grid")
    size = depth.shape
    if rgb is not None and (rgb.shape != (*size, 3) or rgb.dtype != np.uint8
                            or rgb.strides[1:] != (3, 1)):
        raise ValueError(f"rgb must be {size} x 3 uint8 with adjacent pixels, got {rgb.dtype} "
                         f"{rgb.shape} strides {rgb.strides}")
    if labels is not None and (labels.shape != size or labels.dtype not in (np.uint8, np.uint16)
                               or labels.strides[1] != labels.itemsize):
        raise ValueError(f"labels must be {size} uint8/uint16 with adjacent items, got "
                         f"{labels.dtype} {labels.shape} strides {labels.strides}")


def all_above(values: np.ndarray, threshold: float) -> bool:
    """Every value of a C-contiguous float32 array finite and above `threshold` (False when
    empty): `min > threshold` with `min` and `max` finite, in one pass."""
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        raise ValueError(f"need a C-contiguous float32 array, got {values.dtype}")
    return bool(_load()[0].xnet_all_above(address(values), values.size, threshold))


def cloud_count(depth: np.ndarray, stride: int, max_range: float | None) -> int:
    """Valid points among every stride-th pixel of float32 `depth` (items contiguous)."""
    rows, cols = _grid(depth, stride)
    return _load()[0].xnet_cloud_count(
        address(depth), depth.strides[0], rows, cols, stride, max_range is not None,
        0.0 if max_range is None else max_range)


def cloud(depth: np.ndarray, stride: int, col_factor: np.ndarray, row_factor: np.ndarray,
          max_range: float | None, rgb: np.ndarray | None, labels: np.ndarray | None,
          dense: bool, out: Any) -> int:
    """`xnet_cloud` into the buffer `out` (writable, len(col_factor) * len(row_factor) points or
    the valid ones when dense); the number of valid points. float32 `depth`, (H, W, 3) uint8
    `rgb` and uint8/uint16 `labels` with contiguous items (pixels), any row stride."""
    col_factor = np.ascontiguousarray(col_factor, np.float32)
    row_factor = np.ascontiguousarray(row_factor, np.float32)
    _check_planes(depth, rgb, labels, (len(row_factor), len(col_factor)), _grid(depth, stride))
    out_address, nbytes = _buffer(out)
    valid = _load()[0].xnet_cloud(
        address(depth), depth.strides[0], len(row_factor), len(col_factor), stride,
        address(col_factor), address(row_factor), max_range is not None,
        0.0 if max_range is None else max_range, address(rgb),
        0 if rgb is None else rgb.strides[0], address(labels),
        0 if labels is None else labels.strides[0], 0 if labels is None else labels.itemsize,
        dense, out_address, nbytes)
    step = 12 + 4 * (rgb is not None) + 4 * (labels is not None)
    if valid < 0 or (dense and valid * step > nbytes):
        raise ValueError(f"a {nbytes}-byte buffer is too small for the cloud")
    return valid


def nearest_labels(src: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   labels_out: np.ndarray | None, lut: np.ndarray | None,
                   color_out: np.ndarray | None) -> None:
    """labels_out[i, j] = src[rows[i], cols[j]] and color_out[i, j] = lut[that label] (black
    past the table); either output may be None. uint8/uint16 `src`, int64 index maps,
    C-contiguous outputs of its type (labels) and uint8 RGB (colours)."""
    if src.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"labels must be uint8 or uint16, got {src.dtype}")
    for out, dtype in ((labels_out, src.dtype), (color_out, np.uint8)):
        if out is not None and (out.dtype != dtype or not out.flags.c_contiguous
                                or out.shape[:2] != (len(rows), len(cols))):
            raise ValueError(f"output {out.dtype} {out.shape} is not a C-contiguous "
                             f"{np.dtype(dtype)} array of {len(rows)}x{len(cols)} pixels")
    if src.strides[-1] != src.itemsize:
        src = np.ascontiguousarray(src)
    rows, cols = np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(cols, np.int64)
    if color_out is not None and lut is None:
        raise ValueError("colours need a palette")
    if lut is not None:
        lut = np.ascontiguousarray(lut, np.uint8).reshape(-1, 3)
    if _load()[0].xnet_nearest_labels(
            address(src), *src.shape, src.strides[0], src.itemsize, address(rows), len(rows),
            address(cols), len(cols), address(labels_out), address(lut),
            0 if lut is None else len(lut), address(color_out)) < 0:
        raise ValueError(f"indices outside the {src.shape} labels")
