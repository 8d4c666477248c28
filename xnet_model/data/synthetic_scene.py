"""Scene description for the synthetic data: classes, rooms, objects, lights, camera poses.

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
import math
from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES = (
    "wall", "floor", "ceiling", "box", "sphere", "cylinder", "table", "door", "window", "lamp",
)
CLASS_PALETTE = np.array(
    [
        [174, 199, 232], [140, 86, 75], [199, 199, 199], [255, 127, 14], [44, 160, 44],
        [214, 39, 40], [148, 103, 189], [227, 119, 194], [23, 190, 207], [255, 230, 0],
    ],
    dtype=np.uint8,
)
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
        yaw, pitch = math.atan2(dx, dz), math.atan2(dy, math.hypot(dx, dz))
        return cls(tuple(map(float, position)), yaw, pitch)


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
    intensity: float = 1.0


@dataclass(frozen=True)
class Scene:
    room: Room = field(default_factory=Room)
    camera: CameraPose = CameraPose((2.5, 1.5, 2.0))
    objects: tuple[SceneObject, ...] = ()
    openings: tuple[Opening, ...] = ()
    lights: tuple[Light, ...] = ()  # empty: one light 0.3 m under the ceiling centre
    ambient: float = 0.35
    light_color: Vec3 = (1.0, 0.96, 0.88)
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
            span, cls = (bottom, bottom + float(rng.uniform(0.8, 1.3))), "window"
            color = (0.92, 0.92, 0.9)  # the frame
        start = float(rng.uniform(0.3, length - 0.3 - w))
        openings.append(Opening(cls, int(wall), (start, start + float(w)), span, color))
    return tuple(openings)


def _clear_of(points: np.ndarray, x: float, z: float, radius: float) -> bool:
    return len(points) == 0 or bool(np.hypot(points[:, 0] - x, points[:, 1] - z).min() > radius)


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
    """3-6 non-overlapping floor objects (clear of `keep_out` points), things on tables, lamps."""
    sx, sy, sz = room.size
    placed: list[SceneObject] = []
    kinds = ["box", "sphere", "cylinder", "table"]
    for kind in rng.choice(kinds, 3 + int(rng.integers(4)), p=[0.3, 0.25, 0.2, 0.25]):
        obj = _random_object(rng, str(kind))
        r = obj.footprint
        for _ in range(30):
            x, z = rng.uniform(0.1 + r, sx - 0.1 - r), rng.uniform(0.1 + r, sz - 0.1 - r)
            free = all(math.dist((x, z), o.center[::2]) > r + o.footprint + 0.05 for o in placed)
            if free and _clear_of(keep_out, x, z, r + 0.5):
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
        r, x, z = rng.uniform(0.1, 0.18), rng.uniform(0.9, sx - 0.9), rng.uniform(0.9, sz - 0.9)
        if _clear_of(keep_out, x, z, r + 0.3):
            center = (float(x), float(sy - rng.uniform(0.35, 0.7)), float(z))
            placed.append(SceneObject("lamp", center, (float(2 * r),) * 3, color=(1, 0.95, 0.8)))
    return placed


def _place_camera(rng: np.random.Generator, room: Room, objects: list[SceneObject]) -> CameraPose:
    sx, sy, sz = room.size
    pos = (sx / 2, 1.4, sz / 2)
    for _ in range(200):
        pos = (rng.uniform(0.5, sx - 0.5), rng.uniform(1.0, 1.7), rng.uniform(0.5, sz - 0.5))
        if all(math.dist(pos[::2], o.center[::2]) > o.footprint + 0.5 for o in objects):
            break
    lamps = [o.center for o in objects if o.cls == "lamp"]
    targets = [o.center for o in objects if o.cls != "lamp"] or [(sx / 2, 0.5, sz / 2)]
    u = rng.random()
    if u < 0.15:  # a random point on the walls
        target = (rng.uniform(0, sx), rng.uniform(0.5, sy), rng.uniform(0, sz))
    elif u < 0.27 and lamps:
        target = lamps[int(rng.integers(len(lamps)))]
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
    lamps = [o for o in objects if o.cls == "lamp"]
    lights = tuple(Light((o.center[0], o.center[1] - o.size[1] / 2 - 0.05, o.center[2]),
                         float(rng.uniform(0.9, 1.2))) for o in lamps)
    light_color = tuple(float(c) for c in rng.uniform(0.85, 1.0, 3))
    ambient = float(rng.uniform(0.3, 0.45))
    return Scene(room, camera, tuple(objects), openings, lights, ambient, light_color, seed)
