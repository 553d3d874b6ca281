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
