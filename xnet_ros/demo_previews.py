"""Preview images of the demo: input, depth colour map, label colours, a point-cloud view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .colorize import colorize_depth
from .outputs import COLOR, DEPTH, POINTS


def render_points(xyz: np.ndarray, rgb: np.ndarray, size: tuple[int, int] = (480, 640),
                  eye: tuple[float, float, float] = (1.5, -2.0, -2.5)) -> np.ndarray:
    """Perspective view of optical-frame points from `eye` (up = -y), nearest point wins."""
    h, w = size
    img = np.full((h, w, 3), 40, np.uint8)
    valid = np.isfinite(xyz).all(axis=-1)
    pts, cols = xyz[valid].astype(np.float64), rgb[valid]
    if len(pts) == 0:
        return img
    target = np.array([0.0, 0.0, float(np.median(pts[:, 2]))])
    eye_v = np.asarray(eye, np.float64)
    z_axis = target - eye_v
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross(z_axis, [0.0, -1.0, 0.0])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    cam = (pts - eye_v) @ np.stack([x_axis, y_axis, z_axis], axis=1)
    front = cam[:, 2] > 0.1
    cam, cols = cam[front], cols[front]
    f = 0.8 * w
    hs, ws = h // 2, w // 2  # splat at half resolution, then upscale: no holes
    u = np.round(cam[:, 0] / cam[:, 2] * f / 2 + ws / 2).astype(np.int64)
    v = np.round(cam[:, 1] / cam[:, 2] * f / 2 + hs / 2).astype(np.int64)
    inside = (u >= 0) & (u < ws) & (v >= 0) & (v < hs)
    u, v, depth, cols = u[inside], v[inside], cam[inside, 2], cols[inside]
    small = np.full((hs, ws, 3), 40, np.uint8)
    if len(u):
        pix = v * ws + u
        order = np.lexsort((depth, pix))  # by pixel, nearest first
        first = order[np.unique(pix[order], return_index=True)[1]]
        small.reshape(-1, 3)[pix[first]] = cols[first]
        drawn = np.zeros((hs, ws), np.uint8)
        drawn.reshape(-1)[pix[first]] = 255
        # fill the pinholes between splatted points (not the background around the cloud)
        holes = cv2.morphologyEx(drawn, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) & ~drawn
        if holes.any():
            small = cv2.inpaint(small, holes, 1, cv2.INPAINT_TELEA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def render_top_down(xyz: np.ndarray, rgb: np.ndarray, size: tuple[int, int] = (480, 640),
                    max_range: float | None = None) -> np.ndarray:
    """Bird's-eye view: x to the right, z (forward) up, camera at the bottom centre."""
    h, w = size
    img = np.full((h, w, 3), 40, np.uint8)
    valid = np.isfinite(xyz).all(axis=-1)
    pts, cols = xyz[valid], rgb[valid]
    if len(pts) == 0:
        return img
    zmax = max_range or float(np.percentile(pts[:, 2], 99)) * 1.05
    scale = min((h - 20) / zmax, (w - 20) / (2 * zmax))
    for r in range(1, int(zmax) + 1):  # range rings every metre, under the points
        cv2.circle(img, (w // 2, h - 10), int(r * scale), (90, 90, 90), 1)
    u = np.round(w / 2 + pts[:, 0] * scale).astype(np.int64)
    v = np.round(h - 10 - pts[:, 2] * scale).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    order = np.argsort(pts[inside, 1])[::-1]  # lowest (largest y) first, top-most drawn last
    img[v[inside][order], u[inside][order]] = cols[inside][order]
    return img


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(img.copy())
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 12 + 9 * len(text)), 24), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def write_previews(out: Path, frame: dict[str, Any], max_depth: float) -> list[str]:
    """PNGs from the deserialized messages of one frame (same stamp on every topic)."""
    from .conversions import image_to_array, to_rgb
    from .geometry import unpack_pointcloud, unpack_rgb

    rgb = to_rgb(image_to_array(frame["image"]), frame["image"].encoding)
    depth = image_to_array(frame[DEPTH])
    depth_rgb = colorize_depth(depth, 0.0, max_depth)
    color = image_to_array(frame[COLOR])
    h, w = rgb.shape[:2]
    color = cv2.resize(np.ascontiguousarray(color), (w, h), interpolation=cv2.INTER_NEAREST)
    depth_rgb = cv2.resize(depth_rgb, (w, h), interpolation=cv2.INTER_NEAREST)
    pc = frame[POINTS]
    cloud = unpack_pointcloud(pc.data, pc.fields, pc.point_step, pc.height, pc.width)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    cols = (unpack_rgb(cloud["rgb"]) if "rgb" in cloud
            else np.full(xyz.shape, 200, np.uint8))
    persp = render_points(xyz, cols, (h, w))
    top = render_top_down(xyz, cols, (h, w))
    images = {
        "input.png": rgb,
        "depth.png": depth_rgb,
        "labels.png": color,
        "points.png": np.hstack([_caption(persp, "points (perspective)"),
                                 _caption(top, "points (top-down, 1 m rings)")]),
    }
    overlay = cv2.addWeighted(rgb, 0.5, color, 0.5, 0)
    images["preview.png"] = np.vstack([
        np.hstack([_caption(rgb, "input"), _caption(depth_rgb, f"depth 0-{max_depth:g} m")]),
        np.hstack([_caption(overlay, "semantic"), _caption(persp, "points")]),
    ])
    for name, img in images.items():
        _save_rgb(out / name, img)
    return list(images)
