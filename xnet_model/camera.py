"""The canonical camera: one network, metric depth through any lens.

A monocular network judges distance by apparent size, and apparent size (pixels) = size x f /
depth, where f is the focal length in pixels. A network trained through one lens therefore
learns that lens's f. Metric3D (Yin et al., ICCV 2023) removes the ambiguity with a canonical
camera; this is its label-space variant, the one its released inference code applies after
resizing to a fixed network input. A camera-aware model (`ModelMetadata.canonical_focal` = f_c,
in pixels of the image the network sees) is trained on targets

    depth_c = depth x f_c / f_net        (f_net: the training image's focal at the network input)

which depend on pixels alone, and at inference the prediction goes back to metres through the
real camera: depth = depth_c x f_net / f_c. The network input never changes (fixed-size deploy
artifacts keep working); only one scalar per image does. Without a focal the network's output
is used as it is, which is the old single-camera behaviour (the camera is assumed canonical).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_focal(fx: float, what: str = "fx") -> float:
    """`fx` as a float, or ValueError when it is not a finite focal length > 0."""
    try:
        value = float(fx)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {fx!r} is not a focal length in pixels") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what}: {fx!r} must be a finite focal length > 0 (pixels)")
    return value


def resized_focal(fx: float, image_size: Sequence[int], size: Sequence[int]) -> float:
    """fx of an image of `image_size` (H, W) once resized to `size` (H, W): fx times the
    geometric mean of the two resize factors (equal for an aspect-preserving resize; square
    pixels assumed). Not checked: a NaN focal (unknown) stays NaN."""
    (h, w), (nh, nw) = image_size, size
    return float(fx) * math.sqrt((nh / h) * (nw / w))


def network_focal(fx: float, image_size: Sequence[int], network_size: Sequence[int]) -> float:
    """fx of an image of `image_size` (H, W) in pixels of the network input of
    `network_size` (H, W) it is resized to (`resized_focal` of a checked focal)."""
    return resized_focal(check_focal(fx), image_size, network_size)


def metric_scale(canonical_focal: float | None, fx: float | None,
                 image_size: Sequence[int], network_size: Sequence[int]) -> float:
    """The factor from the network's depth to metres for an image of `image_size` taken with
    focal `fx` (its pixels): f_net / f_c. 1.0 when the model has no canonical camera or no fx
    is given (today's behaviour)."""
    if canonical_focal is None or fx is None:
        return 1.0
    return network_focal(fx, image_size, network_size) / float(canonical_focal)
