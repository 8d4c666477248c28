"""Analytic ray casting and shading of a synthetic `Scene` (float32 numpy, all pixels at once).

Each pixel's ray is d = R @ ((u - cx) / fx, (v - cy) / fy, 1), whose optical-axis component is
exactly 1, so the ray parameter t of the first hit *is* the z-depth.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic_scene import CameraPose, Light, Scene, SceneObject, Vec3

# ---------------------------------------------------------------------------------------------
# Ray casting. Pixel ids ("pid"): 0-3 walls, 4 floor, 5 ceiling, then one per opening, then one
# per primitive; a pid -> class table gives the labels.

_FLOOR, _CEILING, _OPENINGS = 4, 5, 6
F32 = np.float32
_CORNERS = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float64)


@dataclass(frozen=True)
class _Prim:
    kind: str  # "box" | "sphere" | "cylinder"
    center: Vec3
    half: Vec3  # half extents in the primitive's own (yawed) frame
    yaw: float
    obj: SceneObject

    def corners(self) -> np.ndarray:
        """The 8 corners (world) of the primitive's bounding box."""
        c, s, local = math.cos(self.yaw), math.sin(self.yaw), _CORNERS * self.half
        x, y, z = local.T
        return np.stack([c * x + s * z, y, -s * x + c * z], 1) + self.center


def _compile(scene: Scene) -> list[_Prim]:
    """Objects -> primitives; a table is a top slab plus four legs."""
    prims = []
    for o in scene.objects:
        (cx, cy, cz), (hx, hy, hz) = o.center, (s / 2 for s in o.size)
        if o.cls == "table":
            top, c, s = cy + hy, math.cos(o.yaw), math.sin(o.yaw)
            prims.append(_Prim("box", (cx, top - 0.025, cz), (hx, 0.025, hz), o.yaw, o))
            for lx, lz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                lx, lz, leg = lx * (hx - 0.08), lz * (hz - 0.08), (top - 0.05) / 2
                prims.append(_Prim("box", (cx + c * lx + s * lz, leg, cz - s * lx + c * lz),
                                   (0.03, leg, 0.03), o.yaw, o))
        else:
            kind = {"sphere": "sphere", "lamp": "sphere", "cylinder": "cylinder"}.get(o.cls, "box")
            prims.append(_Prim(kind, o.center, (hx, hy, hz), o.yaw if kind == "box" else 0.0, o))
    return prims


@functools.lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int, fx: float, fy: float, cx: float, cy: float):
    """Normalised image coordinates as a (1, W) row and an (H, 1) column, and |ray|^2 (H, W)."""
    xn = ((np.arange(w) - cx) / fx).astype(F32)[None, :]
    yn = ((np.arange(h) - cy) / fy).astype(F32)[:, None]
    return xn, yn, 1 + xn * xn + yn * yn


def _screen_rects(prims: list[_Prim], o: np.ndarray, R: np.ndarray, K: np.ndarray, h: int,
                  w: int) -> list[tuple[slice, slice] | None]:
    """Per primitive, a pixel rectangle containing its projection (None: not in view)."""
    if not prims:
        return []
    cam = (np.stack([p.corners() for p in prims]) - o) @ R  # (n, 8, 3)
    z = cam[..., 2]
    u = K[0, 0] * cam[..., 0] / z + K[0, 2]
    v = K[1, 1] * cam[..., 1] / z + K[1, 2]
    rects = []
    for zz, uu, vv in zip(z, u, v):
        if zz.min() < 1e-3:  # straddles the camera plane: search the whole image
            rects.append((slice(0, h), slice(0, w)) if zz.max() > 0 else None)
            continue
        u0, u1 = max(math.floor(uu.min()), 0), min(math.ceil(uu.max()) + 1, w)
        v0, v1 = max(math.floor(vv.min()), 0), min(math.ceil(vv.max()) + 1, h)
        rects.append((slice(v0, v1), slice(u0, u1)) if u0 < u1 and v0 < v1 else None)
    return rects


def _hit_box(o: np.ndarray, d: list[np.ndarray], a: np.ndarray, p: _Prim):
    """Slab test in the box frame; the camera is always outside, so the entry t is the hit."""
    ox, oy, oz = (float(v) for v in o - p.center)
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    dx, dy, dz = d
    if p.yaw:
        dx, dz = c * dx - s * dz, s * dx + c * dz
    tn = tf = None
    for ld, lo, hh in zip((dx, dy, dz), (c * ox - s * oz, oy, s * ox + c * oz), p.half):
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
    (r, hh, _), (dx, dy, dz) = p.half, d
    a2, b = dx * dx + dz * dz, dx * ox + dz * oz
    t = (-b - np.sqrt(b * b - a2 * (ox * ox + oz * oz - r * r))) / a2
    y = oy + t * dy
    valid = (t > 0) & (y >= -hh) & (y <= hh)
    if oy > hh:  # a ray enters through the side or through the cap, never both
        tc = (hh - oy) / dy
        qx, qz = ox + tc * dx, oz + tc * dz
        cap = (tc > 0) & (qx * qx + qz * qz <= r * r)
        t = np.where(cap, tc, t)
        valid |= cap
    return t, valid


_HIT = {"box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder}


def _exit(o: float, d: np.ndarray, hi: float) -> np.ndarray:
    """Ray parameter where a ray from inside [0, hi] leaves that interval along one axis."""
    inv = 1 / d
    t = inv * (hi - o)
    inv *= -o
    return np.maximum(t, inv, out=t)


def _cast(scene: Scene, pose: CameraPose, K: np.ndarray, h: int, w: int, prims: list[_Prim]):
    """z-depth (= ray parameter) and pid of the first hit per pixel, and the ray directions."""
    xn, yn, a = _pixel_grid(h, w, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    R, o = pose.rotation(), np.array(pose.position, np.float64)
    d = [xn * float(R[i, 0]) + (yn * float(R[i, 1]) + float(R[i, 2])) for i in range(3)]
    tx, ty, tz = (_exit(float(o[i]), d[i], s) for i, s in enumerate(scene.room.size))
    t = np.minimum(tx, tz)
    pid = np.where(tx < tz, (d[0] > 0).view(np.uint8), (d[2] > 0).view(np.uint8) + 2)
    m = ty < t
    np.copyto(t, ty, where=m)
    np.copyto(pid, (d[1] > 0).view(np.uint8) + _FLOOR, where=m)
    base = _OPENINGS + len(scene.openings)
    for k, (p, rect) in enumerate(zip(prims, _screen_rects(prims, o, R, K, h, w))):
        if rect is not None:
            tb = t[rect]
            tp, valid = _HIT[p.kind](o, [c[rect] for c in d], a[rect], p)
            valid &= tp < tb
            np.copyto(tb, tp, where=valid)
            np.copyto(pid[rect], base + k, where=valid)
    return t, pid, d


# ---------------------------------------------------------------------------------------------
# Shading: each pixel group (one pid) gets a normal, an albedo from a procedural texture, an
# occlusion factor (dark corners, contact shadows) and an emissive flag; then lighting.


def _c(color: Vec3) -> np.ndarray:
    return np.asarray(color, F32)[:, None]


def _hash(i: np.ndarray, j: np.ndarray, salt: int = 0) -> np.ndarray:
    """Cheap integer hash of lattice cells -> float32 in [0, 1)."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (salt * 83492791 + 7)
    h = (h ^ (h >> 15)) * 2246822519
    return ((h ^ (h >> 13)) & 0xFFFF).astype(F32) * F32(1 / 65536)


def _dim(mask: np.ndarray, factor: float) -> np.ndarray:
    return np.where(mask, F32(factor), F32(1))


def _alternate(x: np.ndarray) -> np.ndarray:
    """True on every other unit cell of x."""
    return np.floor(x) % 2 > 0


def _corner_occlusion(*dists: np.ndarray, strength: float = 0.3) -> np.ndarray:
    return 1 - strength * np.exp(functools.reduce(np.minimum, dists) * -5.0)


def _rect(a: np.ndarray, b: np.ndarray, a0: float, a1: float, b0: float, b1: float):
    return (a > a0) & (a < a1) & (b > b0) & (b < b1)


def _floor(scene: Scene, P: np.ndarray):
    room, (x, _, z) = scene.room, P
    c1, c2 = _c(room.floor_colors[0]), _c(room.floor_colors[1])
    if room.floor_pattern == 0:  # checker tiles with grout lines
        u, v = x / room.tile, z / room.tile
        i, j = np.floor(u), np.floor(v)
        alb = np.where((i + j) % 2 > 0, c2, c1) * (0.9 + 0.2 * _hash(i, j))
        alb *= _dim(np.minimum(u - i, v - j) < 0.04, 0.55)
    else:  # wooden planks running along z
        u = x / (0.3 * room.tile + 0.06)
        i = np.floor(u)
        v = z * F32(1 / 1.2) + _hash(i, i, 3)
        j = np.floor(v)
        grain = 0.92 + 0.08 * np.sin(z * 25 + 6 * _hash(i, j, 2) + 2 * np.sin(x * 7))
        gap = ((u - i) < 0.05) | ((v - j) < 0.01)
        alb = c1 * ((0.75 + 0.35 * _hash(i, j, 1)) * grain * _dim(gap, 0.5))
    sx, _, sz = room.size
    occl = _corner_occlusion(x, sx - x, z, sz - z, strength=0.35)
    for o in scene.objects:  # soft contact shadows under things standing on the floor
        if o.cls != "lamp" and o.center[1] - o.size[1] / 2 < 0.01:
            q = (x - o.center[0]) ** 2 + (z - o.center[2]) ** 2
            q *= F32(1 / (1.2 * o.footprint) ** 2)
            occl *= 1 - 0.5 * np.exp(-q * q)
    return F32((0, 1, 0)), alb, occl, None


def _ceiling(scene: Scene, P: np.ndarray):
    room, (x, _, z) = scene.room, P
    alb = np.repeat(_c(room.ceiling_color), x.size, 1)
    if room.ceiling_pattern == 1:  # panel grid
        u, v = x * F32(1 / 0.6), z * F32(1 / 0.6)
        alb *= _dim(np.minimum(u - np.floor(u), v - np.floor(v)) < 0.03, 0.8)
    sx, _, sz = room.size
    return F32((0, -1, 0)), alb, _corner_occlusion(x, sx - x, z, sz - z), None


def _door(a: np.ndarray, b: np.ndarray, width: float, height: float, color: Vec3):
    """Wood grain, a darker frame, two moulded panels and a brass knob."""
    alb = _c(color) * (0.88 + 0.12 * np.sin(a * 70 + 3 * np.sin(b * 5)))
    frame = (a < 0.06) | (a > width - 0.06) | (b > height - 0.06)
    moulding = np.zeros(a.shape, bool)
    for b0, b1 in ((0.15, 0.45 * height), (0.55 * height, height - 0.18)):
        a0, a1, e = 0.15, width - 0.15, 0.03
        moulding |= _rect(a, b, a0, a1, b0, b1) & ~_rect(a, b, a0 + e, a1 - e, b0 + e, b1 - e)
    alb *= np.where(frame, F32(0.6), _dim(moulding, 0.7))
    knob = (a - 0.85 * width) ** 2 + (b - 1.0) ** 2 < 0.035**2
    return np.where(knob, _c((0.85, 0.75, 0.4)), alb), np.zeros(a.shape, bool)


def _window(a: np.ndarray, b: np.ndarray, width: float, height: float, color: Vec3):
    """Emissive sky gradient behind a (shaded) frame with a cross mullion."""
    s = np.clip(b * F32(1 / height), 0, 1)
    sky = _c((0.85, 0.9, 0.97)) * (1 - s) + _c((0.45, 0.65, 0.98)) * s
    frame = ~_rect(a, b, 0.06, width - 0.06, 0.06, height - 0.06)
    frame |= (np.abs(a - width / 2) < 0.025) | (np.abs(b - height / 2) < 0.025)
    return np.where(frame, _c(color), sky), ~frame


def _wall(scene: Scene, wall: int, P: np.ndarray, idx: np.ndarray, pid: np.ndarray):
    """Wall texture; pixels inside a door/window on this wall get its pid and texture."""
    room, (sx, sy, sz) = scene.room, scene.room.size
    along, y, length = (P[2], P[1], sz) if wall < 2 else (P[0], P[1], sx)
    alb = _c(room.wall_color) * (0.96 + 0.08 * _hash(np.floor(along * 25), np.floor(y * 25), wall))
    if room.wall_pattern == 1:  # wallpaper stripes
        alb *= _dim(_alternate(along * 5), 0.9)
    elif room.wall_pattern == 2:  # wainscot with a rail
        alb = np.where(y < 0.91, _c(room.wall_color2) * _dim(np.abs(y - 0.9) < 0.02, 0.7), alb)
    alb = np.where(y < 0.1, _c((0.92, 0.92, 0.9)), alb)  # skirting board
    occl = _corner_occlusion(along, length - along, y, sy - y)
    emit = np.zeros(y.size, bool)
    for j, op in enumerate(scene.openings):
        m = _rect(along, y, *op.along, *op.span) if op.wall == wall else None
        if m is not None and m.any():
            pid[idx[m]] = _OPENINGS + j
            texture = _door if op.cls == "door" else _window
            alb[:, m], emit[m] = texture(along[m] - op.along[0], y[m] - op.span[0],
                                         op.along[1] - op.along[0], op.span[1] - op.span[0],
                                         op.color)
            occl[m] = 1
    return F32([(1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -1)][wall]), alb, occl, emit


def _box(p: _Prim, P: np.ndarray, _dirs: np.ndarray):
    """Crates (plain, banded or checkered, dark edges) and wooden table parts."""
    c, s = math.cos(p.yaw), math.sin(p.yaw)
    X, Z = P[0] - p.center[0], P[2] - p.center[2]
    local = (c * X - s * Z, P[1] - p.center[1], s * X + c * Z)
    ex, ey, ez = (h - np.abs(v) for h, v in zip(p.half, local))
    mx = (ex <= ey) & (ex <= ez)  # the hit face is the one the point lies on (distance ~0)
    my = ~mx & (ey <= ez)
    nx, ny, nz = (np.where(m, np.sign(v), F32(0)) for m, v in zip((mx, my, ~mx & ~my), local))
    normal = np.stack([c * nx + s * nz, ny, -s * nx + c * nz])
    # distance to the nearest edge of the hit face = the middle of the three face distances
    edge = ex + ey + ez - np.minimum(np.minimum(ex, ey), ez) - np.maximum(np.maximum(ex, ey), ez)
    (lx, ly, lz), o = local, p.obj
    if o.cls == "table":
        alb = _c(o.color) * (0.82 + 0.18 * np.sin(lz * 90 + 3 * np.sin(lx * 4)))
        return normal, alb * _dim(edge < 0.012, 0.7), None, None
    if o.pattern == 1:  # horizontal bands
        alt = _alternate((ly + p.half[1]) * F32(2.5 / p.half[1]))
    else:  # checker (pattern 2) or plain
        alt = ((np.floor(lx * 8) + np.floor(ly * 8) + np.floor(lz * 8)) % 2 > 0) & (o.pattern == 2)
    return normal, np.where(alt, _c(o.color2), _c(o.color)) * _dim(edge < 0.03, 0.55), None, None


def _sphere(p: _Prim, P: np.ndarray, dirs: np.ndarray):
    """Lamps (emissive), beach balls, banded or speckled balls."""
    normal = (P - np.asarray(p.center, F32)[:, None]) * F32(1 / p.half[0])
    (nx, ny, nz), o, c1, c2 = normal, p.obj, _c(p.obj.color), _c(p.obj.color2)
    if o.cls == "lamp":  # brighter where the bulb faces the camera
        facing = (normal * dirs).sum(0) / np.sqrt((dirs * dirs).sum(0))
        return normal, c1 * (0.8 - 0.2 * facing), None, True
    if o.pattern == 1:  # beach ball segments
        alb = np.where(_alternate(np.arctan2(nz, nx) * F32(3 / math.pi)), c2, c1)
    elif o.pattern == 2:  # latitude bands
        alb = np.where(_alternate((ny + 1) * 2.5), c2, c1)
    else:
        alb = c1 * (0.9 + 0.2 * _hash(np.floor(nx * 6), np.floor(ny * 6 + nz * 30)))
    return normal, alb, None, None


def _cylinder(p: _Prim, P: np.ndarray, _dirs: np.ndarray):
    """Ringed, fluted or labelled columns with a lighter top cap."""
    rel, o = P - np.asarray(p.center, F32)[:, None], p.obj
    cap, inv_r = rel[1] > p.half[1] - 1e-3, F32(1 / p.half[0])
    normal = np.stack([np.where(cap, 0, rel[0] * inv_r), cap.astype(F32),
                       np.where(cap, 0, rel[2] * inv_r)])
    if o.pattern == 1:  # vertical flutes
        alt = _alternate(np.arctan2(rel[2], rel[0]) * F32(8 / math.pi))
    elif o.pattern == 2:  # label band
        alt = np.abs(rel[1]) < p.half[1] / 3
    else:  # rings
        alt = _alternate(rel[1] * 8)
    c1, c2 = _c(o.color), _c(o.color2)
    return normal, np.where(cap, (c1 + c2) * 0.5, np.where(alt, c2, c1)), None, None


_SHADE_PRIM = {"box": _box, "sphere": _sphere, "cylinder": _cylinder}


def _shade(scene: Scene, pose: CameraPose, prims: list[_Prim], t: np.ndarray,
           pid: np.ndarray, d: list[np.ndarray]) -> np.ndarray:
    """Shade in pid-sorted pixel order, where every pid group is a contiguous slice."""
    h, w = t.shape
    pidf = pid.ravel()
    order = np.argsort(pidf, kind="stable")
    P = np.empty((3, h * w), F32)
    for i in range(3):
        np.multiply(t.ravel(), d[i].ravel(), out=P[i])
        P[i] += F32(pose.position[i])
    P = np.take(P, order, axis=1)
    normal, albedo = np.empty_like(P), np.empty_like(P)
    occl, emit = np.ones(h * w, F32), np.zeros(h * w, bool)
    base = _OPENINGS + len(scene.openings)
    bounds = np.cumsum(np.bincount(pidf, minlength=base + len(prims)))
    for k, (lo, hi) in enumerate(zip(np.r_[0, bounds[:-1]], bounds)):
        if lo == hi or _OPENINGS <= k < base:  # opening pids are assigned by _wall
            continue
        Pk = P[:, lo:hi]
        if k < _FLOOR:
            nk, ak, ok, ek = _wall(scene, k, Pk, order[lo:hi], pidf)
        elif k < _OPENINGS:
            nk, ak, ok, ek = (_floor if k == _FLOOR else _ceiling)(scene, Pk)
        else:
            p = prims[k - base]
            dirs = np.stack([np.take(c.ravel(), order[lo:hi]) for c in d])
            nk, ak, ok, ek = _SHADE_PRIM[p.kind](p, Pk, dirs)
        normal[:, lo:hi] = nk if nk.ndim == 2 else nk[:, None]
        albedo[:, lo:hi] = ak
        if ok is not None:
            occl[lo:hi] = ok
        if ek is not None:
            emit[lo:hi] = ek
    inverse = np.empty_like(order)
    inverse[order] = np.arange(h * w)
    rgb = np.take(_light(scene, P, normal, albedo, occl, emit), inverse, axis=1)
    return cv2.merge([c.reshape(h, w) for c in rgb])


def _light(scene: Scene, P: np.ndarray, normal: np.ndarray, albedo: np.ndarray,
           occl: np.ndarray, emit: np.ndarray) -> np.ndarray:
    """Lambertian point lights with 1 / (1 + d^2 / 5) falloff, a fill light and ambient."""
    sx, sy, sz = scene.room.size
    lights = scene.lights or (Light((sx / 2, sy - 0.3, sz / 2)),)
    # a weak directional fill from above, so that faces turned away from every lamp still read
    shade = normal[0] * F32(0.1) + normal[1] * F32(0.2)
    shade += normal[2] * F32(0.05)
    np.maximum(shade, 0, out=shade)
    shade += F32(scene.ambient)
    for light in lights:
        v = [F32(light.position[i]) - P[i] for i in range(3)]
        dist2, lam = v[0] * v[0], normal[0] * v[0]
        for i in (1, 2):
            dist2 += v[i] * v[i]
            lam += normal[i] * v[i]
        np.maximum(lam, 0, out=lam)
        lam /= np.sqrt(dist2) * (1 + dist2 * F32(1 / 5))
        shade += lam * F32(light.intensity)
    shade *= occl
    shade /= 0.8 + 0.2 * shade  # soft highlight roll-off that keeps 1 -> 1
    out = np.empty(albedo.shape, np.uint8)
    for i in range(3):
        col = albedo[i] * shade
        col *= F32(255 * scene.light_color[i])
        np.copyto(col, albedo[i] * F32(255), where=emit)
        col += 0.5
        out[i] = np.clip(col, 0, 255, out=col)
    return out
