"""Imagined rollouts of one group with the tiny policy, the fake simulator and fake reflector:
the acting loop over an ``ImaginedGroup``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.clients import LocalReflectorClient, LocalSimulatorClient
from actors.rollout import act_in_chunks
from actors.worlds import ImaginedGroup
from envs.config import EnvConfig
from envs.factory import make_env
from learner.batch import TrajectoryBatch
from policy.checkpoint import build_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics
from reflector_service.fake import FakeReflector
from simulator_service.fake import FakeWorldSimulator
from trajectories.initial_states import InitialState


def _setup():
    env = make_env(EnvConfig(image_size=32))
    obs = env.reset(env.task_names[0], seed=3)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-0.8, 0.8, (200, 7)).astype(np.float32)
    acts[:, -1] = np.sign(acts[:, -1])
    stats = compute_statistics(acts, rng.normal(size=(200, 8)), num_trajectories=4)
    policy = build_policy(PolicyConfig(), instructions=[obs.instruction], stats=stats).eval()
    init = InitialState(
        episode_id="e",
        start=0,
        task_id=env.task_names[0],
        instruction=obs.instruction,
        frames=obs.image[None],
        proprio=obs.proprio,
    )
    sim = FakeWorldSimulator(env.camera)
    refl = FakeReflector()
    return policy, LocalSimulatorClient(sim), LocalReflectorClient(refl), init, sim, refl


def rollout_group(policy, sim, refl, init, *, key, group_size, eta, **kw):
    """One imagined group through the acting loop, as a rollout worker runs it."""
    group = ImaginedGroup(sim, refl, [init], group_size, keys=[key], eta=eta)
    return act_in_chunks(policy, group, **kw)


def test_group_shapes_masks_and_release():
    policy, sim, refl, init, sim_backend, refl_backend = _setup()
    res = rollout_group(
        policy,
        sim,
        refl,
        init,
        key="g0",
        group_size=4,
        max_policy_steps=3,
        execute_steps=2,
        eta=0.99,
        generator=torch.Generator().manual_seed(0),
        keep_frames=True,
    )
    n, t = res.old_log_probs.shape[:2]
    assert res.old_log_probs.shape[2:] == res.actions.shape[2:]  # per action dimension
    assert n == 4 and t == 3  # the fake reward never exceeds eta: runs to the step limit
    assert res.images.shape == (4, 3, 32, 32, 3) and res.actions.shape[:2] == (4, 3)
    assert res.done.sum(axis=1).tolist() == [1, 1, 1, 1] and res.done[:, -1].all()
    assert not (res.rewards > 0.99).any() and res.env_steps == 4 * 3 * 2
    assert res.frames.shape == (4, 1 + 6, 32, 32, 3)
    assert np.all((res.rewards >= 0) & (res.rewards <= 1))
    assert sim_backend._start == {} and refl_backend._first == {}  # released
    # the recorded log-probs are the policy's: recomputing them gives the same numbers
    obs = {
        "image": res.images.reshape(-1, 32, 32, 3),
        "proprio": res.proprio.reshape(-1, 8),
        "instruction": [init.instruction] * (n * t),
    }
    lp = policy.log_prob(obs, torch.from_numpy(res.actions.reshape(n * t, *res.actions.shape[2:])))
    np.testing.assert_allclose(
        lp.detach().numpy().reshape(n, t),
        res.old_log_probs.sum(axis=(-2, -1)),
        rtol=1e-4,
        atol=1e-3,
    )
    TrajectoryBatch(
        obs={"image": torch.from_numpy(res.images), "proprio": torch.from_numpy(res.proprio)},
        actions=torch.from_numpy(res.actions),
        old_log_probs=torch.from_numpy(res.old_log_probs),
        executed=torch.from_numpy(res.executed),
        rewards=torch.from_numpy(res.rewards),
        done=torch.from_numpy(res.done),
        group_ids=torch.full((n,), 5),
        policy_version=torch.full((n,), 7),
    )


def test_mirrored_rollouts_act_with_opposite_noise():
    """With ``mirror`` = the group size, rollout n + N/2 acts with the negated standard noise of
    rollout n: at the first step, where every rollout of a start sees the same frame, their
    actions are mirror images around the same mu, with equal log-densities."""
    policy, sim, refl, init, _, _ = _setup()
    kw = dict(max_policy_steps=2, execute_steps=2, eta=0.99)
    res = rollout_group(
        policy, sim, refl, init, key="m", group_size=4, mirror=4, generator=torch.Generator(), **kw
    )
    first = {"image": res.images[:1, 0], "proprio": res.proprio[:1, 0]}
    mu = policy.act({**first, "instruction": [init.instruction]}, deterministic=True)[0][0].numpy()
    a, lp = res.actions[:, 0], res.old_log_probs[:, 0]  # (4, chunk, A)
    for n in range(2):
        np.testing.assert_allclose(a[n] + a[n + 2], 2 * mu, atol=1e-5)
        np.testing.assert_allclose(lp[n], lp[n + 2], atol=1e-4)
    assert not np.allclose(a[0], a[1])  # the pairs themselves differ
    with pytest.raises(ValueError, match="even group size"):
        rollout_group(policy, sim, refl, init, key="m3", group_size=3, mirror=3, **kw)


def test_reflector_termination_stops_early():
    policy, sim, refl, init, _, _ = _setup()
    res = rollout_group(
        policy,
        sim,
        refl,
        init,
        key="g1",
        group_size=3,
        max_policy_steps=4,
        execute_steps=4,
        eta=1e-6,
    )
    assert res.old_log_probs.shape[:2] == (3, 1)
    # each ran one action of its chunk, then R > eta stopped it: the rest never executed
    assert res.executed[:, 0, 0].all() and not res.executed[:, 0, 1:].any()
    assert (res.rewards > 1e-6).all() and res.done[:, 0].all()
    assert res.env_steps == 3  # one imagined step each, then R > eta stops them


def test_deterministic_group_acts_with_the_mean():
    """Imagined evaluation acts with mu: with the deterministic fake simulator every rollout of
    the group is the same, and its actions are the policy's mean for the observed frames."""
    policy, sim, refl, init, _, _ = _setup()
    res = rollout_group(
        policy,
        sim,
        refl,
        init,
        key="g2",
        group_size=3,
        max_policy_steps=2,
        execute_steps=2,
        eta=0.99,
        deterministic=True,
    )
    assert np.array_equal(res.actions[0], res.actions[1]) and np.array_equal(
        res.actions[0], res.actions[2]
    )
    obs = {
        "image": res.images[:, 1],
        "proprio": res.proprio[:, 1],
        "instruction": [init.instruction] * 3,
    }
    with torch.no_grad():
        _, _, mu, _ = policy.act(obs, deterministic=True)
    np.testing.assert_allclose(res.actions[:, 1], mu.numpy(), atol=1e-6)
    sampled = rollout_group(
        policy,
        sim,
        refl,
        init,
        key="g3",
        group_size=3,
        max_policy_steps=1,
        execute_steps=2,
        eta=0.99,
        generator=torch.Generator().manual_seed(0),
    )
    assert not np.array_equal(sampled.actions[0], sampled.actions[1])


def test_one_step_exploration_in_imagination_shares_the_state_until_k():
    """A rollout worker exploring at one step in imagination: the world model draws one noise
    per group (``common_noise``), so a group's rollouts, acting with the mean action, see the
    same imagined frames up to and at step k, and part after their sampled chunks."""
    from actors.config import RolloutConfig
    from actors.rollout_worker import RolloutWorker
    from actors.worlds import ImaginedWorld
    from simulator_service.config import SimulatorConfig
    from simulator_service.keyed import KeyedWorldSimulator
    from simulator_service.model import WorldModel

    policy, _, _, init, _, _ = _setup()
    env = make_env(EnvConfig(image_size=16))
    obs = env.reset(env.task_names[0], seed=3)
    init = InitialState("e", 0, env.task_names[0], obs.instruction, obs.image[None], obs.proprio)
    torch.manual_seed(0)
    model = WorldModel(SimulatorConfig.preset("tiny"))
    world = ImaginedWorld(
        lambda: KeyedWorldSimulator(model, env.camera, seed=1), FakeReflector, eta=0.99
    )
    cfg = RolloutConfig(group_size=3, max_policy_steps=4, execute_steps=2, explore="one_step")
    worker = RolloutWorker(lambda: policy, world=world, rollout=cfg, worker_index=0)
    worker.generator.manual_seed(0)
    groups = worker.run_groups([init] * 4, [0, 1, 2, 3])
    parted = 0
    for group in groups:
        res = group.rollout
        (k,) = np.unique(res.executed.any(axis=-1).argmax(axis=1))
        for t in range(res.images.shape[1]):
            alike = all(np.array_equal(res.images[0, t], res.images[i, t]) for i in (1, 2))
            assert alike or t > k, (k, t)
            parted += t > k and not alike
    assert parted  # after a sampled chunk the imagined states differ


def test_success_reward_is_the_reflectors_termination():
    """``post_train.imagined_reward: success``: the same rollouts as with the reflector's R,
    rewarded 1 where R > eta ended them and 0 elsewhere."""
    policy, sim, refl, init, _, _ = _setup()

    def run(reward: str, eta: float):
        group = ImaginedGroup(sim, refl, [init], 4, keys=[reward], eta=eta, reward=reward)
        return act_in_chunks(
            policy,
            group,
            max_policy_steps=3,
            execute_steps=2,
            generator=torch.Generator().manual_seed(0),
        )

    for eta, success in ((0.99, 0.0), (1e-6, 1.0)):  # none ends; all end at their first step
        r, s = run("reflector", eta), run("success", eta)
        np.testing.assert_array_equal(s.actions, r.actions)
        np.testing.assert_array_equal(s.steps, r.steps)
        assert ((r.rewards > eta) == bool(success)).all() and (r.rewards != success).all()
        assert (s.rewards == success).all()
    with pytest.raises(ValueError, match="imagined reward"):
        ImaginedGroup(sim, refl, [init], 2, keys=["x"], eta=0.5, reward="progress")
