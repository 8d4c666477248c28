"""The default class palette (shared by the model metadata and the ROS outputs)."""

from __future__ import annotations

import numpy as np

MAX_CLASSES = 65535


def default_palette(num_classes: int) -> np.ndarray:
    """A deterministic (num_classes, 3) uint8 RGB palette, distinct for up to 65535 classes.

    Class i gets the Pascal VOC bit-interleaved colour of i + 1, so no class is black (black
    is reserved for "no label"). The map from i + 1 < 2**24 to colour is a bijection.
    """
    if not 0 < num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    ids = np.arange(1, num_classes + 1, dtype=np.int64)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)
