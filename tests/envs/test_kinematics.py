"""Kinematics (action -> next proprio) against hand computations and against the tabletop env."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.config import EnvConfig
from envs.kinematics import ControllerLimits, axis_angle_to_matrix, next_proprio
from envs.tabletop import TabletopEnv


def _rodrigues(v: np.ndarray) -> np.ndarray:
    """Textbook Rodrigues formula for one axis-angle vector."""
    theta = np.linalg.norm(v)
    if theta < 1e-12:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def test_axis_angle_to_matrix_matches_rodrigues():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(200, 3)) * 1.2
    aa[:5] *= 1e-9  # near the identity
    got = axis_angle_to_matrix(aa)
    want = np.stack([_rodrigues(v) for v in aa])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_next_proprio_by_hand():
    lim = ControllerLimits()
    s = np.array([0.0, 0.05, 0.10, 0.0, 0.0, 0.3, lim.finger_open, -lim.finger_open])
    a = np.array([0.5, -1.0, 2.0, 0.0, 0.0, 0.4, 1.0])  # z command clipped to 1, close gripper
    out = next_proprio(s, a, limits=lim)
    np.testing.assert_allclose(
        out[:3], [0.5 * lim.pos_limit, 0.05 - lim.pos_limit, 0.10 + lim.pos_limit]
    )
    # rotation about z composes additively: 0.3 + 0.4 * rot_limit
    np.testing.assert_allclose(out[3:6], [0.0, 0.0, 0.3 + 0.4 * lim.rot_limit], atol=1e-12)
    w = lim.finger_open - lim.gripper_rate
    np.testing.assert_allclose(out[6:], [w, -w])


def test_rotation_is_world_frame_delta_times_current():
    rng = np.random.default_rng(1)
    lim = ControllerLimits()
    s = np.zeros((64, 8))
    s[:, 3:6] = rng.normal(size=(64, 3))
    a = rng.uniform(-1, 1, size=(64, 7))
    out = next_proprio(s, a, limits=lim)
    for i in range(64):
        want = _rodrigues(a[i, 3:6] * lim.rot_limit) @ _rodrigues(s[i, 3:6])
        np.testing.assert_allclose(_rodrigues(out[i, 3:6]), want, atol=1e-10)
        assert np.linalg.norm(out[i, 3:6]) <= np.pi + 1e-9


def test_workspace_clip_and_gripper_bounds():
    lim = ControllerLimits()
    s = np.array([*lim.workspace_high, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = next_proprio(s, np.array([1.0, 1.0, 1.0, 0, 0, 0, -1.0]), limits=lim)
    np.testing.assert_allclose(out[:3], lim.workspace_high)
    np.testing.assert_allclose(out[6:], [lim.gripper_rate, -lim.gripper_rate])  # opening
    for _ in range(10):
        out = next_proprio(out, np.array([0, 0, 0, 0, 0, 0, -1.0]), limits=lim)
    np.testing.assert_allclose(out[6:], [lim.finger_open, -lim.finger_open])


def test_batched_broadcast_dtype_and_torch():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(3, 5, 8)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(3, 5, 7)).astype(np.float32)
    out = next_proprio(s, a)
    assert out.shape == (3, 5, 8) and out.dtype == np.float32
    for i in range(3):
        for j in range(5):
            np.testing.assert_allclose(out[i, j], next_proprio(s[i, j], a[i, j]), atol=1e-6)
    one_action = next_proprio(s, a[0, 0])  # (7,) broadcasts over the state batch
    assert one_action.shape == (3, 5, 8)
    torch = pytest.importorskip("torch")
    t_out = next_proprio(torch.from_numpy(s), torch.from_numpy(a))
    assert isinstance(t_out, torch.Tensor) and t_out.dtype == torch.float32
    np.testing.assert_allclose(t_out.numpy(), out, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        next_proprio(np.zeros(7), np.zeros(7))
    with pytest.raises(ValueError, match=r"\(\.\.\., 7\)"):
        next_proprio(np.zeros(8), np.zeros(6))


def test_limits_validation_and_round_trip():
    lim = ControllerLimits(pos_limit=0.03)
    d = json.loads(json.dumps(lim.to_dict()))
    assert ControllerLimits.from_dict(d) == lim
    with pytest.raises(ValueError, match="pos_limit"):
        ControllerLimits(pos_limit=0.0)
    with pytest.raises(ValueError, match="workspace_low"):
        ControllerLimits(workspace_low=(0.0, 0.0, 0.5), workspace_high=(0.1, 0.1, 0.2))
    with pytest.raises(ValueError, match="unknown controller limit keys"):
        ControllerLimits.from_dict({"pos_limt": 0.1})


def test_env_proprio_follows_kinematics_when_free():
    """Random actions: whenever nothing is carried, the env's proprio is next_proprio of the
    previous one (from the float32 observation, as a world-model rollout would compute it)."""
    env = TabletopEnv(EnvConfig(image_size=16), seed=3)
    rng = np.random.default_rng(4)
    checked = 0
    for ep in range(4):
        obs = env.reset(env.task_names[ep], seed=ep)
        for _ in range(40):
            a = rng.uniform(-1, 1, size=7).astype(np.float32)
            a[6] = -1.0 if rng.random() < 0.7 else 1.0
            pred = next_proprio(obs.proprio, a, limits=env.limits)
            carried_before = env.holding is not None
            obs, _, _, info = env.step(a)
            if carried_before or info["holding"] is not None:
                continue  # a carried block may stop the arm on what is below it
            np.testing.assert_allclose(obs.proprio[:3], pred[:3], atol=1e-5)
            np.testing.assert_allclose(obs.proprio[6:], pred[6:], atol=1e-6)
            np.testing.assert_allclose(
                axis_angle_to_matrix(obs.proprio[3:6]), axis_angle_to_matrix(pred[3:6]), atol=1e-5
            )
            checked += 1
    assert checked > 100
