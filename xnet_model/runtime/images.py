"""Image helpers that work with or without OpenCV.

OpenCV (`cv2`) is in the project's environment, but a bare GPU machine with only torch, timm
and onnxruntime may lack it; the Predictor, the TensorRT calibration data and the GPU check
must still run there. `resize` uses cv2 when it imports (bit-compatible with earlier results),
else torch's interpolation (bilinear without antialiasing, which is what cv2's INTER_LINEAR
computes; nearest for labels: cv2's INTER_NEAREST picks floor(x * scale), torch's 'nearest'
the same).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def resize(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """(H, W) or (H, W, C) array -> (height, width[, C]), bilinear or nearest."""
    cv2 = _cv2()
    if cv2 is not None:
        mode = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.resize(image, (width, height), interpolation=mode)
    import torch
    import torch.nn.functional as F

    dtype = image.dtype
    t = torch.from_numpy(np.ascontiguousarray(image))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if nearest:
        out = F.interpolate(t.float(), size=(height, width), mode="nearest")
    else:
        out = F.interpolate(t.float(), size=(height, width), mode="bilinear",
                            align_corners=False)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out = out.round().clamp(info.min, info.max)
    out = out[0, 0] if image.ndim == 2 else out[0].permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy().astype(dtype, copy=False))


def normalise_chw(image: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 `(image - mean) * inv_std` per channel (`mean`,
    `inv_std`: 3 values each, in 0-255 units). Channels go first before the arithmetic: numpy's
    inner loops then run along rows instead of over 3 channels (12x faster; same bits)."""
    x = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    x -= np.asarray(mean, np.float32).reshape(3, 1, 1)
    x *= np.asarray(inv_std, np.float32).reshape(3, 1, 1)
    return x


def read_rgb(path) -> np.ndarray | None:
    """An image file as (H, W, 3) uint8 RGB (None if unreadable); needs cv2 or PIL."""
    cv2 = _cv2()
    if cv2 is not None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if image is None else np.ascontiguousarray(image[..., ::-1])
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception:  # no PIL, or not an image
        return None


def synthetic_rgb(seed: int, height: int, width: int) -> np.ndarray:
    """A test frame: a procedural room (xnet_model.data.synthetic, rendered at 240x320 and
    resized) when its renderer imports, else a seeded pattern of gradients and blocks."""
    try:
        from ..data.synthetic import render_scene

        return resize(render_scene(seed, 240, 320).rgb, height, width)
    except ImportError:
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 17 + y / 23)], -1)
        image = base * rng.uniform(0.4, 1.0, 3)
        for _ in range(6):  # a few flat-coloured boxes, like objects
            y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
            image[y0:y0 + height // 4, x0:x0 + width // 4] = rng.uniform(0, 1, 3)
        return (image * 255).clip(0, 255).astype(np.uint8)
