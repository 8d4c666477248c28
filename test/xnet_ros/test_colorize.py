"""Label palettes and depth colouring for preview images."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from xnet_ros.colorize import colorize_depth, colorize_labels, default_palette


def test_palette_deterministic_and_known_first_colours() -> None:
    palette = default_palette(150)
    assert palette.shape == (150, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette, default_palette(150))
    # Pascal VOC colours of ids 1, 2, 3, 4, 8.
    np.testing.assert_array_equal(
        palette[[0, 1, 2, 3, 7]],
        [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [64, 0, 0]],
    )
    np.testing.assert_array_equal(default_palette(10), palette[:10])


def voc_colormap(n: int) -> np.ndarray:
    """The Pascal VOC devkit colour map (labelcolormap / VOCdevkit `color_map`), written out:
    bits 0, 1, 2 of the id go to the top bits of R, G, B, the next three to the next bits..."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


# sha256 of default_palette(65535).tobytes(), pinned from
#   hashlib.sha256(default_palette(65535).tobytes()).hexdigest()
# (it equals the VOC colour map of ids 1..65535, see voc_colormap). A change re-colours every
# published semantic/color image and point-cloud label colour: change it only on purpose.
PINNED_PALETTE_SHA256 = "1c81e295e806785ed5a01c42e0cc5bc1ac8bb4e4129c4506c3ad003a6e54c646"


def test_palette_is_the_voc_colour_map_and_pinned() -> None:
    palette = default_palette(65535)
    np.testing.assert_array_equal(palette[:1023], voc_colormap(1024)[1:])  # class i = VOC i + 1
    assert hashlib.sha256(palette.tobytes()).hexdigest() == PINNED_PALETTE_SHA256


def test_palette_distinct_and_never_black_up_to_65535() -> None:
    palette = default_palette(65535)
    assert len(np.unique(palette, axis=0)) == 65535
    assert not (palette == 0).all(axis=1).any()


@pytest.mark.parametrize("num_classes", [0, -1, 65536])
def test_palette_rejects_bad_sizes(num_classes: int) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        default_palette(num_classes)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_colorize_labels_values_and_out_of_range(dtype) -> None:
    palette = default_palette(5)
    labels = np.array([[0, 1, 2], [4, 5, 200]], dtype=dtype)
    out = colorize_labels(labels, palette)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], palette[[0, 1, 2]])
    np.testing.assert_array_equal(out[1, 0], palette[4])
    np.testing.assert_array_equal(out[1, 1:], 0)


def test_colorize_labels_negative_ids_are_black() -> None:
    out = colorize_labels(np.array([[-1, 3]]), default_palette(4))
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], default_palette(4)[3])


def test_colorize_labels_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="palette"):
        colorize_labels(np.zeros((2, 2), np.int64), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="integers"):
        colorize_labels(np.zeros((2, 2), np.float32), default_palette(4))


def turbo_rgb(level: int) -> np.ndarray:
    bgr = cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_TURBO)
    return bgr[0, 0, ::-1]


def test_colorize_depth_maps_range_to_turbo_ends() -> None:
    depth = np.array([[1.0, 10.0, 0.5, 50.0, 5.5]], np.float32)
    out = colorize_depth(depth, 1.0, 10.0)
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], turbo_rgb(255))  # near: red end
    np.testing.assert_array_equal(out[0, 1], turbo_rgb(0))  # far: blue end
    np.testing.assert_array_equal(out[0, 2], turbo_rgb(255))  # clipped
    np.testing.assert_array_equal(out[0, 3], turbo_rgb(0))
    np.testing.assert_array_equal(out[0, 4], turbo_rgb(127))
    assert out[0, 0, 0] > out[0, 0, 2] and out[0, 1, 2] > out[0, 1, 0]  # RGB order, not BGR


def test_colorize_depth_invalid_is_black() -> None:
    depth = np.array([[np.nan, 0.0, -2.0, np.inf, 3.0]], np.float32)
    out = colorize_depth(depth, 0.1, 10.0)
    np.testing.assert_array_equal(out[0, :4], 0)
    assert out[0, 4].any()


def test_colorize_depth_rejects_bad_range() -> None:
    with pytest.raises(ValueError, match="max_depth > min_depth"):
        colorize_depth(np.ones((2, 2), np.float32), 5.0, 5.0)
    with pytest.raises(ValueError, match="2-D"):
        colorize_depth(np.ones((2, 2, 1), np.float32), 0.0, 5.0)
