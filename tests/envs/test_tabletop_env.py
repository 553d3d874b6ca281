"""The tabletop env: API, determinism, state round trips, errors, grasping and success."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.base import Observation
from envs.config import EnvConfig
from envs.tabletop import TabletopEnv
from envs.tabletop_expert import expert_action
from envs.tabletop_tasks import BLOCK_SIZE, LIFT_HEIGHT, OBJECTS, PLATE_HEIGHT, TASKS


def _move_to(env: TabletopEnv, target, grip: float, max_steps: int = 40):
    """Step toward an EE target with a saturated proportional command; returns the last step."""
    result = None
    for _ in range(max_steps):
        a = np.zeros(7, np.float32)
        a[:3] = np.clip((np.asarray(target) - env.proprio[:3]) / env.limits.pos_limit, -1, 1)
        a[6] = grip
        result = env.step(a)
        if np.allclose(env.proprio[:3], target, atol=1e-9):
            break
    return result


def _grasp(env: TabletopEnv, block: str):
    p = env.object_positions()[block]
    _move_to(env, [p[0], p[1], p[2] + 0.06], -1.0)
    _move_to(env, p, -1.0)
    return env.step(np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32))


def test_tasks_and_instructions():
    env = TabletopEnv(EnvConfig(image_size=32))
    assert len(env.task_names) >= 6
    assert {t.kind for t in TASKS.values()} == {"place", "stack", "lift"}
    for name in env.task_names:
        text = env.instruction(name)
        assert text == text.lower() and "block" in text
    assert env.instruction("place_red_on_blue") == "put the red block on the blue plate"
    meta = json.loads(json.dumps(env.meta()))
    assert meta["env"] == "tabletop" and meta["image_size"] == 32
    assert meta["controller_limits"]["pos_limit"] == env.limits.pos_limit


@pytest.mark.parametrize("size", [32, 64])
def test_observation_format(size):
    env = TabletopEnv(EnvConfig(image_size=size, wrist_camera=True))
    obs = env.reset("lift_red", seed=0)
    assert isinstance(obs, Observation)
    assert obs.image.shape == (size, size, 3) and obs.image.dtype == np.uint8
    assert obs.wrist_image is not None and obs.wrist_image.shape == (size, size, 3)
    assert obs.proprio.shape == (8,) and obs.proprio.dtype == np.float32
    assert obs.instruction == "lift the red block"
    obs, success, done, info = env.step(np.zeros(7, np.float32))
    assert set(info) >= {"objects", "ee_pos", "holding", "step"}
    assert set(info["objects"]) == set(OBJECTS)
    np.testing.assert_allclose(info["ee_pos"], obs.proprio[:3], atol=1e-6)
    assert TabletopEnv(EnvConfig(image_size=size)).reset("lift_red", seed=0).wrist_image is None


def _rollout(env: TabletopEnv, task: str, seed: int, n: int = 25):
    rng = np.random.default_rng(seed)
    frames = [env.reset(task, seed=seed).image]
    states = [env.get_state()]
    for t in range(n):
        a = expert_action(env) if t % 3 else rng.uniform(-1, 1, 7).astype(np.float32)
        frames.append(env.step(a).obs.image)
        states.append(env.get_state())
    return np.stack(frames), states


def test_determinism_same_seed_same_episode():
    f1, s1 = _rollout(TabletopEnv(EnvConfig(image_size=32), seed=1), "stack_red_on_yellow", 7)
    f2, s2 = _rollout(TabletopEnv(EnvConfig(image_size=32), seed=2), "stack_red_on_yellow", 7)
    assert np.array_equal(f1, f2)
    assert s1 == s2
    f3, s3 = _rollout(TabletopEnv(EnvConfig(image_size=32)), "stack_red_on_yellow", 8)
    assert not np.array_equal(f1[0], f3[0])
    assert s1[0]["objects"] != s3[0]["objects"]


def test_seedless_resets_follow_the_env_seed():
    a, b = TabletopEnv(seed=5), TabletopEnv(seed=5)
    firsts = [a.reset("lift_red").image for _ in range(3)]
    seconds = [b.reset("lift_red").image for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(firsts, seconds, strict=True))
    assert not np.array_equal(firsts[0], firsts[1])


def test_state_round_trip_mid_episode_while_carrying():
    env = TabletopEnv(EnvConfig(image_size=32, wrist_camera=True))
    env.reset("place_yellow_on_green", seed=11)
    for _ in range(40):
        env.step(expert_action(env))
        if env.holding is not None:
            break
    env.step(expert_action(env))
    assert env.holding == "yellow_block"
    state = json.loads(json.dumps(env.get_state()))  # JSON-able
    obs = env.step(expert_action(env)).obs
    rest = [env.step(expert_action(env)) for _ in range(10)]

    other = TabletopEnv(EnvConfig(image_size=32, wrist_camera=True), seed=99)
    other.reset("lift_red", seed=3)
    other.reset("place_yellow_on_green", init_state=state)
    assert other.get_state() == state and other.holding == "yellow_block"
    obs2 = other.step(expert_action(other)).obs
    assert np.array_equal(obs.image, obs2.image) and np.array_equal(
        obs.wrist_image, obs2.wrist_image
    )
    for r in rest:
        r2 = other.step(expert_action(other))
        assert np.array_equal(r.obs.image, r2.obs.image)
        assert (r.success, r.done) == (r2.success, r2.done)
    assert other.get_state() == env.get_state()


def test_bad_inputs_raise_clear_errors():
    env = TabletopEnv(EnvConfig(image_size=16))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match="valid tasks: .*place_red_on_blue"):
        env.reset("open_the_drawer")
    env.reset("lift_red", seed=0)
    for bad in (np.zeros(6), np.zeros((1, 7)), np.array([0, 0, np.nan, 0, 0, 0, 0])):
        with pytest.raises(ValueError, match=r"shape \(7,\)"):
            env.step(bad)
    with pytest.raises(ValueError, match="missing keys"):
        env.reset("lift_red", init_state={"proprio": [0] * 8})
    state = env.get_state()
    state["objects"] = {"red_block": [0, 0, 0]}
    with pytest.raises(ValueError, match="objects"):
        env.reset("lift_red", init_state=state)
    with pytest.raises(ValueError, match="tabletop"):
        TabletopEnv(EnvConfig(name="libero"))


def test_blocks_never_move_unless_carried():
    env = TabletopEnv(EnvConfig(image_size=16))
    rng = np.random.default_rng(0)
    env.reset("place_red_on_blue", seed=2)
    for _ in range(200):
        before = env.object_positions()
        a = rng.uniform(-1, 1, 7)
        a[6] = -1.0  # never close: nothing can be grasped
        info = env.step(a).info
        assert info["holding"] is None
        for name, p in before.items():
            np.testing.assert_array_equal(info["objects"][name], p)


def test_grasp_carry_release_and_drop_heights():
    env = TabletopEnv(EnvConfig(image_size=32))
    env.reset("place_red_on_blue", seed=4)
    pos = env.object_positions()
    # closing high above the block grasps nothing
    _move_to(env, [pos["red_block"][0], pos["red_block"][1], 0.15], -1.0)
    assert env.step(np.array([0, 0, 0, 0, 0, 0, 1.0])).info["holding"] is None
    env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert _grasp(env, "red_block").info["holding"] == "red_block"
    offset = env.object_positions()["red_block"] - env.proprio[:3]
    for target in ([0.1, 0.1, 0.2], [-0.1, 0.0, 0.15], [0.05, -0.1, 0.12]):
        r = _move_to(env, target, 1.0)
        np.testing.assert_allclose(
            r.info["objects"]["red_block"] - r.info["ee_pos"], offset, atol=1e-12
        )
    # release high above the blue plate: the block drops onto it
    plate = pos["blue_plate"]
    _move_to(env, [plate[0] - offset[0], plate[1] - offset[1], 0.15], 1.0)
    r = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    red = r.info["objects"]["red_block"]
    assert r.info["holding"] is None and r.success and r.done
    assert red[2] == pytest.approx(PLATE_HEIGHT + BLOCK_SIZE / 2)
    # the other objects never moved
    for name in ("yellow_block", "blue_plate", "green_plate"):
        np.testing.assert_array_equal(r.info["objects"][name], pos[name])


def test_stack_and_carried_block_cannot_sink():
    env = TabletopEnv(EnvConfig(image_size=32))
    env.reset("stack_yellow_on_red", seed=6)
    _grasp(env, "yellow_block")
    red = env.object_positions()["red_block"]
    offset = env.object_positions()["yellow_block"] - env.proprio[:3]
    _move_to(env, [red[0] - offset[0], red[1] - offset[1], 0.2], 1.0)
    r = _move_to(env, [red[0] - offset[0], red[1] - offset[1], 0.0], 1.0, max_steps=15)
    yellow = r.info["objects"]["yellow_block"]
    assert yellow[2] == pytest.approx(red[2] + BLOCK_SIZE)  # resting on red's top, not inside
    assert not r.success  # still held
    r = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert r.success and r.info["objects"]["yellow_block"][2] == pytest.approx(red[2] + BLOCK_SIZE)


def test_lift_success_and_step_limit():
    env = TabletopEnv(EnvConfig(image_size=16, max_steps=30))
    env.reset("lift_yellow", seed=1)
    _grasp(env, "yellow_block")
    y = env.object_positions()["yellow_block"]
    r = None
    for _ in range(10):
        r = env.step(np.array([0, 0, 1.0, 0, 0, 0, 1.0]))
        if r.success:
            break
    assert r.success and r.done
    assert r.info["objects"]["yellow_block"][2] - BLOCK_SIZE / 2 >= LIFT_HEIGHT
    assert r.info["objects"]["yellow_block"][0] == y[0]

    env.reset("lift_yellow", seed=1)
    results = [env.step(np.zeros(7)) for _ in range(30)]
    assert not any(r.done for r in results[:-1]) and results[-1].done and not results[-1].success
    assert TabletopEnv(EnvConfig(image_size=16)).max_steps == 80


def test_homes_layout_keeps_objects_near_their_homes_and_the_expert_solves_it():
    from envs.tabletop_tasks import HOMES

    env = TabletopEnv(EnvConfig(image_size=16, layout="homes", layout_jitter=0.03))
    offsets = []
    for seed in range(20):
        env.reset("stack_yellow_on_red", seed=seed)
        for name, p in env.object_positions().items():
            offsets.append(np.abs(p[:2] - np.asarray(HOMES[name])))
            assert p[2] == pytest.approx(OBJECTS[name].half[2])
    offsets = np.array(offsets)
    assert offsets.max() <= 0.03 and offsets.max() > 0.02  # jittered, within bounds
    for task in TASKS:
        env.reset(task, seed=7)
        for _ in range(env.max_steps):
            result = env.step(expert_action(env))
            if result.done:
                break
        assert result.success, task
    assert env.meta()["layout"] == "homes"


def test_task_progress_stages():
    """``task_progress``: reach rises as the fingertips near the task's block; grasping it adds
    a third; carrying it over its plate the last third (progress 1 before the release makes it a
    success); the wrong block earns nothing past reach; lift counts the height; a restored
    state measures from where it was restored."""
    from envs.tabletop_tasks import REACH_SCALE, task_progress

    env = TabletopEnv(EnvConfig(image_size=16))
    env.reset("place_red_on_blue", seed=4)
    pos = env.object_positions()
    red, plate = pos["red_block"], pos["blue_plate"]
    far = _move_to(env, red + [0, 0, REACH_SCALE + 0.01], -1.0).info["progress"]
    near = _move_to(env, red + [0, 0, 0.06], -1.0).info["progress"]
    assert far == 0.0 and near == pytest.approx((1 - 0.06 / REACH_SCALE) / 3)
    held = _grasp(env, "red_block").info["progress"]
    assert held == pytest.approx(2 / 3)
    offset = red - env.proprio[:3]
    half_way = (red[:2] + plate[:2]) / 2 - offset[:2]
    r = _move_to(env, [half_way[0], half_way[1], 0.15], 1.0)
    assert r.info["progress"] == pytest.approx(2 / 3 + 0.5 / 3)
    r = _move_to(env, [plate[0] - offset[0], plate[1] - offset[1], 0.15], 1.0)
    assert r.info["progress"] == pytest.approx(1.0) and not r.success
    assert task_progress(TASKS["place_red_on_blue"], pos, None, red, pos) == pytest.approx(1 / 3)
    assert task_progress(TASKS["place_red_on_blue"], pos, "yellow_block", red, pos) == (
        pytest.approx(1 / 3)
    )

    env.reset("lift_yellow", seed=1)
    _grasp(env, "yellow_block")
    for _ in range(3):
        r = env.step(np.array([0, 0, 1.0, 0, 0, 0, 1.0]))
    y = r.info["objects"]["yellow_block"]
    assert r.info["progress"] == pytest.approx(2 / 3 + (y[2] - BLOCK_SIZE / 2) / LIFT_HEIGHT / 3)

    state = env.get_state()  # restored while holding: the start is the restored layout
    env.reset("lift_yellow", init_state=state)
    r = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert r.info["progress"] > 2 / 3
