"""The real LIBERO env through envs/libero.py: reset from an init state, step, shapes, camera."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.config import EnvConfig

pytestmark = pytest.mark.libero

SIZE = 128


@pytest.fixture(scope="module")
def env():
    from envs.factory import make_env

    e = make_env(
        EnvConfig(name="libero", suite="libero_spatial", image_size=SIZE, wrist_camera=True)
    )
    yield e
    e.close()


def test_reset_step_shapes_and_camera(env):
    from robosuite.utils import camera_utils

    assert env.task_names[0] == "libero_spatial/0" and len(env.task_names) == 10
    assert env.max_steps == 220
    lim = env.limits.to_dict()  # OSC_POSE output limits read from the controller
    assert lim["pos_limit"] == pytest.approx(0.05) and lim["rot_limit"] == pytest.approx(0.5)
    json.dumps(env.meta())
    states = env.init_states("libero_spatial/0")
    assert states.ndim == 2 and len(states) >= 10
    obs = env.reset("libero_spatial/0", seed=3)
    assert obs.image.shape == (SIZE, SIZE, 3) and obs.image.dtype == np.uint8
    assert obs.wrist_image.shape == (SIZE, SIZE, 3)
    assert obs.proprio.shape == (8,) and obs.proprio.dtype == np.float32
    assert obs.instruction == env.instruction("libero_spatial/0")
    assert obs.instruction.startswith("pick up the black bowl")
    assert 0.0 < obs.proprio[6] <= 0.041
    assert obs.proprio[7] == pytest.approx(-obs.proprio[6], abs=2e-3)

    # camera matches robosuite's own projection, mapped into the 180-degree rotated image
    cam = env.camera
    assert cam.flip180 and (cam.height, cam.width) == (SIZE, SIZE)
    m = camera_utils.get_camera_transform_matrix(env._env.sim, "agentview", SIZE, SIZE)
    ee0 = obs.proprio[:3].astype(np.float64)
    uv0, depth0 = cam.project(ee0)
    rowcol = camera_utils.project_points_from_world_to_camera(ee0[None], m, SIZE, SIZE)[0]
    assert depth0 > 0 and np.all((uv0 >= 0) & (uv0 < SIZE))
    assert abs(uv0[1] - rowcol[0]) <= 1.5  # rows: the upright view's rows
    assert abs(uv0[0] - (SIZE - 1 - rowcol[1])) <= 1.5  # columns mirrored by the rotation

    # move the arm sideways: the pixels that change surround both projected EE positions
    first = obs.image.astype(np.int16)
    for _ in range(6):
        res = env.step(np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0]))
    assert res.info["step"] == 6 and not res.done
    ee1 = res.obs.proprio[:3].astype(np.float64)
    assert ee1[1] - ee0[1] > 0.02  # the arm moved along +y
    uv1, _ = cam.project(ee1)
    changed = np.abs(res.obs.image.astype(np.int16) - first).sum(-1) > 40  # (H, W)
    rows, cols = np.nonzero(changed)
    assert len(rows) > 20
    for u, v in (uv0, uv1):
        assert cols.min() - 3 <= u <= cols.max() + 3 and rows.min() - 3 <= v <= rows.max() + 3
        near = changed[max(0, int(v) - 8) : int(v) + 9, max(0, int(u) - 8) : int(u) + 9]
        assert near.any(), "no moving pixels near the projected end effector"


def test_state_roundtrip_and_bad_input(env):
    obs = env.reset("pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate", seed=0)
    assert env.task == "libero_spatial/1"
    state = env.get_state()
    again = env.reset("libero_spatial/1", init_state=state)
    np.testing.assert_allclose(again.proprio, obs.proprio, atol=5e-4)  # axis-angle near pi
    # same scene up to renderer noise (mean abs difference measured 1.7 of 255)
    assert np.abs(again.image.astype(int) - obs.image.astype(int)).mean() < 4.0
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan] * 7))
    with pytest.raises(ValueError, match="unknown LIBERO task"):
        env.reset("libero_spatial/10")
    with pytest.raises(ValueError, match="init_state"):
        env.reset("libero_spatial/1", init_state=np.zeros(3))
    with pytest.raises(ValueError, match="unknown LIBERO suite"):
        from envs.libero import LiberoEnv

        LiberoEnv(EnvConfig(name="libero", suite="libero_nope"))


def _oft_first_observations(task_index: int, episodes: int) -> list[dict]:
    """OpenVLA-OFT's evaluation protocol on a bare LIBERO env: build the task's env, seed 0;
    per episode i: reset, set init state i, 10 no-op steps; the observation after them."""
    from envs.libero import NOOP_ACTION, SETTLE_STEPS, _import_libero

    benchmark, get_path, env_cls, _, _ = _import_libero()
    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    task = suite.get_task(task_index)
    bddl = f"{get_path('bddl_files')}/{task.problem_folder}/{task.bddl_file}"
    oft = env_cls(bddl_file_name=bddl, camera_heights=SIZE, camera_widths=SIZE)
    oft.seed(0)
    out = []
    for i in range(episodes):
        oft.reset()
        oft.set_init_state(suite.get_task_init_states(task_index)[i])
        for _ in range(SETTLE_STEPS):
            obs, _, _, _ = oft.step(NOOP_ACTION)
        out.append({**obs, "state": np.asarray(oft.get_sim_state()).copy()})
    oft.close()
    return out


def test_resets_are_oft_episodes_bit_for_bit_and_reproducible(env):
    """Episode i of a task starts exactly where OFT's episode i does (state, both images,
    proprio), in any order and after any other episode; the caller's NumPy RNG is untouched."""
    ref = _oft_first_observations(2, 2)

    def check(obs, want):
        np.testing.assert_array_equal(env.get_state(), want["state"])
        np.testing.assert_array_equal(obs.image, want["agentview_image"][::-1, ::-1])
        np.testing.assert_array_equal(obs.wrist_image, want["robot0_eye_in_hand_image"][::-1, ::-1])
        np.testing.assert_array_equal(obs.proprio[:3], np.float32(want["robot0_eef_pos"]))

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    check(env.reset("libero_spatial/2", seed=1), ref[1])  # episode 1 first: 0's reset runs once
    assert np.array_equal(np.random.get_state()[1], before)
    for _ in range(4):
        env.step(np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    check(env.reset("libero_spatial/2", seed=0), ref[0])
    check(env.reset("libero_spatial/2", seed=1), ref[1])  # again: the same episode
