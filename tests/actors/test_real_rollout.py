"""Real-env RLOO groups (the oracle beside imagination), as a rollout worker runs them in a
``RealWorld``: layout, termination at success, starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.config import RolloutConfig
from actors.rollout import to_trajectory_batch
from actors.rollout_worker import RolloutWorker
from actors.starts import EVAL_SEED_OFFSET, REAL_START_SEED_OFFSET, RealStartSampler
from actors.worlds import RealWorld
from envs.config import EnvConfig
from envs.factory import make_env
from envs.tabletop_expert import expert_action
from policy.checkpoint import build_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics

ENV = EnvConfig(image_size=32)


def _policy(instruction: str):
    rng = np.random.default_rng(0)
    acts = rng.uniform(-0.8, 0.8, (200, 7)).astype(np.float32)
    acts[:, -1] = np.sign(acts[:, -1])
    stats = compute_statistics(acts, rng.normal(size=(200, 8)), num_trajectories=4)
    return build_policy(PolicyConfig(), instructions=[instruction], stats=stats).eval()


class ExpertPolicy:
    """Acts like the scripted expert in env i for row i, except in ``lazy`` rows (which hold
    still): a group where some rollouts succeed and some do not. Chunks of one action."""

    def __init__(self, envs, lazy):
        self.envs, self.lazy = envs, lazy

    def act(self, batch, deterministic=False, generator=None, scale_factor=1.0):
        # the loop passes the rows of the envs still running: find them, in order, by state
        rows, last = [], -1
        for p in batch["proprio"]:
            last = next(
                i for i in range(last + 1, len(self.envs)) if np.allclose(self.envs[i].proprio, p)
            )
            rows.append(last)
        a = np.stack(
            [
                np.zeros(7, np.float32) if i in self.lazy else expert_action(self.envs[i])
                for i in rows
            ]
        )[:, None]  # (R, 1, 7) env units
        t = torch.from_numpy(a)
        return t, torch.zeros_like(t), t, torch.zeros_like(t)

    def eval(self):
        return self

    def to_env_actions(self, actions):
        return actions.numpy()


def _worker(policy, *, envs, group_size, max_policy_steps, execute_steps, **kw):
    """A rollout worker in the real world over the given envs (its pool)."""
    world = RealWorld(lambda: None)
    world.pool.envs = envs
    cfg = RolloutConfig(
        group_size=group_size, max_policy_steps=max_policy_steps, execute_steps=execute_steps, **kw
    )
    return RolloutWorker(lambda: policy, world=world, rollout=cfg, worker_index=0)


def test_group_layout_same_start_and_log_probs():
    envs = [make_env(ENV) for _ in range(3)]
    task = envs[0].task_names[0]
    policy = _policy(envs[0].instruction(task))
    worker = _worker(policy, envs=envs, group_size=3, max_policy_steps=3, execute_steps=2)
    worker.version = 9
    worker.generator.manual_seed(0)
    (group,) = worker.run_groups(RealStartSampler([task], seed=1).sample(1), [4], keep_frames=True)
    res = group.rollout
    n, t = res.old_log_probs.shape[:2]
    assert res.old_log_probs.shape[2:] == res.actions.shape[2:]  # per action dimension
    assert (n, t) == (3, 3)  # a random policy does not finish the task in 6 steps
    assert res.images.shape == (3, 3, 32, 32, 3) and res.actions.shape[:2] == (3, 3)
    assert np.array_equal(res.images[0, 0], res.images[1, 0]) and np.array_equal(
        res.images[0, 0], res.images[2, 0]
    )
    assert res.done.sum(axis=1).tolist() == [1, 1, 1] and res.done[:, -1].all()
    assert res.rewards.tolist() == [0.0, 0.0, 0.0] and not group.terminated.any()
    assert res.env_steps == 3 * 3 * 2 and res.frames.shape == (3, 1 + 6, 32, 32, 3)
    assert group.group_id == 4 and group.policy_version == 9 and group.task == task
    # the recorded log-probs are the acting policy's
    obs = {
        "image": res.images.reshape(-1, 32, 32, 3),
        "proprio": res.proprio.reshape(-1, 8),
        "instruction": [group.instruction] * (n * t),
    }
    lp = policy.log_prob(obs, torch.from_numpy(res.actions.reshape(n * t, *res.actions.shape[2:])))
    np.testing.assert_allclose(
        lp.detach().numpy().reshape(n, t),
        res.old_log_probs.sum(axis=(-2, -1)),
        rtol=1e-4,
        atol=1e-3,
    )


def test_success_ends_that_rollout_with_reward_one():
    envs = [make_env(ENV) for _ in range(3)]
    policy = ExpertPolicy(envs, lazy={1})
    worker = _worker(policy, envs=envs, group_size=3, max_policy_steps=80, execute_steps=1)
    (group,) = worker.run_groups(RealStartSampler(["lift_red"], seed=0).sample(1), [0])
    res = group.rollout
    assert res.rewards.tolist() == [1.0, 0.0, 1.0] and group.terminated.tolist() == [
        True,
        False,
        True,
    ]
    assert res.done.sum(axis=1).tolist() == [1, 1, 1]
    ends = res.done.argmax(axis=1)
    assert ends[0] == ends[2] < 79 and ends[1] == 79  # the lazy one runs to the horizon
    assert res.env_steps == ends[0] + 1 + ends[2] + 1 + 80


def test_start_sampler_is_a_resumable_stream_apart_from_evaluation_seeds():
    tasks = ["a", "b", "c"]
    s = RealStartSampler(tasks, seed=5)
    first = s.sample(4)
    assert s.cursor == 4
    resumed = RealStartSampler(tasks, seed=5)
    resumed.cursor = 2
    assert resumed.sample(2) == first[2:]
    seeds = [j.seed for j in first]
    assert len(set(seeds)) == 4 and all(x >= REAL_START_SEED_OFFSET for x in seeds)
    assert all(not EVAL_SEED_OFFSET <= x < EVAL_SEED_OFFSET + 10**6 for x in seeds)
    assert {j.task for j in s.sample(30)} == set(tasks)


def test_near_misses_are_failures_that_held_the_tasks_object():
    """The real group records whether each env ever held its task's own block; summarize
    reports the share of failures that did (near misses) only where the env says."""
    from actors.evaluation import summarize
    from actors.starts import EvalJob
    from actors.worlds import RealGroup

    cfg = EnvConfig(image_size=32, layout="homes", max_steps=30)
    jobs = [EvalJob("place_red_on_blue", 7), EvalJob("place_red_on_blue", 8)]
    envs = [make_env(cfg) for _ in jobs]
    group = RealGroup(envs, jobs, limit=30)
    group.reset()
    idle = np.zeros(7)
    for _ in range(30):  # env 0 follows the expert (grasps, then runs out of steps), env 1 idles
        group.step(np.stack([expert_action(envs[0]), idle]), np.array([True, True]))
    assert group.grasped is not None and group.grasped.tolist() == [True, False]
    records = [
        {
            "task": j.task,
            "seed": j.seed,
            "success": False,
            "steps": 30,
            "terminated_by": "limit",
            "grasped_target": bool(g),
        }
        for j, g in zip(jobs, group.grasped, strict=True)
    ]
    s = summarize(records)
    assert (s["failures"], s["near_misses"], s["near_miss_share"]) == (2, 1, 0.5)
    del records[0]["grasped_target"]  # an env that does not report grasps: no claim
    assert "near_miss_share" not in summarize(records)


def test_mirrored_worker_pairs_opposite_noise():
    """``rollout.mirrored``: in every group the worker runs, rollout n + N/2 starts with the
    mirror image of rollout n's first chunk around the shared mu; unmirrored groups do not."""
    envs = [make_env(ENV) for _ in range(8)]
    task = envs[0].task_names[0]
    policy = _policy(envs[0].instruction(task))
    for mirrored in (True, False):
        worker = _worker(
            policy, envs=envs, group_size=4, max_policy_steps=1, execute_steps=1, mirrored=mirrored
        )
        worker.generator.manual_seed(0)
        starts = RealStartSampler([task], seed=1).sample(2)
        for group in worker.run_groups(starts, [0, 1]):
            a = group.rollout.actions[:, 0]  # (4, chunk, A): one start, the same first frame
            sums = a[:2] + a[2:]  # 2 mu where mirrored
            assert np.allclose(sums[0], sums[1], atol=1e-5) == mirrored


def test_progress_reward_is_best_progress_below_every_success():
    """``reward="progress"``: a failure's reward is PROGRESS_WEIGHT x the best task progress
    reached so far (it does not fall when the arm moves away again), a success's is 1.0, and
    the world's success test still separates them; an env without progress is refused."""
    from actors.starts import EvalJob
    from actors.worlds import PROGRESS_WEIGHT, RealGroup

    cfg = EnvConfig(image_size=32, layout="homes", max_steps=200)
    jobs = [EvalJob("place_red_on_blue", 7), EvalJob("place_red_on_blue", 7)]
    envs = [make_env(cfg) for _ in jobs]
    group = RealGroup(envs, jobs, reward="progress")
    group.reset()
    back = np.zeros(7)
    back[2] = 1.0  # the second env only rises, away from the block
    best, rewards, success = 0.0, [], False
    for _ in range(200):
        res = group.step(np.stack([expert_action(envs[0]), back]), np.array([not success, True]))
        if not success:
            best = max(best, group.progress[0])
            rewards.append(res.reward[0])
        success = bool(group.success[0])
    assert success and rewards[-1] == 1.0
    fails = np.array(rewards[:-1])
    assert 0.0 < fails.max() <= PROGRESS_WEIGHT and np.all(np.diff(fails) >= 0)
    assert res.reward[1] == PROGRESS_WEIGHT * group.progress[1] < 0.1
    world = RealWorld(lambda: None, reward="progress")
    assert world.succeeded(np.array([1.0, PROGRESS_WEIGHT, 0.0])).tolist() == [True, False, False]

    class Bare:  # an env whose step info has no "progress" (like LIBERO's)
        def __init__(self, env):
            self.env = env

        def reset(self, task, seed=None):
            return self.env.reset(task, seed=seed)

        def step(self, action):
            res = self.env.step(action)
            res.info.pop("progress")
            return res

    bare = RealGroup([Bare(envs[0])], jobs[:1], reward="progress")
    bare.reset()
    with pytest.raises(ValueError, match="real_reward: progress"):
        bare.step(back[None], np.array([True]))
    with pytest.raises(ValueError, match="real reward must be one of"):
        RealWorld(lambda: None, reward="dense")


def test_one_step_exploration_samples_one_shared_step_per_group():
    """``rollout.explore: one_step``: each group samples at one policy step k of its own; its
    rollouts act with the mean action elsewhere (identical until k in the deterministic env),
    only step k's actions are marked executed, and the recorded log-probs are the policy's;
    the learner scores step k alone and moves the policy."""
    from learner.config import LearnerConfig
    from learner.learner import Learner

    envs = [make_env(ENV) for _ in range(12)]
    task = envs[0].task_names[0]
    policy = _policy(envs[0].instruction(task))
    worker = _worker(
        policy, envs=envs, group_size=3, max_policy_steps=5, execute_steps=2, explore="one_step"
    )
    worker.generator.manual_seed(3)
    groups = worker.run_groups(RealStartSampler([task], seed=1).sample(4), [0, 1, 2, 3])
    ks = []
    for group in groups:
        res = group.rollout
        sampled = res.executed.any(axis=-1)  # (N, T)
        (k,) = np.unique(sampled.argmax(axis=1))  # one step, shared by the group
        assert sampled.sum(axis=1).tolist() == [1, 1, 1] and res.executed[:, k, :2].all()
        ks.append(int(k))
        for t in range(res.actions.shape[1]):  # identical rows before k, apart at k
            same = np.allclose(res.actions[0, t], res.actions[1, t])
            assert same == (t != k) or t > k
        obs = {
            "image": res.images[:, k],
            "proprio": res.proprio[:, k],
            "instruction": [group.instruction] * 3,
        }
        lp = policy.log_prob(obs, torch.from_numpy(res.actions[:, k]))
        np.testing.assert_allclose(
            lp.detach().numpy(), res.old_log_probs[:, k].sum(axis=(-2, -1)), rtol=1e-4, atol=1e-3
        )
    assert len(set(ks)) > 1  # groups draw their own step
    batch = to_trajectory_batch(groups, policy)
    batch.rewards[:] = torch.tensor([1.0, 0.0, 0.0] * 4)
    learner = Learner(policy, LearnerConfig(minibatch_size=12, micro_batch_size=12))
    before = {k: v.clone() for k, v in policy.trainable_state_dict().items()}
    stats = learner.update(batch)
    assert np.isfinite(stats["learner/loss"]) and stats["learner/kept_trajectories"] == 12
    moved = [k for k, v in policy.trainable_state_dict().items() if not torch.equal(v, before[k])]
    assert moved
    with pytest.raises(ValueError, match="rollout.explore must be one of"):
        RolloutConfig(explore="sometimes")
