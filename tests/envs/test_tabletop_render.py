"""Camera geometry and the NumPy rasterizer of the tabletop scene."""

from __future__ import annotations

import numpy as np
import pytest

from envs.base import Camera
from envs.config import EnvConfig
from envs.tabletop import OBJECT_LABELS, TabletopEnv
from envs.tabletop_render import (
    LABEL_GRIPPER,
    Faces,
    Rasterizer,
    SceneRenderer,
    box_faces,
    look_at_camera,
)


def test_projection_by_hand_with_and_without_flip():
    # eye 1 m in front of the origin (-y), looking along +y: camera x = world x, camera y = -world z
    cam = look_at_camera((0.0, -1.0, 0.0), (0.0, 0.0, 0.0), fovy_deg=90.0, size=64)
    f = 0.5 * 64 / np.tan(np.pi / 4)  # 32 px
    c = 31.5
    np.testing.assert_allclose(cam.intrinsics, [[f, 0, c], [0, f, c], [0, 0, 1]])
    point = np.array([0.1, 0.25, 0.05])  # depth 1.25 m
    uv, depth = cam.project(point)
    assert depth == pytest.approx(1.25)
    np.testing.assert_allclose(uv, [c + f * 0.1 / 1.25, c - f * 0.05 / 1.25])
    flipped = Camera(cam.intrinsics, cam.extrinsics, 64, 64, flip180=True)
    uv_f, _ = flipped.project(point)
    np.testing.assert_allclose(uv_f, [63 - uv[0], 63 - uv[1]])
    assert Camera.from_dict(flipped.to_dict()).flip180


def test_env_camera_matches_manual_pinhole():
    env = TabletopEnv(EnvConfig(image_size=64))
    pts = np.array([[0.0, 0.0, 0.0], [0.1, -0.05, 0.2], [-0.2, 0.15, 0.03]])
    k, e = env.camera.intrinsics, env.camera.extrinsics
    cam = pts @ e[:3, :3].T + e[:3, 3]
    want = (cam @ k.T)[:, :2] / cam[:, 2:]
    uv, depth = env.camera.project(pts)
    np.testing.assert_allclose(uv, want)
    assert np.all(depth > 0) and np.all((uv > 0) & (uv < 63))  # the workspace is in view


def test_rasterizer_fills_a_square_and_resolves_depth():
    cam = look_at_camera((0.0, -1.0, 0.0), (0.0, 0.0, 0.0), fovy_deg=90.0, size=32)
    r = Rasterizer(cam)
    buf = r.new_buffers()
    # a square facing the camera at depth 1, spanning x, z in [-0.25, 0.25]: pixels 11.5..19.5
    near = box_faces((0.0, 0.0, 0.0), (0.25, 0.001, 0.25), (200, 0, 0), 5)
    far = box_faces((0.0, 0.5, 0.0), (0.5, 0.001, 0.5), (0, 200, 0), 6)
    r.draw(near, buf)
    r.draw(far, buf)  # drawn later but behind: must not cover the near square
    lab = buf["label"]
    assert set(np.unique(lab[12:20, 12:20])) == {5}
    assert np.count_nonzero(lab == 5) == 64
    assert lab[11, 11] == 6 and lab[10, 10] == -1  # far square spans pixels 10.2 .. 20.8
    assert np.isclose(buf["depth"][15, 15], 0.999)


def test_flip180_rotates_the_image():
    base = look_at_camera((0.0, -0.5, 0.6), (0.0, 0.0, 0.0), fovy_deg=45.0, size=32)
    flipped = Camera(base.intrinsics, base.extrinsics, 32, 32, flip180=True)
    box = box_faces((0.05, 0.02, 0.03), (0.03, 0.03, 0.03), (200, 30, 30), 2)
    empty = Faces(
        *(
            np.zeros((0,) + a.shape[1:], a.dtype)
            for a in (box.verts, box.normals, box.colors, box.labels, box.top)
        )
    )
    imgs = []
    for cam in (base, flipped):
        r = SceneRenderer(cam)
        r.set_static([box], [])
        imgs.append(r.render(empty, [])[0])
    assert np.array_equal(imgs[1], imgs[0][::-1, ::-1])
    assert not np.array_equal(imgs[0], imgs[1])


def test_top_faces_brighter_and_blocks_large_enough():
    env = TabletopEnv(EnvConfig(image_size=32))
    for seed in range(5):
        obs = env.reset("place_red_on_blue", seed=seed)
        lab = env.labels()
        for name, label in OBJECT_LABELS.items():
            assert np.count_nonzero(lab == label) >= 6, (seed, name)
    red = box_faces((0, 0, 0.03), (0.03, 0.03, 0.03), (215, 35, 35), 2)
    top = red.colors[red.top][0]
    assert np.all(top.sum() > red.colors[~red.top].sum(axis=1))
    assert obs.image.std() > 10  # not a flat image


@pytest.mark.parametrize("size", [32, 64])
def test_gripper_drawn_where_the_camera_projects_the_ee(size):
    env = TabletopEnv(EnvConfig(image_size=size))
    env.reset("lift_red", seed=0)
    for target in ([0.0, -0.15, 0.12], [0.15, 0.1, 0.08], [-0.18, 0.0, 0.2]):
        for _ in range(30):
            a = np.zeros(7)
            a[:3] = np.clip((np.asarray(target) - env.proprio[:3]) / env.limits.pos_limit, -1, 1)
            a[6] = -1.0
            env.step(a)
        ee = env.proprio[:3]
        (u, v), _ = env.camera.project(ee)
        rows, cols = np.nonzero(env.labels() == LABEL_GRIPPER)
        # fingertips end at the EE point: the lowest gripper pixels sit at its projection
        assert abs(rows.max() - v) <= 1.0, (target, rows.max(), v)
        tips = cols[rows >= rows.max() - 1]
        assert abs(0.5 * (tips.min() + tips.max()) - u) <= 1.0, (target, tips, u)


def test_fingers_open_and_close_in_the_image():
    env = TabletopEnv(EnvConfig(image_size=64))
    env.reset("lift_red", seed=0)
    for _ in range(5):
        env.step(np.array([0, -1.0, -0.5, 0, 0, 0, -1.0]))
    open_lab = env.labels() == LABEL_GRIPPER
    for _ in range(3):
        env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    closed_lab = env.labels() == LABEL_GRIPPER
    width = lambda m: np.ptp(np.nonzero(m[np.nonzero(m)[0].max()])[0])  # noqa: E731
    assert width(open_lab) > width(closed_lab)
