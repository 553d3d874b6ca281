"""RLOO groups rolled out in the real environment, rewarded by its ground-truth success.

The oracle beside imagination (``post_train.world: real``): the same policy sampling, horizon,
groups and LOOP update as imagined rollouts, but the frames come from the real env and the
reward is the env's own success (1 at success, which also ends the episode, else 0 at the
horizon), RIPT-VLA's setting. Running LOOP both ways on the same SFT policy separates what the
world model and the reflector cost from what the RL update itself can do. Plain Python (no
Ray): ``actors/rollout_worker.RealRolloutWorker`` runs it in Ray workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from actors.evaluation import EvalJob
from actors.rollout import GroupResult, act_in_chunks
from envs.base import observation_batch
from trajectories.initial_states import InitialState

# seeds of real-env training starts: apart from data collection (< 10^6 past the base seed) and
# evaluation (actors.eval_worker.EVAL_SEED_OFFSET = 10^7), so the evaluation never sees a start
# the policy was trained on
REAL_START_SEED_OFFSET = 20_000_000


class RealStartSampler:
    """Deterministic stream of real-env starts (task, seed), one fresh seed per draw.

    Args:
        tasks: the tasks to draw from (uniformly).
        seed: base seed; ``cursor`` counts draws (saved in checkpoints like the initial-state
            sampler's), so a resumed run continues the same stream.
    """

    def __init__(self, tasks: list[str], *, seed: int = 0):
        if not tasks:
            raise ValueError("real-env starts need at least one task")
        self.tasks = list(tasks)
        self.seed = seed
        self.cursor = 0

    def sample(self, n: int) -> list[EvalJob]:
        starts = []
        for _ in range(n):
            k = int(np.random.default_rng([self.seed, self.cursor]).integers(len(self.tasks)))
            starts.append(EvalJob(self.tasks[k], REAL_START_SEED_OFFSET + self.seed + self.cursor))
            self.cursor += 1
        return starts


def real_rollout_group(
    policy: Any,
    envs: list[Any],
    start: EvalJob,
    *,
    group_id: int,
    max_policy_steps: int,
    execute_steps: int,
    policy_version: int,
    generator: torch.Generator | None = None,
    keep_frames: bool = False,
    deterministic: bool = False,
) -> GroupResult:
    """Run ``len(envs)`` real-env rollouts from one start (every env reset to the same seed).

    Args:
        policy: ``act`` / ``to_env_actions``, see ``policy.policy.Policy``.
        envs: one real env per rollout of the group (N of them).
        start: the task and the seed every env resets to.
        max_policy_steps, execute_steps: the horizon, as in imagined rollouts.
    Returns:
        the group in the imagined rollouts' layout (``actors.rollout.GroupResult``): rewards
        (N,) 1.0 for success within the horizon else 0.0, ``terminated`` = success.
    """
    n = len(envs)
    obs = [env.reset(start.task, seed=start.seed) for env in envs]
    first = obs[0]
    init = InitialState(
        episode_id=f"real-{start.task}-{start.seed}",
        start=0,
        task_id=start.task,
        instruction=first.instruction,
        frames=first.image[None],
        proprio=np.asarray(first.proprio, dtype=np.float32),
    )
    success = np.zeros(n, dtype=bool)
    video = [first.image[None].repeat(n, axis=0)] if keep_frames else []

    def advance(env_a: np.ndarray, active: np.ndarray) -> np.ndarray:
        for i in np.nonzero(active)[0]:  # ended rollouts stay as they ended
            res = envs[i].step(env_a[i])
            obs[i] = res.obs
            success[i] = res.success
        if keep_frames:
            video.append(np.stack([o.image for o in obs]))
        return success.copy()

    rec = act_in_chunks(
        policy,
        lambda: observation_batch(obs),
        advance,
        n=n,
        max_policy_steps=max_policy_steps,
        execute_steps=execute_steps,
        deterministic=deterministic,
        generator=generator,
    )
    return GroupResult(
        key=f"real-{group_id}",
        group_id=group_id,
        policy_version=policy_version,
        init=init,
        images=rec.images,
        proprio=rec.proprio,
        actions=rec.actions,
        old_log_probs=rec.old_log_probs,
        done=rec.done,
        rewards=success.astype(np.float32),
        terminated=success.copy(),
        env_steps=rec.env_steps,
        frames=np.stack(video, axis=1) if keep_frames else None,
    )
