"""The scripted expert solves every tabletop task."""

from __future__ import annotations

import numpy as np
import pytest

from envs.config import EnvConfig
from envs.tabletop import TabletopEnv
from envs.tabletop_expert import expert_action


def _run(env: TabletopEnv, task: str, seed: int, **kw) -> tuple[bool, int]:
    env.reset(task, seed=seed)
    done, success, steps = False, False, 0
    while not done:
        a = expert_action(env, **kw)
        assert a.shape == (7,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
        _, success, done, _ = env.step(a)
        steps += 1
    return success, steps


def test_expert_success_over_50_episodes_all_tasks():
    env = TabletopEnv(EnvConfig(image_size=16))
    results = [_run(env, env.task_names[i % len(env.task_names)], 500 + i) for i in range(50)]
    rate = np.mean([s for s, _ in results])
    lengths = [n for _, n in results]
    assert rate >= 0.95, rate
    assert 15 <= np.mean(lengths) <= 60 and max(lengths) < env.max_steps


def test_noisy_expert_still_succeeds_and_is_seeded():
    env = TabletopEnv(EnvConfig(image_size=16))
    results = [
        _run(env, t, 7, noise=0.2, rng=np.random.default_rng(i))
        for i, t in enumerate(env.task_names)
    ]
    assert np.mean([s for s, _ in results]) >= 0.75
    a = _run(env, "place_red_on_green", 3, noise=0.2, rng=np.random.default_rng(0))
    b = _run(env, "place_red_on_green", 3, noise=0.2, rng=np.random.default_rng(0))
    assert a == b
    with pytest.raises(ValueError, match="rng"):
        expert_action(env, noise=0.1)


def test_finished_task_stays_finished():
    """After success the expert keeps the gripper open and away: labels stay 1 (reflector data)."""
    from actors.exploration import EpisodeSpec, ScriptedExpert, run_episode
    from envs.config import EnvConfig
    from envs.tabletop import TabletopEnv

    env = TabletopEnv(EnvConfig(image_size=32))
    for task in ("place_red_on_blue", "stack_yellow_on_red", "lift_red"):
        ep = run_episode(env, EpisodeSpec(task, 3), ScriptedExpert(), steps_after_success=10)
        first = int(ep.success.argmax())
        assert ep.success[first:].all(), task


def test_near_miss_expert_holds_the_block_just_short_of_success():
    """Hard negatives: the task's block ends held (gripper closed) over its target or below the
    lift height, and no frame of the episode is a success."""
    from actors.exploration import EpisodeSpec, NearMissExpert, run_episode
    from envs.tabletop_tasks import BLOCK_SIZE, LIFT_HEIGHT, TASKS

    env = TabletopEnv(EnvConfig(image_size=32, layout="homes"))
    for i, task in enumerate(env.task_names):
        ep = run_episode(env, EpisodeSpec(task, 40 + i, "near_miss"), NearMissExpert())
        spec = TASKS[task]
        block = env.object_positions()[spec.block]
        assert not ep.success.any() and ep.num_steps == env.max_steps, task
        assert env.holding == spec.block, task
        if spec.kind == "lift":
            assert (
                LIFT_HEIGHT - NearMissExpert().high - 0.01
                <= block[2] - BLOCK_SIZE / 2
                < LIFT_HEIGHT
            ), task
        else:
            goal = env.object_positions()[spec.target]
            assert np.max(np.abs(block[:2] - goal[:2])) < 0.02, task  # over the target ...
            assert block[2] - goal[2] > BLOCK_SIZE / 2 + 0.01, task  # ... but not resting on it
    with pytest.raises(ValueError, match="near-miss heights"):
        NearMissExpert(low=0.05, high=0.01)
