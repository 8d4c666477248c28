"""The native post-processing kernels: the numpy path's bytes, bit for bit, on awkward inputs;
a clear status and the numpy fallback when the library is missing, off or too small a buffer
is given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xnet_ros import native
from xnet_ros.geometry import Intrinsics, depth_to_cloud
from xnet_ros.outputs import COLOR, LABELS, POINTS, OutputOptions, build_outputs

REPO = Path(__file__).resolve().parents[2]
BUILT = REPO / "install" / "lib" / native.LIBRARY

needs_native = pytest.mark.skipif(not native.available(), reason=native.status())


@pytest.fixture(params=[1, 2], ids=["one-thread", "halves"])
def kernel_threads(request):
    """Each call on one thread, or every call (however small) in two halves of rows on two."""
    with native.splitting(request.param, 0):
        yield request.param


def numpy_path(fn, *args, **kwargs):
    with native.disabled():
        assert not native.available()
        return fn(*args, **kwargs)


def awkward_depth(rng, shape) -> np.ndarray:
    """Random metres with every special value depth_to_cloud must treat like numpy: NaNs of
    both signs and with payloads, +-inf, +-0, negatives, subnormals, values at max_range."""
    depth = rng.uniform(-1.0, 12.0, shape).astype(np.float32)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, -3.0, 1e-42, 7.0,
                         np.nextafter(np.float32(7.0), np.float32(8.0))], np.float32)
    specials = np.concatenate([specials, np.array([0x7FC00001, 0xFFC12345], np.uint32)
                               .view(np.float32)])
    where = rng.random(shape) < 0.15
    depth[where] = rng.choice(specials, int(where.sum()))
    return depth


@needs_native
@pytest.mark.parametrize("shape, stride", [((48, 64), 1), ((37, 53), 2), ((37, 53), 3),
                                           ((5, 7), 8), ((1, 1), 1), ((120, 161), 2)])
@pytest.mark.parametrize("organized", [True, False])
@pytest.mark.parametrize("max_range", [None, 7.0])
def test_cloud_is_the_numpy_cloud_bit_for_bit(shape, stride, organized, max_range,
                                              kernel_threads):
    rng = np.random.default_rng(sum(shape) + stride)
    depth = awkward_depth(rng, shape)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    labels16 = rng.integers(0, 65536, shape).astype(np.uint16)
    intr = Intrinsics(0.9 * shape[1], 1.1 * shape[1], shape[1] / 2 - 0.3, shape[0] / 2 + 0.7,
                      shape[1], shape[0])
    for color, labels in ((rgb, labels16), (rgb, labels16.astype(np.uint8)), (None, None),
                          (rgb, None), (None, labels16), (rgb, labels16.astype(np.int64))):
        kw = {"stride": stride, "organized": organized, "max_range": max_range}
        ref = numpy_path(depth_to_cloud, depth, intr, color, labels, **kw)
        got = depth_to_cloud(depth, intr, color, labels, **kw)
        assert bytes(got.data) == bytes(ref.data)
        for f in ("height", "width", "fields", "point_step", "row_step", "is_dense"):
            assert getattr(got, f) == getattr(ref, f), f


@needs_native
def test_cloud_from_strided_float64_and_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    big = awkward_depth(rng, (60, 90)).astype(np.float64)
    depth = big[::2, 1::3]  # (30, 30), float64, neither axis contiguous
    rgb = np.ascontiguousarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8))[..., 1:]
    labels = rng.integers(0, 9, (30, 60)).astype(np.uint8)[:, ::2]
    intr = Intrinsics(25.0, 26.0, 14.5, 15.5, 30, 30)
    ref = numpy_path(depth_to_cloud, depth, intr, rgb, labels, stride=2)
    got = depth_to_cloud(depth, intr, rgb, labels, stride=2)
    assert bytes(got.data) == bytes(ref.data) and got.is_dense == ref.is_dense


@needs_native
@pytest.mark.parametrize("room", [2, 13])  # dense: both halves' points (12 each) do not fit
def test_cloud_writes_nothing_past_a_small_buffer(kernel_threads, room):
    depth = np.full((4, 6), 2.0, np.float32)
    x_per_z, y_per_z = np.zeros(6, np.float32), np.zeros(4, np.float32)
    guard = bytearray(4 * 6 * 12 + 8)
    with pytest.raises(ValueError, match="too small"):
        native.cloud(depth, 1, x_per_z, y_per_z, None, None, None, False,
                     memoryview(guard)[:4 * 6 * 12 - 1])
    assert guard == bytearray(len(guard))
    with pytest.raises(ValueError, match="too small"):  # dense: 24 valid points
        native.cloud(depth, 1, x_per_z, y_per_z, None, None, None, True,
                     memoryview(guard)[:room * 12 + 5])
    assert guard[room * 12:] == bytearray(len(guard) - room * 12)
    assert guard[:room * 12] == np.array([[0, 0, 2]] * room, np.float32).tobytes()


@needs_native
@pytest.mark.parametrize("dtype, classes", [(np.uint8, 12), (np.uint16, 300), (np.int32, 300)])
@pytest.mark.parametrize("src, size, out_size", [((120, 160), (480, 640), None),
                                                 ((60, 80), (375, 1242), (200, 500)),
                                                 ((48, 64), (48, 64), None),
                                                 ((48, 64), (48, 64), (17, 23))])
def test_labels_and_colours_are_the_numpy_ones(dtype, classes, src, size, out_size,
                                               kernel_threads):
    """Labels past the palette are black; a uint16 table and the default palette included."""
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, src).astype(dtype)
    rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    depth = rng.uniform(0.6, 9.0, src).astype(np.float32)
    intr = Intrinsics(0.8 * size[1], 0.8 * size[1], size[1] / 2, size[0] / 2, size[1], size[0])
    palette = rng.integers(0, 256, (10, 3), dtype=np.uint8)  # ids >= 10: black
    for opts in (OutputOptions(output_size=out_size, palette=palette, num_classes=10,
                               points_stride=2),
                 OutputOptions(output_size=out_size, num_classes=classes)):
        for wanted in ({LABELS, COLOR, POINTS}, {COLOR}, {POINTS}):
            ref = numpy_path(build_outputs, rgb, depth, labels, intr, opts, wanted)
            got = build_outputs(rgb, depth, labels, intr, opts, wanted)
            assert set(got.fields) == set(ref.fields) == wanted
            for name in wanted - {POINTS}:
                assert bytes(got.fields[name]["data"]) == bytes(ref.fields[name]["data"]), name
            if POINTS in wanted:
                assert bytes(got.fields[POINTS].data) == bytes(ref.fields[POINTS].data)


@needs_native
def test_nearest_labels_checks_its_outputs():
    src = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rows, cols = np.array([0, 0, 2]), np.array([3, 1])
    out = np.empty((3, 2), np.uint8)
    colors = np.empty((3, 2, 3), np.uint8)
    lut = np.arange(30, dtype=np.uint8).reshape(10, 3)
    native.nearest_labels(src, rows, cols, out, lut, colors)
    np.testing.assert_array_equal(out, [[3, 1], [3, 1], [11, 9]])
    np.testing.assert_array_equal(colors[2], [[0, 0, 0], [27, 28, 29]])  # 11 is past the table
    with pytest.raises(ValueError, match="C-contiguous"):
        native.nearest_labels(src, rows, cols, np.empty((3, 4), np.uint8)[:, ::2], None, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        native.nearest_labels(src, rows, cols, np.empty((2, 2), np.uint8), None, None)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        native.nearest_labels(src.astype(np.int32), rows, cols, None, lut, colors)
    before = out.copy()
    with pytest.raises(ValueError, match=r"indices outside the \(3, 4\) labels"):
        native.nearest_labels(src, np.array([0, 0, 3]), cols, out, lut, colors)
    with pytest.raises(ValueError, match="indices outside"):
        native.nearest_labels(src, rows, np.array([-1, 1]), out, lut, colors)
    np.testing.assert_array_equal(out, before)  # nothing written
    with pytest.raises(ValueError, match="palette"):
        native.nearest_labels(src, rows, cols, out, None, colors)


@needs_native
def test_cloud_rejects_what_it_cannot_read():
    """Checked before the C code runs: it never reads outside the arrays it is given."""
    depth = np.full((4, 6), 2.0, np.float32)
    rays = (np.zeros(3, np.float32), np.zeros(2, np.float32))  # stride 2: 3 columns, 2 rows
    out = bytearray(4 * 6 * 20)

    def cloud(depth=depth, stride=2, rays=rays, rgb=None, labels=None):
        return native.cloud(depth, stride, *rays, None, rgb, labels, False, out)

    assert cloud() == 6
    with pytest.raises(ValueError, match="read-only"):
        native.cloud(depth, 2, *rays, None, None, None, False, bytes(len(out)))
    with pytest.raises(ValueError, match="float32"):
        cloud(depth=depth.astype(np.float64))
    with pytest.raises(ValueError, match="adjacent items"):
        cloud(depth=np.full((4, 12), 2.0, np.float32)[:, ::2])
    with pytest.raises(ValueError, match="column factors"):
        cloud(stride=1)
    with pytest.raises(ValueError, match="rgb must be"):
        cloud(rgb=np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="labels must be"):
        cloud(labels=np.zeros((4, 6), np.int32))


def test_the_built_library_is_found():
    """`make msgs` builds it into install/lib; with the test environment (tools/ros_env.sh)
    the node must use it, not silently fall back to numpy."""
    if not BUILT.is_file():
        pytest.skip(f"{BUILT} is not built (make msgs)")
    if os.environ.get("XNET_NATIVE", "1") == "0":
        pytest.skip("XNET_NATIVE=0")
    assert native.available(), native.status()
    assert native.status().startswith("native (")


@pytest.mark.parametrize("env, expect", [
    ({"XNET_NATIVE": "0"}, "off (XNET_NATIVE=0): numpy post-processing"),
    ({"XNET_NATIVE_LIB": "/nonexistent/libx.so"},
     "libxnet_ros_postprocess.so not found (XNET_NATIVE_LIB), numpy post-processing"),
])
def test_status_says_why_numpy_is_used(env, expect):
    code = ("from xnet_ros import native, geometry\n"
            "import numpy as np\n"
            "print(native.available(), native.status())\n"
            "c = geometry.depth_to_cloud(np.ones((2, 2), np.float32), "
            "geometry.Intrinsics(1, 1, 0, 0, 2, 2))\n"
            "print(c.width, len(c.data))\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    first, second = out.splitlines()
    assert first.startswith(f"False {expect}") and second == "2 48"


def test_cmake_builds_the_library_and_installs_it_beside_the_module():
    text = (REPO / "CMakeLists.txt").read_text()
    target = native.LIBRARY.removeprefix("lib").removesuffix(".so")
    assert f"add_library({target} SHARED src/postprocess.c)" in text
    options = next(line for line in text.splitlines() if "target_compile_options" in line)
    assert "-ffp-contract=off" in options and "fast-math" not in options  # exact float32
    assert f'install(TARGETS {target} LIBRARY DESTINATION "${{PYTHON_INSTALL_DIR}}/xnet_ros")' \
        in text  # colcon: found beside native.py
    assert f"install(TARGETS {target} LIBRARY DESTINATION lib)" in text  # make msgs: install/lib


@needs_native
def test_all_above_is_numpys_min_max_check():
    rng = np.random.default_rng(5)
    for values in (awkward_depth(rng, (40, 50)), rng.uniform(0.5, 9.0, (40, 50)),
                   np.full((3, 3), 0.5), np.array([1.0, np.inf]), np.array([np.nan, 2.0]),
                   np.array([]), np.array([1e-42])):
        values = np.asarray(values, np.float32)
        for threshold in (0.0, 0.5, 0.5000001, 1e-43, -1.0):
            lo = float(values.min()) if values.size else np.nan
            hi = float(values.max()) if values.size else np.nan
            expect = bool(np.isfinite(lo) and np.isfinite(hi) and lo > threshold)
            assert native.all_above(values, threshold) == expect, (values[:3], threshold)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        native.all_above(np.ones((4, 4), np.float32)[:, ::2], 0.0)


@pytest.mark.parametrize("source, found", [
    ("int xnet_postprocess_version(void) { return 1; }", "version 1"),
    ("int something_else(void) { return 0; }", "version None"),
])
def test_a_stale_library_is_refused_not_called(tmp_path, source, found):
    """A library from an older build (other signatures) is never called: numpy instead."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "stale.c").write_text(source + "\n")
    lib = tmp_path / native.LIBRARY
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "stale.c")],
                   check=True, timeout=60)
    code = "from xnet_ros import native; print(native.available(), native.status())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "XNET_NATIVE_LIB": str(lib)}, timeout=60, check=True)
    assert out.stdout.startswith(f"False {lib} is {found}, this code needs {native.VERSION}")
