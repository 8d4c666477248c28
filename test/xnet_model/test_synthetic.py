"""Geometry, determinism and API tests for the procedural RGB-D + semantic renderer."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from xnet_model.data.synthetic import (
    CLASS_NAMES,
    CLASS_PALETTE,
    MAX_DEPTH,
    NUM_CLASSES,
    CameraPose,
    Opening,
    Room,
    Scene,
    SceneObject,
    SyntheticCamera,
    SyntheticDataset,
    intrinsics,
    render,
    render_scene,
)

CLS = {name: i for i, name in enumerate(CLASS_NAMES)}
SEEDS = range(20)


@pytest.fixture(scope="module")
def frames():
    return [render_scene(s) for s in SEEDS]


def back_project(depth: np.ndarray, K: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Camera-frame points (N, 3) of the masked pixels."""
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)


def to_world(points: np.ndarray, pose: CameraPose) -> np.ndarray:
    return points @ pose.rotation().T + np.asarray(pose.position)


def test_intrinsics_convention():
    K = intrinsics(240, 320, 60.0)
    assert K.dtype == np.float64 and K.shape == (3, 3)
    assert K[0, 0] == K[1, 1] == pytest.approx(160 / math.tan(math.radians(30)))
    assert (K[0, 2], K[1, 2]) == (159.5, 119.5)


def test_rotation_is_opencv_optical_frame():
    R = CameraPose((0, 0, 0), yaw=0.3, pitch=-0.2).rotation()
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    R0 = CameraPose((0, 0, 0)).rotation()  # yaw 0: forward +z, down -y, right -x (y-up world)
    np.testing.assert_allclose(R0, [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], atol=1e-12)


def test_frontal_wall_has_constant_analytic_depth_and_door_on_the_left():
    door = Opening("door", wall=3, along=(4.5, 5.5), span=(0.0, 2.0))
    scene = Scene(room=Room(size=(8.0, 3.0, 5.0)), openings=(door,))
    pose = CameraPose((4.0, 1.5, 1.0))  # looks along +z at the wall z = 5, 4 m away
    f = render(scene, 240, 320, pose=pose, fov_deg=40.0)
    np.testing.assert_allclose(f.depth, 4.0, rtol=0, atol=1e-5)
    assert set(np.unique(f.labels)) == {CLS["wall"], CLS["door"]}
    # door centre x = 5 is 1 m to the camera's left (image right is world -x), y = 1 m
    fx, cx, cy = f.K[0, 0], f.K[0, 2], f.K[1, 2]
    u, v = round(cx - fx * 1.0 / 4), round(cy + fx * 0.5 / 4)
    assert f.labels[v, u] == CLS["door"]
    assert f.labels[v, round(cx + fx * 1.0 / 4)] == CLS["wall"]
    assert f.labels[round(cy - fx * 1.0 / 4), u] == CLS["wall"]  # above the 2 m door top


def test_floor_pixels_lie_on_a_plane_at_camera_height(frames):
    checked = 0
    for f in frames:
        mask = f.labels == CLS["floor"]
        if mask.sum() < 100:
            continue
        pts = back_project(f.depth, f.K, mask)
        centroid = pts.mean(0)
        normal = np.linalg.svd(pts - centroid, full_matrices=False)[2][-1]
        assert np.abs((pts - centroid) @ normal).max() < 1e-3
        height = abs(centroid @ normal)  # distance of the plane from the camera centre
        assert height == pytest.approx(f.pose.position[1], abs=1e-3)
        up_in_cam = f.pose.rotation().T @ np.array([0.0, 1.0, 0.0])
        assert abs(normal @ up_in_cam) == pytest.approx(1.0, abs=1e-4)
        checked += 1
    assert checked >= 10


def test_all_pixels_lie_inside_the_room(frames):
    for f in frames[:8]:
        pts = to_world(back_project(f.depth, f.K, np.ones_like(f.labels, bool)), f.pose)
        size = np.asarray(f.scene.room.size)
        assert (pts > -1e-3).all() and (pts < size + 1e-3).all()
        walls = to_world(back_project(f.depth, f.K, f.labels == CLS["wall"]), f.pose)
        on_wall = np.minimum(np.abs(walls[:, [0, 2]]), np.abs(walls[:, [0, 2]] - size[[0, 2]]))
        assert on_wall.min(1).max() < 1e-3


def _single_object_frame(obj: SceneObject, eye=(1.0, 1.6, 0.8)):
    scene = Scene(room=Room(size=(5.0, 3.0, 6.0)), objects=(obj,))
    f = render(scene, 240, 320, pose=CameraPose.look_at(eye, obj.center))
    mask = f.labels == CLS[obj.cls]
    assert mask.sum() > 500
    return to_world(back_project(f.depth, f.K, mask), f.pose)


def test_sphere_surface_is_exact():
    obj = SceneObject("sphere", (2.5, 0.5, 3.5), (1.0, 1.0, 1.0))
    pts = _single_object_frame(obj)
    np.testing.assert_allclose(np.linalg.norm(pts - obj.center, axis=1), 0.5, atol=1e-3)


def test_rotated_box_surface_is_exact():
    obj = SceneObject("box", (2.5, 0.4, 3.5), (1.2, 0.8, 0.6), yaw=0.7)
    pts = _single_object_frame(obj) - obj.center
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    local = np.stack([c * pts[:, 0] - s * pts[:, 2], pts[:, 1], s * pts[:, 0] + c * pts[:, 2]], 1)
    np.testing.assert_allclose(np.abs(local / (np.asarray(obj.size) / 2)).max(1), 1.0, atol=2e-3)


def test_cylinder_surface_is_exact():
    obj = SceneObject("cylinder", (2.5, 0.6, 3.5), (0.6, 1.2, 0.6))
    pts = _single_object_frame(obj) - obj.center
    radial, top = np.hypot(pts[:, 0], pts[:, 2]), pts[:, 1]
    on_side, on_cap = np.abs(radial - 0.3) < 1e-3, np.abs(top - 0.6) < 1e-3
    assert (on_side | (on_cap & (radial <= 0.3 + 1e-3))).all()
    assert on_cap.sum() > 50  # seen from above, the top cap is visible


def test_shapes_dtypes_and_ranges(frames):
    for f in frames:
        assert f.rgb.shape == (240, 320, 3) and f.rgb.dtype == np.uint8
        assert f.rgb.flags.c_contiguous
        assert f.depth.shape == (240, 320) and f.depth.dtype == np.float32
        assert f.labels.shape == (240, 320) and f.labels.dtype == np.uint8
        assert np.isfinite(f.depth).all()
        assert f.depth.min() > 0.3 and f.depth.max() < MAX_DEPTH
        assert f.labels.max() < NUM_CLASSES
        assert f.rgb.std() > 10  # shaded and textured, not a flat fill


def test_every_class_appears_across_seeds(frames):
    seen = set().union(*(np.unique(f.labels).tolist() for f in frames))
    assert seen == set(range(NUM_CLASSES))
    assert NUM_CLASSES >= 8 and CLASS_PALETTE.shape == (NUM_CLASSES, 3)
    assert len({tuple(c) for c in CLASS_PALETTE}) == NUM_CLASSES


def test_deterministic_per_seed_and_different_across_seeds(frames):
    again = render_scene(5)
    for name in ("rgb", "depth", "labels", "K"):
        assert np.array_equal(getattr(again, name), getattr(frames[5], name))
    assert not np.array_equal(frames[5].rgb, frames[6].rgb)
    assert frames[5].scene.room != frames[6].scene.room


def test_custom_intrinsics_and_size():
    K = intrinsics(96, 128, 75.0)
    f = render_scene(2, 96, 128, K=K)
    assert f.rgb.shape == (96, 128, 3) and np.array_equal(f.K, K)
    wide = render_scene(2, 96, 128, fov_deg=75.0)
    assert np.array_equal(wide.depth, f.depth)


def test_camera_walk_is_smooth():
    cam = SyntheticCamera(120, 160, seed=1)
    frames = list(itertools.islice(cam, 6))
    assert all(f.scene.room == cam.scene.room for f in frames)
    for a, b in itertools.pairwise(frames):
        step = np.linalg.norm(np.subtract(b.pose.position, a.pose.position))
        assert 1e-3 < step < 0.05
        assert np.median(np.abs(b.depth - a.depth)) < 0.05
        assert (a.labels == b.labels).mean() > 0.9
    far = cam.frame(150)  # a quarter loop later the view has changed
    assert np.median(np.abs(far.depth - frames[0].depth)) > 0.1
    assert np.array_equal(cam.frame(3).depth, frames[3].depth)


def test_camera_walk_never_enters_objects():
    cam = SyntheticCamera(48, 64, seed=2, frames_per_loop=60)
    for i in range(60):
        f = cam.frame(i)
        assert f.depth.min() > 0.3


def test_dataset_samples_and_transform():
    ds = SyntheticDataset(4, height=60, width=80, seed_offset=10)
    assert len(ds) == 4 and ds.num_classes == NUM_CLASSES and ds.max_depth == MAX_DEPTH
    sample = ds[1]
    assert set(sample) == {"image", "depth", "labels", "K"}
    assert sample["image"].shape == (60, 80, 3) and sample["image"].dtype == np.uint8
    assert sample["depth"].dtype == np.float32 and sample["labels"].dtype == np.uint8
    assert sample["K"].shape == (3, 3)
    assert np.array_equal(sample["depth"], render_scene(11, 60, 80).depth)
    assert np.array_equal(ds[-1]["image"], ds[3]["image"])
    with pytest.raises(IndexError):
        ds[4]
    shaped = SyntheticDataset(2, 60, 80, transform=lambda s: s["depth"].shape)
    assert shaped[0] == (60, 80)
