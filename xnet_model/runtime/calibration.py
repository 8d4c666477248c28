"""Calibration data for TensorRT engines: int8 calibration images (and their remembered digest)
and the fp16 autocast reference batches, preprocessed exactly like the Predictor."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from ..metadata import ModelMetadata
from .backends import BackendError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
INT8_CALIBRATION_LIMIT = 256


def calibration_files(directory: str | Path) -> list[Path]:
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BackendError(f"no calibration images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return files


def calibration_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _manifest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        st = path.stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def remembered_calibration_digest(files: list[Path], cache_dir: Path) -> str:
    """`calibration_digest(files)`, computed once per set of (path, size, mtime) and then read
    from `<cache>/calibration-digests.json` (hashing thousands of images on every start is
    what made int8 starts slow)."""
    memo_path = cache_dir / "calibration-digests.json"
    manifest = _manifest(files)
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if manifest in memo:
        return memo[manifest]
    digest = calibration_digest(files)
    memo[manifest] = digest
    with contextlib.suppress(OSError):  # a read-only cache just recomputes next time
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        memo_path.write_text(json.dumps(memo, indent=1, sort_keys=True))
    return digest


def normalise(images: list[np.ndarray], meta: ModelMetadata, size: tuple[int, int]) -> list:
    """RGB uint8 images -> normalised (1, 3, H, W) float32 batches, exactly like Predictor."""
    from .images import normalise_chw, resize

    mean = np.asarray(meta.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(meta.std, np.float32) * 255.0)
    return [normalise_chw(resize(image, size[0], size[1]), mean, inv_std)[None]
            for image in images]


def calibration_batches(files: list[Path], meta, size: tuple[int, int],
                        limit: int = INT8_CALIBRATION_LIMIT) -> list[np.ndarray]:
    """Calibration images as normalised (1, 3, H, W) float32 batches (Predictor's preprocessing).
    `meta`: ModelMetadata (or a ModelConfig: its data.mean/std)."""
    from .images import read_rgb

    meta = getattr(meta, "data", meta)
    images = []
    for path in files[:limit]:
        image = read_rgb(path)
        if image is None:
            raise BackendError(f"unreadable calibration image {path}")
        images.append(image)
    return normalise(images, meta, size)


def synthetic_batches(meta: ModelMetadata, size: tuple[int, int], count: int) -> list:
    """`count` procedural indoor frames (xnet_model.data.synthetic) at `size`, normalised: the
    fp16 autocast reference data when no calibration images are given."""
    from .images import synthetic_rgb

    return normalise([synthetic_rgb(seed, *size) for seed in range(count)], meta, size)
