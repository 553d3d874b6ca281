"""The one acting loop over both environment groups: imagined (fake world model and reflector)
and real (tabletop envs) keep the same protocol and the same record invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.clients import LocalReflectorClient, LocalSimulatorClient
from actors.rollout import act_in_chunks
from actors.starts import EvalJob
from actors.worlds import ImaginedGroup, RealGroup
from envs.config import EnvConfig
from envs.factory import make_env
from policy.checkpoint import build_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics
from reflector_service.fake import FakeReflector
from simulator_service.fake import FakeWorldSimulator
from trajectories.initial_states import InitialState

ENV = EnvConfig(image_size=32)
N, CHUNK, EXECUTE = 3, 4, 3


def _policy(instruction: str):
    rng = np.random.default_rng(0)
    acts = rng.uniform(-0.8, 0.8, (200, 7)).astype(np.float32)
    acts[:, -1] = np.sign(acts[:, -1])
    stats = compute_statistics(acts, rng.normal(size=(200, 8)), num_trajectories=4)
    torch.manual_seed(0)
    cfg = PolicyConfig(chunk=CHUNK, scale_bias_init=0.0)
    return build_policy(cfg, instructions=[instruction], stats=stats).eval()


def _imagined():
    env = make_env(ENV)
    task = env.task_names[0]
    obs = env.reset(task, seed=3)
    init = InitialState("e", 0, task, obs.instruction, obs.image[None], obs.proprio)
    sim, refl = FakeWorldSimulator(env.camera), FakeReflector()
    group = ImaginedGroup(
        LocalSimulatorClient(sim), LocalReflectorClient(refl), [init], N, keys=["g"], eta=0.6
    )
    return group, obs.instruction, lambda: sim._start == {} and refl._first == {}


def _real():
    envs = [make_env(ENV) for _ in range(N)]
    task = envs[0].task_names[0]
    group = RealGroup(envs, [EvalJob(task, 7 + i) for i in range(N)], limit=7)
    return group, envs[0].instruction(task), lambda: True


@pytest.mark.parametrize("make", [_imagined, _real], ids=["imagined", "real"])
def test_one_loop_over_both_groups(make) -> None:
    group, instruction, released = make()
    policy = _policy(instruction)
    r = act_in_chunks(
        policy,
        group,
        max_policy_steps=3,
        execute_steps=EXECUTE,
        generator=torch.Generator().manual_seed(0),
        keep_frames=True,
    )
    t = r.done.shape[1]
    assert r.images.shape[:2] == (N, t) and r.actions.shape == (N, t, CHUNK, 7)
    assert r.old_log_probs.shape == r.actions.shape and r.executed.shape == (N, t, CHUNK)
    assert r.done.sum(axis=1).tolist() == [1] * N  # every rollout ends exactly once
    ends = r.done.argmax(axis=1)
    for i in range(N):
        # actions run only up to the end, at most EXECUTE per chunk, and they are the steps
        assert not r.executed[i, :, EXECUTE:].any() and not r.executed[i, ends[i] + 1 :].any()
        assert r.executed[i].sum() == r.steps[i]
    assert r.frames.shape[:2] == (N, 1 + r.steps.max()) and r.rewards.shape == (N,)
    assert released()  # the group was closed


def test_the_real_limit_and_the_horizon_end_rollouts() -> None:
    group, instruction, _ = _real()
    r = act_in_chunks(_policy(instruction), group, max_policy_steps=10, execute_steps=EXECUTE)
    assert r.steps.tolist() == [7] * N and group.ended_by == ["limit"] * N
    group, instruction, _ = _real()
    r = act_in_chunks(_policy(instruction), group, max_policy_steps=2, execute_steps=EXECUTE)
    assert r.steps.tolist() == [2 * EXECUTE] * N and r.done[:, -1].all()


def test_replayed_chunks_are_taken_where_the_search_sampled() -> None:
    """``replay``: another run's chunks taken at ``explore_at`` and the mean action elsewhere,
    so a real group replaying its own search reproduces it (the env is deterministic)."""
    group, instruction, _ = _real()
    policy = _policy(instruction)
    kw = dict(max_policy_steps=3, execute_steps=EXECUTE, explore_at=np.array([0, 1, 1]))
    first = act_in_chunks(policy, group, generator=torch.Generator().manual_seed(0), **kw)
    chunks = first.actions[np.arange(N), kw["explore_at"]]  # (N, chunk, A)
    other = act_in_chunks(policy, _real()[0], generator=torch.Generator().manual_seed(9), **kw)
    assert not np.array_equal(other.actions, first.actions)  # another seed, another search
    again = act_in_chunks(
        policy, _real()[0], generator=torch.Generator().manual_seed(9), replay=chunks, **kw
    )
    np.testing.assert_array_equal(again.actions, first.actions)
    np.testing.assert_array_equal(again.executed, first.executed)
    np.testing.assert_array_equal(again.rewards, first.rewards)
    with pytest.raises(ValueError, match="explore_at"):
        act_in_chunks(policy, _real()[0], max_policy_steps=3, execute_steps=EXECUTE, replay=chunks)
