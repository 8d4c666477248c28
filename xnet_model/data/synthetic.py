"""Seeded procedural RGB-D + semantic scenes: a pinhole camera inside a box room with objects.

World frame (metres): right-handed, +y up. The floor is the plane y=0, the ceiling y=room
height, and the room spans x in [0, sx], z in [0, sz]. Walls are numbered 0: x=0, 1: x=sx,
2: z=0, 3: z=sz. Camera frame: OpenCV optical (x right, y down, z forward). A `CameraPose` is a
position plus yaw (about world +y; yaw=0 looks along +z, yaw=pi/2 along +x) and pitch (> 0 looks
up); there is no roll.

Rendering is analytic ray casting in float32 numpy over all pixels at once. Each pixel's ray is
d = R @ ((u - cx) / fx, (v - cy) / fy, 1), whose optical-axis component is exactly 1, so the
ray parameter t of the first hit *is* the z-depth. Same seed -> bit-identical arrays.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.utils.data

CLASS_NAMES = (
    "wall", "floor", "ceiling", "box", "sphere", "cylinder", "table", "door", "window", "lamp",
)  # fmt: skip
CLASS_PALETTE = np.array(
    [
        [174, 199, 232], [140, 86, 75], [199, 199, 199], [255, 127, 14], [44, 160, 44],
        [214, 39, 40], [148, 103, 189], [227, 119, 194], [23, 190, 207], [255, 230, 0],
    ],
    dtype=np.uint8,
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
MAX_DEPTH = 10.0  # rooms are <= 6.5 x 3.0 x 6.5 m, so every z-depth is below this
CLS = {name: i for i, name in enumerate(CLASS_NAMES)}

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class CameraPose:
    """Camera position (world, m), yaw about +y and pitch (rad); see the module docstring."""

    position: Vec3
    yaw: float = 0.0
    pitch: float = 0.0

    def rotation(self) -> np.ndarray:
        """World-from-camera rotation; columns are the camera x (right), y (down), z axes."""
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        forward, right, down = (sy * cp, sp, cy * cp), (-cy, 0.0, sy), (sp * sy, -cp, sp * cy)
        return np.array([right, down, forward], dtype=np.float64).T

    @classmethod
    def look_at(cls, position: Vec3, target: Vec3) -> CameraPose:
        dx, dy, dz = (float(t - p) for t, p in zip(target, position))
        return cls(tuple(map(float, position)), math.atan2(dx, dz), math.atan2(dy, math.hypot(dx, dz)))


@dataclass(frozen=True)
class SceneObject:
    """An object. `center` is its geometric centre (world); `size` its full extents along its own
    x, y, z axes (sphere/lamp: 2r each; cylinder: (2r, h, 2r); table: whole table); `yaw` turns
    it about +y. `pattern` picks a texture variant."""

    cls: str
    center: Vec3
    size: Vec3
    yaw: float = 0.0
    color: Vec3 = (0.7, 0.7, 0.7)
    color2: Vec3 = (0.3, 0.3, 0.3)
    pattern: int = 0

    @property
    def footprint(self) -> float:
        """Radius of the object's bounding circle in the floor plane."""
        return 0.5 * math.hypot(self.size[0], self.size[2])


@dataclass(frozen=True)
class Opening:
    """A door or window drawn on wall `wall`: `along` = (start, end) on the wall's horizontal
    axis (world z for walls 0/1, world x for walls 2/3), `span` = (bottom, top) in world y."""

    cls: str
    wall: int
    along: tuple[float, float]
    span: tuple[float, float]
    color: Vec3 = (0.55, 0.35, 0.2)


@dataclass(frozen=True)
class Room:
    size: Vec3 = (5.0, 2.8, 4.0)  # (sx, height, sz)
    wall_color: Vec3 = (0.8, 0.78, 0.72)
    wall_color2: Vec3 = (0.5, 0.55, 0.6)
    wall_pattern: int = 0  # 0 plain, 1 vertical stripes, 2 wainscot
    floor_colors: tuple[Vec3, Vec3] = ((0.6, 0.45, 0.3), (0.4, 0.3, 0.2))
    floor_pattern: int = 0  # 0 checker tiles, 1 planks
    tile: float = 0.5
    ceiling_color: Vec3 = (0.9, 0.9, 0.88)
    ceiling_pattern: int = 0  # 0 plain, 1 panel grid


@dataclass(frozen=True)
class Light:
    position: Vec3
    color: Vec3 = (1.0, 0.95, 0.85)


@dataclass(frozen=True)
class Scene:
    room: Room = field(default_factory=Room)
    camera: CameraPose = CameraPose((2.5, 1.5, 2.0))
    objects: tuple[SceneObject, ...] = ()
    openings: tuple[Opening, ...] = ()
    lights: tuple[Light, ...] = ()  # empty: one light 0.3 m under the ceiling centre
    ambient: float = 0.35
    seed: int | None = None


@dataclass
class SyntheticFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z-depth, m
    labels: np.ndarray  # (H, W) uint8 index into CLASS_NAMES
    K: np.ndarray  # (3, 3) float64
    scene: Scene  # scene.camera is the pose this frame was rendered from

    @property
    def pose(self) -> CameraPose:
        return self.scene.camera


def intrinsics(height: int, width: int, fov_deg: float = 60.0) -> np.ndarray:
    """Pinhole K with horizontal field of view `fov_deg`, fx = fy, principal point at the
    image centre ((W - 1) / 2, (H - 1) / 2)."""
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    return CLASS_PALETTE[labels]


# ---------------------------------------------------------------------------------------------
# Scene generation


def _color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> Vec3:
    h, s, v = rng.random(), rng.uniform(*sat), rng.uniform(*val)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _make_room(rng: np.random.Generator, min_side: float) -> Room:
    sx, sz = (float(v) for v in rng.uniform(min_side, 6.5, 2))
    wood = _color(rng, (0.35, 0.6), (0.35, 0.65))
    return Room(
        size=(sx, float(rng.uniform(2.5, 3.0)), sz),
        wall_color=_color(rng, (0.03, 0.3), (0.6, 0.92)),
        wall_color2=_color(rng, (0.1, 0.5), (0.35, 0.75)),
        wall_pattern=int(rng.integers(3)),
        floor_colors=(wood, _color(rng, (0.0, 0.5), (0.2, 0.9))),
        floor_pattern=int(rng.integers(2)),
        tile=float(rng.uniform(0.3, 0.8)),
        ceiling_color=_color(rng, (0.0, 0.08), (0.8, 0.95)),
        ceiling_pattern=int(rng.integers(2)),
    )


def _make_openings(rng: np.random.Generator, room: Room) -> tuple[Opening, ...]:
    sx, sy, sz = room.size
    walls = rng.permutation(4)
    openings = []
    for i, wall in enumerate(walls[: 1 + int(rng.integers(3))]):
        length = sz if wall < 2 else sx
        if i == 0:
            w, span = rng.uniform(0.8, 1.0), (0.0, float(rng.uniform(2.0, min(2.2, sy - 0.2))))
            color, cls = _color(rng, (0.2, 0.6), (0.3, 0.8)), "door"
        else:
            w, bottom = rng.uniform(0.8, 1.8), float(rng.uniform(0.7, 1.0))
            span, color, cls = (bottom, bottom + float(rng.uniform(0.8, 1.3))), (0.9,) * 3, "window"
        start = float(rng.uniform(0.3, length - 0.3 - w))
        openings.append(Opening(cls, int(wall), (start, start + float(w)), span, color))
    return tuple(openings)


def _random_object(rng: np.random.Generator, kind: str, base: float = 0.0) -> SceneObject:
    color, color2 = _color(rng, (0.4, 0.9), (0.4, 0.95)), _color(rng, (0.0, 0.9), (0.2, 1.0))
    pattern, yaw = int(rng.integers(3)), float(rng.uniform(0, math.pi / 2))
    scale = 0.3 if base > 0 else 1.0  # things standing on a table are small
    if kind == "box":
        w, d = rng.uniform(0.3, 1.0, 2) * scale
        size = (float(w), float(rng.uniform(0.25, 1.1) * scale), float(d))
    elif kind == "sphere":
        size = (float(2 * rng.uniform(0.15, 0.45) * scale),) * 3
    elif kind == "cylinder":
        d = float(2 * rng.uniform(0.08, 0.3) * scale)
        size = (d, float(rng.uniform(0.4, 1.8) * scale), d)
    else:  # table
        size = tuple(float(rng.uniform(*r)) for r in ((0.8, 1.6), (0.68, 0.78), (0.6, 1.0)))
        color = _color(rng, (0.3, 0.7), (0.3, 0.7))
    return SceneObject(kind, (0.0, base + size[1] / 2, 0.0), size, yaw, color, color2, pattern)


def _place_objects(
    rng: np.random.Generator, room: Room, keep_out: np.ndarray
) -> list[SceneObject]:
    sx, sy, sz = room.size
    placed: list[SceneObject] = []
    kinds = rng.choice(["box", "sphere", "cylinder", "table"], 3 + int(rng.integers(4)),
                       p=[0.3, 0.25, 0.2, 0.25])  # fmt: skip
    for kind in kinds:
        obj = _random_object(rng, str(kind))
        r = obj.footprint
        for _ in range(30):
            x, z = rng.uniform(0.1 + r, sx - 0.1 - r), rng.uniform(0.1 + r, sz - 0.1 - r)
            free = all(math.hypot(x - o.center[0], z - o.center[2]) > r + o.footprint + 0.05
                       for o in placed)  # fmt: skip
            if free and (len(keep_out) == 0 or np.hypot(*(keep_out - (x, z)).T).min() > r + 0.5):
                placed.append(dataclasses.replace(obj, center=(x, obj.center[1], z)))
                break
    for table in [o for o in placed if o.cls == "table" and rng.random() < 0.6]:
        item = _random_object(rng, str(rng.choice(["box", "sphere", "cylinder"])), table.size[1])
        hw, hd = table.size[0] / 2 - 0.15, table.size[2] / 2 - 0.15
        lx, lz = rng.uniform(-hw, hw), rng.uniform(-hd, hd)
        c, s = math.cos(table.yaw), math.sin(table.yaw)
        x, z = table.center[0] + c * lx + s * lz, table.center[2] - s * lx + c * lz
        placed.append(dataclasses.replace(item, center=(float(x), item.center[1], float(z))))
    n_lamps = 1 + int(rng.integers(2))
    for _ in range(20 * n_lamps):
        if sum(o.cls == "lamp" for o in placed) == n_lamps:
            break
        r, x, z = rng.uniform(0.1, 0.18), rng.uniform(0.6, sx - 0.6), rng.uniform(0.6, sz - 0.6)
        if len(keep_out) == 0 or np.hypot(*(keep_out - (x, z)).T).min() > r + 0.3:
            y = sy - rng.uniform(0.35, 0.7)
            lamp = SceneObject("lamp", (float(x), float(y), float(z)), (float(2 * r),) * 3,
                               color=(1.0, 0.95, 0.8))  # fmt: skip
            placed.append(lamp)
    return placed


def _place_camera(rng: np.random.Generator, room: Room, objects: list[SceneObject]) -> CameraPose:
    sx, sy, sz = room.size
    pos = (sx / 2, 1.4, sz / 2)
    for _ in range(200):
        pos = (rng.uniform(0.5, sx - 0.5), rng.uniform(1.0, 1.7), rng.uniform(0.5, sz - 0.5))
        if all(math.hypot(pos[0] - o.center[0], pos[2] - o.center[2]) > o.footprint + 0.5
               for o in objects):  # fmt: skip
            break
    targets = [o.center for o in objects if o.cls != "lamp"] or [(sx / 2, 0.5, sz / 2)]
    if rng.random() < 0.15:  # look at a random point on the walls instead
        target = (rng.uniform(0, sx), rng.uniform(0.5, sy), rng.uniform(0, sz))
    else:
        target = targets[int(rng.integers(len(targets)))]
    pose = CameraPose.look_at(tuple(map(float, pos)), target)
    pitch = float(np.clip(pose.pitch + rng.normal(0, 0.12), -0.6, 0.35))
    return dataclasses.replace(pose, yaw=pose.yaw + float(rng.normal(0, 0.2)), pitch=pitch)


def walk_pose(room_size: Vec3, phase: float) -> CameraPose:
    """A smooth closed camera walk: an ellipse around the room centre, looking roughly inward,
    swaying left/right and up/down. `phase` in radians, one loop per 2 pi."""
    sx, _, sz = room_size
    x, z = sx / 2 + 0.27 * sx * math.cos(phase), sz / 2 + 0.27 * sz * math.sin(phase)
    yaw = math.atan2(sx / 2 - x, sz / 2 - z) + 0.6 * math.sin(2 * phase)
    pitch = -0.12 + 0.12 * math.sin(3 * phase)
    return CameraPose((x, 1.45 + 0.08 * math.sin(2 * phase), z), yaw, pitch)


def make_scene(seed: int, *, walk: bool = False) -> Scene:
    """Random room, openings, objects, lamps and camera from `np.random.default_rng(seed)`.
    walk=True keeps the path of `walk_pose` free of objects (for `SyntheticCamera`)."""
    rng = np.random.default_rng(seed)
    room = _make_room(rng, 5.0 if walk else 3.5)
    openings = _make_openings(rng, room)
    keep_out = np.zeros((0, 2))
    if walk:
        poses = [walk_pose(room.size, p) for p in np.linspace(0, 2 * math.pi, 64)]
        keep_out = np.array([(p.position[0], p.position[2]) for p in poses])
    objects = _place_objects(rng, room, keep_out)
    camera = walk_pose(room.size, 0.0) if walk else _place_camera(rng, room, objects)
    lights = tuple(
        Light((o.center[0], o.center[1] - o.size[1] / 2 - 0.05, o.center[2]),
              tuple(float(c) for c in rng.uniform(0.8, 1.0, 3)))
        for o in objects if o.cls == "lamp"
    )  # fmt: skip
    return Scene(room, camera, tuple(objects), openings, lights,
                 float(rng.uniform(0.3, 0.45)), seed)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Ray casting. Pixel ids ("pid"): 0-3 walls, 4 floor, 5 ceiling, then one per opening, then one
# per primitive; labels come from a pid -> class lookup table.

_FLOOR, _CEIL, _ROOM_IDS = 4, 5, 6
F32 = np.float32


@dataclass(frozen=True)
class _Prim:
    kind: str  # "box" | "sphere" | "cylinder"
    center: Vec3
    half: Vec3  # half extents in the primitive's own frame
    yaw: float
    obj: SceneObject


def _compile(scene: Scene) -> list[_Prim]:
    """Objects -> primitives; a table is a top slab plus four legs."""
    prims = []
    for o in scene.objects:
        half = tuple(s / 2 for s in o.size)
        if o.cls == "table":
            top, (hx, _, hz), c, s = o.center[1] + half[1], half, math.cos(o.yaw), math.sin(o.yaw)
            prims.append(_Prim("box", (o.center[0], top - 0.025, o.center[2]),
                               (hx, 0.025, hz), o.yaw, o))  # fmt: skip
            for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                lx, lz = lx * (hx - 0.08), lz * (hz - 0.08)
                leg = (o.center[0] + c * lx + s * lz, (top - 0.05) / 2, o.center[2] - s * lx + c * lz)
                prims.append(_Prim("box", leg, (0.03, (top - 0.05) / 2, 0.03), o.yaw, o))
        else:
            kind = {"sphere": "sphere", "lamp": "sphere", "cylinder": "cylinder"}.get(o.cls, "box")
            prims.append(_Prim(kind, o.center, half, o.yaw if kind == "box" else 0.0, o))
    return prims


@functools.lru_cache(maxsize=8)
def _pixel_grid(
    h: int, w: int, fx: float, fy: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised image coordinates as a (1, W) row and an (H, 1) column, and |ray|^2 (H, W)."""
    xn = ((np.arange(w) - cx) / fx).astype(F32)[None, :]
    yn = ((np.arange(h) - cy) / fy).astype(F32)[:, None]
    return xn, yn, 1 + xn * xn + yn * yn


def _screen_rect(p: _Prim, o: np.ndarray, R: np.ndarray, K: np.ndarray, h: int, w: int):
    """Pixel rectangle (as slices) that contains the primitive's projection, or None."""
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float64)
    local = signs * p.half
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    world = np.stack([c * local[:, 0] + s * local[:, 2], local[:, 1],
                      -s * local[:, 0] + c * local[:, 2]], 1) + p.center  # fmt: skip
    cam = (world - o) @ R
    if cam[:, 2].max() <= 0:
        return None
    if cam[:, 2].min() < 1e-3:
        return slice(0, h), slice(0, w)
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    v = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]
    u0, u1 = max(math.floor(u.min()), 0), min(math.ceil(u.max()) + 1, w)
    v0, v1 = max(math.floor(v.min()), 0), min(math.ceil(v.max()) + 1, h)
    return (slice(v0, v1), slice(u0, u1)) if u0 < u1 and v0 < v1 else None


def _hit_box(o: np.ndarray, d: list[np.ndarray], a: np.ndarray, p: _Prim):
    """Slab test in the box frame; the camera is always outside, so the entry t is the hit."""
    ox, oy, oz = (float(v) for v in o - p.center)
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    dx, dy, dz = d
    if p.yaw:
        dx, dz = c * dx - s * dz, s * dx + c * dz
    tn = tf = None
    for ld, lo, hh in ((dx, c * ox - s * oz, p.half[0]), (dy, oy, p.half[1]),
                       (dz, s * ox + c * oz, p.half[2])):  # fmt: skip
        inv = 1 / ld
        t1, t2 = (-hh - lo) * inv, (hh - lo) * inv
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tn = near if tn is None else np.maximum(tn, near, out=tn)
        tf = far if tf is None else np.minimum(tf, far, out=tf)
    return tn, (tn <= tf) & (tn > 0)


def _hit_sphere(o: np.ndarray, d: list[np.ndarray], a: np.ndarray, p: _Prim):
    ox, oy, oz = (float(v) for v in o - p.center)
    b = d[0] * ox + d[1] * oy + d[2] * oz
    t = (-b - np.sqrt(b * b - a * (ox * ox + oy * oy + oz * oz - p.half[0] ** 2))) / a
    return t, t > 0  # a miss is NaN, which compares False


def _hit_cylinder(o: np.ndarray, d: list[np.ndarray], a: np.ndarray, p: _Prim):
    """Vertical cylinder side plus top cap (the camera is never below the floor)."""
    ox, oy, oz = (float(v) for v in o - p.center)
    r, hh = p.half[0], p.half[1]
    dx, dy, dz = d
    a2 = dx * dx + dz * dz
    b = dx * ox + dz * oz
    t = (-b - np.sqrt(b * b - a2 * (ox * ox + oz * oz - r * r))) / a2
    y = oy + t * dy
    valid = (t > 0) & (y >= -hh) & (y <= hh)
    if oy > hh:  # side entry and cap entry exclude each other
        tc = (hh - oy) / dy
        qx, qz = ox + tc * dx, oz + tc * dz
        cap = (tc > 0) & (qx * qx + qz * qz <= r * r)
        t = np.where(cap, tc, t)
        valid |= cap
    return t, valid


_HIT = {"box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder}


def _exit(o: float, d: np.ndarray, hi: float) -> np.ndarray:
    """Ray parameter where a ray from inside [0, hi] leaves it along one axis."""
    inv = 1 / d
    return np.maximum((hi - o) * inv, -o * inv)


def _cast(scene: Scene, pose: CameraPose, K: np.ndarray, h: int, w: int, prims: list[_Prim]):
    xn, yn, a = _pixel_grid(h, w, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    R, o = pose.rotation(), np.array(pose.position, np.float64)
    d = [xn * float(R[i, 0]) + (yn * float(R[i, 1]) + float(R[i, 2])) for i in range(3)]
    sx, sy, sz = scene.room.size
    tx, ty, tz = (_exit(float(o[i]), d[i], s) for i, s in enumerate((sx, sy, sz)))
    t = np.minimum(tx, tz)
    pid = np.where(tx < tz, (d[0] > 0).view(np.uint8), (d[2] > 0).view(np.uint8) + 2)
    m = ty < t
    np.copyto(t, ty, where=m)
    np.copyto(pid, (d[1] > 0).view(np.uint8) + _FLOOR, where=m)
    base = _ROOM_IDS + len(scene.openings)
    for k, p in enumerate(prims):
        rect = _screen_rect(p, o, R, K, h, w)
        if rect is None:
            continue
        tb = t[rect]
        tp, valid = _HIT[p.kind](o, [c[rect] for c in d], a[rect], p)
        valid &= tp < tb
        np.copyto(tb, tp, where=valid)
        np.copyto(pid[rect], base + k, where=valid)
    return t, pid, d


# ---------------------------------------------------------------------------------------------
# Shading: each pixel group (one pid) gets a normal, an albedo from a procedural texture, an
# ambient-occlusion-like factor and an emissive flag; then Lambertian point lights + ambient.


def _c(color: Vec3) -> np.ndarray:
    return np.asarray(color, F32)[:, None]


def _hash(i: np.ndarray, j: np.ndarray, salt: int = 0) -> np.ndarray:
    """Cheap integer hash of lattice cells -> float32 in [0, 1)."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (salt * 83492791 + 7)
    h = (h ^ (h >> 15)) * 2246822519
    return ((h ^ (h >> 13)) & 0xFFFF).astype(F32) * F32(1 / 65536)


def _corner_occlusion(*dists: np.ndarray, strength: float = 0.3) -> np.ndarray:
    d = functools.reduce(np.minimum, dists)
    return 1 - strength * np.exp(d * -5.0)


def _floor(scene: Scene, P: np.ndarray):
    room, (x, _, z) = scene.room, P
    c1, c2 = _c(room.floor_colors[0]), _c(room.floor_colors[1])
    if room.floor_pattern == 0:  # checker tiles with grout lines
        u, v = x / room.tile, z / room.tile
        i, j = np.floor(u), np.floor(v)
        alb = np.where((i + j) % 2 > 0, c2, c1) * (0.9 + 0.2 * _hash(i, j))
        alb *= np.where(np.minimum(u - i, v - j) < 0.04, F32(0.55), F32(1))
    else:  # wooden planks running along z
        u = x / (0.3 * room.tile + 0.06)
        i = np.floor(u)
        v = z * F32(1 / 1.2) + _hash(i, i, 3)
        j = np.floor(v)
        grain = 0.92 + 0.08 * np.sin(z * 25 + 6 * _hash(i, j, 2) + 2 * np.sin(x * 7))
        gap = ((u - i) < 0.05) | ((v - j) < 0.01)
        alb = c1 * ((0.75 + 0.35 * _hash(i, j, 1)) * grain * np.where(gap, F32(0.5), F32(1)))
    sx, _, sz = room.size
    occl = _corner_occlusion(x, sx - x, z, sz - z, strength=0.35)
    for o in scene.objects:  # soft contact shadows under things standing on the floor
        if o.cls != "lamp" and o.center[1] - o.size[1] / 2 < 0.01:
            q = ((x - o.center[0]) ** 2 + (z - o.center[2]) ** 2) * F32(1 / (1.2 * o.footprint) ** 2)
            occl *= 1 - 0.5 * np.exp(-q * q)
    return F32((0, 1, 0)), alb, occl


def _ceiling(scene: Scene, P: np.ndarray):
    room, (x, y, z) = scene.room, P
    alb = np.broadcast_to(_c(room.ceiling_color), (3, x.size)).copy()
    if room.ceiling_pattern == 1:  # panel grid
        u, v = x * F32(1 / 0.6), z * F32(1 / 0.6)
        alb *= np.where(np.minimum(u - np.floor(u), v - np.floor(v)) < 0.03, F32(0.8), F32(1))
    sx, _, sz = room.size
    return F32((0, -1, 0)), alb, _corner_occlusion(x, sx - x, z, sz - z)


def _door(a: np.ndarray, b: np.ndarray, width: float, height: float, color: Vec3) -> np.ndarray:
    grain = 0.88 + 0.12 * np.sin(a * 70 + 3 * np.sin(b * 5))
    alb = _c(color) * grain
    frame = (a < 0.06) | (a > width - 0.06) | (b > height - 0.06)
    in_x = (a > 0.15) & (a < width - 0.15)
    lower, upper = (b > 0.15) & (b < 0.45 * height), (b > 0.55 * height) & (b < height - 0.18)
    panel = in_x & (lower | upper)
    edge = panel & ~((a > 0.18) & (a < width - 0.18) & (((b > 0.18) & (b < 0.45 * height - 0.03))
                                                          | ((b > 0.55 * height + 0.03)
                                                             & (b < height - 0.21))))  # fmt: skip
    alb *= np.where(frame, F32(0.6), np.where(edge, F32(0.7), F32(1)))
    knob = (a - 0.85 * width) ** 2 + (b - 1.0) ** 2 < 0.035**2
    return np.where(knob, _c((0.85, 0.75, 0.4)), alb)


def _window(a: np.ndarray, b: np.ndarray, width: float, height: float):
    s = np.clip(b * F32(1 / height), 0, 1)
    sky = _c((0.85, 0.9, 0.97)) * (1 - s) + _c((0.45, 0.65, 0.98)) * s
    frame = (np.minimum(np.minimum(a, width - a), np.minimum(b, height - b)) < 0.06) | (
        np.abs(a - width / 2) < 0.025) | (np.abs(b - height / 2) < 0.025)  # fmt: skip
    return np.where(frame, _c((0.92, 0.92, 0.9)), sky), ~frame


def _wall(scene: Scene, wall: int, P: np.ndarray, idx: np.ndarray, pid: np.ndarray):
    room = scene.room
    sx, sy, sz = room.size
    along, y, length = (P[2], P[1], sz) if wall < 2 else (P[0], P[1], sx)
    alb = _c(room.wall_color) * (0.96 + 0.08 * _hash(np.floor(along * 25), np.floor(y * 25), wall))
    if room.wall_pattern == 1:  # wallpaper stripes
        alb *= np.where(np.floor(along * 5) % 2 > 0, F32(0.9), F32(1))
    elif room.wall_pattern == 2:  # wainscot with a rail
        low = np.where(np.abs(y - 0.9) < 0.02, F32(0.7), F32(1)) * _c(room.wall_color2)
        alb = np.where(y < 0.91, low, alb)
    alb = np.where(y < 0.1, _c((0.92, 0.92, 0.9)), alb)  # skirting board
    occl = _corner_occlusion(along, length - along, y, sy - y)
    emit = np.zeros(y.size, bool)
    for j, op in enumerate(scene.openings):
        if op.wall != wall:
            continue
        m = (along >= op.along[0]) & (along <= op.along[1]) & (y >= op.span[0]) & (y <= op.span[1])
        if not m.any():
            continue
        pid[idx[m]] = _ROOM_IDS + j
        a, b = along[m] - op.along[0], y[m] - op.span[0]
        size = (op.along[1] - op.along[0], op.span[1] - op.span[0])
        if op.cls == "door":
            alb[:, m] = _door(a, b, *size, op.color)
        else:
            alb[:, m], emit[m] = _window(a, b, *size)
        occl[m] = 1
    normal = [(1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -1)][wall]
    return F32(normal), alb, occl, emit


def _box(p: _Prim, P: np.ndarray):
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    X, Z = P[0] - p.center[0], P[2] - p.center[2]
    lx, ly, lz = c * X - s * Z, P[1] - p.center[1], s * X + c * Z
    ex, ey, ez = p.half[0] - np.abs(lx), p.half[1] - np.abs(ly), p.half[2] - np.abs(lz)
    mx = (ex <= ey) & (ex <= ez)  # the hit face is the one the point lies on (distance ~0)
    my = ~mx & (ey <= ez)
    nx, ny, nz = (np.where(m, np.sign(v), F32(0)) for m, v in ((mx, lx), (my, ly), (~mx & ~my, lz)))
    normal = np.stack([c * nx + s * nz, ny, -s * nx + c * nz])
    # distance to the nearest edge of the hit face = middle of the three face distances
    edge = ex + ey + ez - np.minimum(np.minimum(ex, ey), ez) - np.maximum(np.maximum(ex, ey), ez)
    return normal, (lx, ly, lz), edge


def _object_albedo(p: _Prim, P: np.ndarray, dirs: np.ndarray):
    o, c1, c2 = p.obj, _c(p.obj.color), _c(p.obj.color2)
    occl = emit = None
    if p.kind == "box":
        normal, (lx, ly, lz), edge = _box(p, P)
        if o.cls == "table":
            alb = c1 * (0.82 + 0.18 * np.sin(lz * 90 + 3 * np.sin(lx * 4)))
            alb *= np.where(edge < 0.012, F32(0.7), F32(1))
        else:
            if o.pattern == 1:  # horizontal bands
                alt = np.floor((ly + p.half[1]) * F32(2.5 / p.half[1])) % 2 > 0
            else:  # checker (pattern 2) or plain crate
                alt = (np.floor(lx * 8) + np.floor(ly * 8) + np.floor(lz * 8)) % 2 > 0
                alt &= o.pattern == 2
            alb = np.where(alt, c2, c1) * np.where(edge < 0.03, F32(0.55), F32(1))
    else:
        rel = P - np.asarray(p.center, F32)[:, None]
        if p.kind == "sphere":
            normal = rel * F32(1 / p.half[0])
            nx, ny, nz = normal
            if o.cls == "lamp":  # glowing bulb, brighter where it faces the camera
                emit = True
                alb = c1 * (0.8 - 0.2 * (normal * dirs).sum(0) / np.sqrt((dirs * dirs).sum(0)))
            elif o.pattern == 1:  # beach ball segments
                alb = np.where(np.floor(np.arctan2(nz, nx) * F32(3 / math.pi)) % 2 > 0, c2, c1)
            elif o.pattern == 2:  # latitude bands
                alb = np.where(np.floor((ny + 1) * 2.5) % 2 > 0, c2, c1)
            else:
                alb = c1 * (0.9 + 0.2 * _hash(np.floor(nx * 6), np.floor(ny * 6 + nz * 30)))
        else:
            cap = rel[1] > p.half[1] - 1e-3
            inv_r = F32(1 / p.half[0])
            normal = np.stack([np.where(cap, 0, rel[0] * inv_r), cap.astype(F32),
                               np.where(cap, 0, rel[2] * inv_r)])  # fmt: skip
            if o.pattern == 1:  # vertical flutes
                alt = np.floor(np.arctan2(rel[2], rel[0]) * F32(8 / math.pi)) % 2 > 0
            elif o.pattern == 2:  # label band
                alt = np.abs(rel[1]) < p.half[1] / 3
            else:  # rings
                alt = np.floor(rel[1] * 8) % 2 > 0
            alb = np.where(cap, (c1 + c2) * 0.5, np.where(alt, c2, c1))
    return normal, alb, occl, emit


def _shade(scene: Scene, pose: CameraPose, prims: list[_Prim], t: np.ndarray,
           pid: np.ndarray, d: list[np.ndarray]) -> np.ndarray:  # fmt: skip
    h, w = t.shape
    n = h * w
    tf, pidf = t.ravel(), pid.ravel()
    P = np.empty((3, n), F32)
    for i in range(3):
        np.multiply(tf, d[i].ravel(), out=P[i])
        P[i] += F32(pose.position[i])
    normal, albedo = np.empty((3, n), F32), np.empty((3, n), F32)
    occl, emit = np.ones(n, F32), np.zeros(n, bool)
    order = np.argsort(pidf, kind="stable")
    base = _ROOM_IDS + len(scene.openings)
    bounds = np.cumsum(np.bincount(pidf, minlength=base + len(prims)))
    for k, (lo, hi) in enumerate(zip(np.r_[0, bounds[:-1]], bounds)):
        if lo == hi or _ROOM_IDS <= k < base:
            continue
        idx = order[lo:hi]
        Pk = P[:, idx]
        if k < _FLOOR:
            nk, ak, ok, ek = _wall(scene, k, Pk, idx, pidf)
        elif k < _ROOM_IDS:
            nk, ak, ok = (_floor if k == _FLOOR else _ceiling)(scene, Pk)
            ek = None
        else:
            dirs = np.stack([c.ravel()[idx] for c in d])
            nk, ak, ok, ek = _object_albedo(prims[k - base], Pk, dirs)
        normal[:, idx] = nk if nk.ndim == 2 else nk[:, None]
        albedo[:, idx] = ak
        if ok is not None:
            occl[idx] = ok
        if ek is not None:
            emit[idx] = ek
    return _light(scene, P, normal, albedo, occl, emit).reshape(h, w, 3)


def _light(scene: Scene, P: np.ndarray, normal: np.ndarray, albedo: np.ndarray,
           occl: np.ndarray, emit: np.ndarray) -> np.ndarray:  # fmt: skip
    sx, sy, sz = scene.room.size
    lights = scene.lights or (Light((sx / 2, sy - 0.3, sz / 2)),)
    # a weak directional fill from above so that faces away from every lamp still read
    fill = normal[0] * F32(0.1) + normal[1] * F32(0.2) + normal[2] * F32(0.05)
    rgb = [np.maximum(fill, 0) + F32(scene.ambient) for _ in range(3)]
    for light in lights:
        v = [F32(light.position[i]) - P[i] for i in range(3)]
        dist2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2]
        lam = (normal[0] * v[0] + normal[1] * v[1] + normal[2] * v[2]) / np.sqrt(dist2)
        wgt = np.maximum(lam, 0) * (F32(1.4) / (1 + dist2 * F32(1 / 12)))
        for i in range(3):
            rgb[i] += wgt * F32(light.color[i])
    out = np.empty((P.shape[1], 3), np.uint8)
    for i in range(3):
        col = rgb[i] * occl * albedo[i]
        np.copyto(col, albedo[i], where=emit)
        np.clip(col * 255 + 0.5, 0, 255, out=col)
        out[:, i] = col
    return out


def render(scene: Scene, height: int = 240, width: int = 320, *, pose: CameraPose | None = None,
           fov_deg: float = 60.0, K: np.ndarray | None = None) -> SyntheticFrame:  # fmt: skip
    """Ray-cast `scene` from `pose` (default scene.camera) with intrinsics K (default: the
    horizontal `fov_deg` pinhole of `intrinsics`)."""
    pose = scene.camera if pose is None else pose
    K = intrinsics(height, width, fov_deg) if K is None else np.asarray(K, np.float64)
    prims = _compile(scene)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth, pid, d = _cast(scene, pose, K, height, width, prims)
        rgb = _shade(scene, pose, prims, depth, pid, d)
    lut = np.array([CLS["wall"]] * 4 + [CLS["floor"], CLS["ceiling"]]
                   + [CLS[op.cls] for op in scene.openings]
                   + [CLS[p.obj.cls if p.obj.cls != "lamp" else "lamp"] for p in prims], np.uint8)  # fmt: skip
    return SyntheticFrame(rgb, depth, lut[pid], K, dataclasses.replace(scene, camera=pose))


def render_scene(seed: int, height: int = 240, width: int = 320, *, fov_deg: float = 60.0,
                 K: np.ndarray | None = None) -> SyntheticFrame:  # fmt: skip
    """The random scene of `make_scene(seed)`, seen from its random camera."""
    return render(make_scene(seed), height, width, fov_deg=fov_deg, K=K)
