"""Action maps: projection against hand-computed pixels, colors, flip, batching, bad input; the
gripper outline and its ground copy at hand-computed pixels."""

import numpy as np
import pytest

from envs.base import Camera
from simulator_service.action_map import (
    AXIS_COLORS,
    CLOSED_COLOR,
    GROUND_COLOR,
    OPEN_COLOR,
    axis_angle_to_matrix,
    render_action_maps,
)
from simulator_service.config import ActionMapConfig


def camera(size=32, flip=False):
    k = np.array([[40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]])
    return Camera(k, np.eye(4), size, size, flip180=flip)  # world = camera frame


def proprio(x, y, z, *, opening=0.08, rot=(0, 0, 0)):
    return np.array([[x, y, z, *rot, opening / 2, -opening / 2]], np.float32)


def disk_centroid(img, color):
    w = np.clip(1 - np.abs(img - color).sum(-1), 0, None)  # weight of disk-colored pixels
    vv, uu = np.mgrid[: img.shape[0], : img.shape[1]]
    return (w * uu).sum() / w.sum(), (w * vv).sum() / w.sum()


def test_disk_at_hand_computed_projection():
    cfg = ActionMapConfig(radius=2.0, axis_length=0.0)
    # u = fx * x / z + cx = 40 * 0.1 / 1 + 15.5 = 19.5 ; v = 40 * -0.05 + 15.5 = 13.5
    img = render_action_maps(proprio(0.1, -0.05, 1.0), camera(), cfg, size=32)[0]
    u, v = disk_centroid(img, OPEN_COLOR)
    assert u == pytest.approx(19.5, abs=0.05) and v == pytest.approx(13.5, abs=0.05)
    assert img[13, 19] == pytest.approx(OPEN_COLOR)
    assert img[0, 0].sum() == 0  # black background


def test_flip180_and_rescaled_output():
    cfg = ActionMapConfig(radius=2.0, axis_length=0.0)
    img = render_action_maps(proprio(0.1, -0.05, 1.0), camera(flip=True), cfg, size=32)[0]
    u, v = disk_centroid(img, OPEN_COLOR)
    assert (u, v) == pytest.approx((31 - 19.5, 31 - 13.5), abs=0.05)
    big = render_action_maps(proprio(0.1, -0.05, 1.0), camera(), cfg, size=64)[0]
    u, v = disk_centroid(big, OPEN_COLOR)  # pixel centers: u' = (u + 0.5) * 2 - 0.5
    assert (u, v) == pytest.approx((39.5, 27.5), abs=0.05)


def test_gripper_color_and_axes():
    cfg = ActionMapConfig(radius=1.5, axis_length=0.2, line_width=0.5)
    closed = render_action_maps(proprio(0, 0, 1, opening=0.0), camera(), cfg, size=32)[0]
    opened = render_action_maps(proprio(0, 0, 1, opening=0.08), camera(), cfg, size=32)[0]
    c = (15, 15)
    assert closed[c] == pytest.approx(CLOSED_COLOR, abs=0.3)
    assert opened[c] == pytest.approx(OPEN_COLOR, abs=0.3)
    # EE x axis (identity rotation) points along +u: 40 * 0.2 = 8 px to the right of the center
    assert closed[15:17, 22, 2].sum() > 0.9 and closed[15:17, 22, 1].sum() < 0.1
    assert closed[15:17, 8].sum() < 0.1
    # rotated 90 degrees about z: the x axis now points along +v (down)
    rot = render_action_maps(proprio(0, 0, 1, rot=(0, 0, np.pi / 2)), camera(), cfg, size=32)[0]
    assert rot[22, 15:17, 2].sum() > 0.9 and rot[22, 15:17, 1].sum() < 0.1
    assert rot[15:17, 22].sum() < 0.1


def test_batched_deterministic_and_behind_camera():
    cfg = ActionMapConfig()
    batch = np.concatenate([proprio(0.1, 0, 1), proprio(-0.1, 0.05, 0.8), proprio(0, 0, -1)])
    a = render_action_maps(batch, camera(), cfg, size=32)
    b = render_action_maps(batch, camera(), cfg, size=32)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.array_equal(a[1], render_action_maps(batch[1:2], camera(), cfg, size=32)[0])
    assert a[2].sum() == 0  # behind the camera: nothing drawn
    assert 0 <= a.min() and a.max() <= 1


def reference_map(p, cam, cfg, size):
    """The documented drawing, one pixel at a time: axis lines (x, y, z) then the disk, each
    blended with its coverage clip(half width (radius) + 0.5 - distance, 0, 1)."""
    rot = axis_angle_to_matrix(p[3:6])
    pts = np.stack([p[:3], *(p[:3] + cfg.axis_length * rot[:, i] for i in range(3))])
    uv, depth = cam.project(pts)
    s = size / 32.0
    o = np.clip(abs(p[6] - p[7]) / cfg.gripper_max_opening, 0, 1)
    out = np.zeros((size, size, 3))
    if depth[0] <= 0:
        return out
    for v in range(size):
        for u in range(size):
            px = np.array([u, v], float)
            for i in range(3 if cfg.axis_length > 0 else 0):
                a, b = uv[0], uv[1 + i]
                ab = b - a
                t = np.clip((px - a) @ ab / max(ab @ ab, 1e-12), 0, 1)
                cover = np.clip(cfg.line_width * s + 0.5 - np.linalg.norm(px - a - t * ab), 0, 1)
                cover *= depth[1 + i] > 0
                out[v, u] = out[v, u] * (1 - cover) + AXIS_COLORS[i] * cover
            cover = np.clip(cfg.radius * s + 0.5 - np.linalg.norm(px - uv[0]), 0, 1)
            color = o * OPEN_COLOR + (1 - o) * CLOSED_COLOR
            out[v, u] = out[v, u] * (1 - cover) + color * cover
    return out


def test_vectorized_drawing_matches_the_per_pixel_reference():
    cfg = ActionMapConfig(radius=1.5, axis_length=0.08, line_width=0.6)
    batch = np.concatenate(
        [
            proprio(0.1, -0.05, 1.0, opening=0.03, rot=(0.3, -0.2, 0.9)),
            proprio(-0.12, 0.07, 0.7, opening=0.08, rot=(1.2, 0.4, -0.3)),
            proprio(0.0, 0.0, 0.2, opening=0.0, rot=(0, 0, 0)),  # axes leave the image
        ]
    )
    got = render_action_maps(batch, camera(), cfg, size=32)
    for i, p in enumerate(batch.astype(np.float64)):
        want = reference_map(p, camera(), cfg, 32)
        assert np.abs(got[i] - want).max() < 1e-5
    assert got.reshape(3, -1).max(axis=1).min() > 0.5  # every map draws something


def test_rodrigues_and_bad_input():
    r = axis_angle_to_matrix(np.array([0, 0, np.pi / 2]))
    assert r @ np.array([1, 0, 0]) == pytest.approx([0, 1, 0], abs=1e-9)
    with pytest.raises(ValueError, match="proprio of shape"):
        render_action_maps(np.zeros((2, 7)), camera(), ActionMapConfig(), size=32)
    with pytest.raises(ValueError, match="non-finite"):
        render_action_maps(np.full((1, 8), np.nan), camera(), ActionMapConfig(), size=32)


def gripper_cfg(**kw):
    # fingers open along the EE x axis and reach 0.1 m along its y axis to the palm, 0.2 m wide:
    # with the test camera (f = 40, center 15.5, depth 1) a 0.025 m step is one pixel
    base = dict(style="gripper", finger_extent=(0.0, 0.1, 0.0), palm_width=0.2, ground_z=-1.0)
    base.update(kw)
    return ActionMapConfig(**base)


def test_gripper_outline_at_hand_computed_pixels():
    # EE at pixel (u, v) = (16, 16); open 0.1: fingertips at u = 14 and 18, roots at v = 20;
    # the palm from u = 12 to 20 at v = 20; the ground (z = -1) is behind the camera: not drawn
    img = render_action_maps(
        proprio(0.0125, 0.0125, 1.0, opening=0.1), camera(), gripper_cfg(), size=32
    )[0]
    for v, u in [(16, 14), (18, 14), (20, 14), (16, 18), (18, 18), (20, 12), (20, 16), (20, 20)]:
        assert img[v, u] == pytest.approx(OPEN_COLOR), (v, u)
    for v, u in [(16, 16), (18, 16), (14, 14), (20, 23), (10, 10)]:
        assert img[v, u] == pytest.approx([0, 0, 0]), (v, u)
    closed = render_action_maps(
        proprio(0.0125, 0.0125, 1.0, opening=0.0), camera(), gripper_cfg(), size=32
    )[0]
    assert closed[18, 16] == pytest.approx(CLOSED_COLOR)  # both fingers on the EE axis
    assert closed[18, 14] == pytest.approx([0, 0, 0])
    # turned 90 degrees about the camera axis: the fingers open along v, reach toward -u
    turned = render_action_maps(
        proprio(0.0125, 0.0125, 1.0, opening=0.1, rot=(0, 0, np.pi / 2)),
        camera(),
        gripper_cfg(),
        size=32,
    )[0]
    for v, u in [(14, 16), (14, 14), (14, 12), (18, 14), (12, 12), (20, 12)]:
        assert turned[v, u] == pytest.approx(OPEN_COLOR), (v, u)
    assert turned[16, 16] == pytest.approx([0, 0, 0])


def test_gripper_ground_copy():
    # the EE behind the camera (not drawn), its copy dropped onto the plane z = 1: the outline
    # of the test above in gray
    img = render_action_maps(
        proprio(0.0125, 0.0125, -1.0, opening=0.1), camera(), gripper_cfg(ground_z=1.0), size=32
    )[0]
    for v, u in [(16, 14), (18, 18), (20, 12), (20, 20)]:
        assert img[v, u] == pytest.approx(GROUND_COLOR), (v, u)
    assert img[16, 16] == pytest.approx([0, 0, 0])
    # drawn under the outline: where both fall on one pixel, the outline's color shows
    both = render_action_maps(
        proprio(0.0125, 0.0125, 1.0, opening=0.1), camera(), gripper_cfg(ground_z=1.0), size=32
    )[0]
    assert both[18, 14] == pytest.approx(OPEN_COLOR)
    batch = np.concatenate([proprio(0.0125, 0.0125, 1.0), proprio(-0.1, 0.05, 1.5, opening=0.02)])
    many = render_action_maps(batch, camera(), gripper_cfg(ground_z=2.0), size=32)
    assert np.array_equal(
        many[1], render_action_maps(batch[1:], camera(), gripper_cfg(ground_z=2.0), size=32)[0]
    )


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("style", "disk", "action_map.style"),
        ("finger_axis", 3, "action_map.finger_axis"),
        ("finger_extent", (0.0, 0.1), "action_map.finger_extent"),
        ("line_width", 0.0, "action_map.line_width"),
    ],
)
def test_action_map_config_refuses_bad_values(key, value, match):
    with pytest.raises(ValueError, match=match):
        ActionMapConfig(**{key: value})
