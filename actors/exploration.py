"""Real-environment episodes for the episode store: expert demos and Laplace-perturbed exploration.

Exploration follows World-Env: actions are sampled around a policy's mean, a ~ Laplace(mu, b),
so the world model also sees off-expert transitions and failures. Until a learned policy is
given, the scripted expert provides mu. Plain Python (no Ray): ``cluster/collect.py`` fans the
work out over Ray workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.base import Env, Observation, observation_batch
from trajectories.episode import Episode


class ActionSource:
    """Chooses actions in a real env: ``begin()`` at each episode start, then one call per step
    ``(env, obs, rng) -> (7,) action``."""

    def begin(self) -> None:
        """Forget anything carried over from the previous episode."""

    def __call__(self, env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to collect: which task, which seed, which source."""

    task: str
    seed: int
    source: str = "expert"


class ScriptedExpert(ActionSource):
    """The scripted expert of the built-in tabletop env (reads the env's true state)."""

    def __call__(self, env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        from envs.tabletop_expert import expert_action

        return expert_action(env)


class NearMissExpert(ActionSource):
    """The scripted expert until it holds the task's block, then one step short of success for
    the rest of the episode: the block held still over its target, ``h`` above where it would
    rest (place / stack), or ``h`` below the lift height (lift), with ``h`` ~ U(low, high) per
    episode. Every frame is a failure that looks nearly done: hard negatives for the reflector
    (the perturbed expert's failures are of this kind, a block carried over the plate and never
    released, and a reflector that has seen too few of them ends such episodes as successes).
    Tabletop only (it reads the env's true state). Measured with the demo's 10-minute reflector
    (issue 5, session 7): 5 per task cut early termination on held-out perturbed failures from
    36% to 9%, but lowered the held-out AUC (0.99 -> 0.91 at exploration noise 0.6), so the
    demo does not collect them.
    """

    def __init__(self, low: float = 0.015, high: float = 0.10):
        if not 0 < low <= high:
            raise ValueError(f"near-miss heights need 0 < low <= high, got {low}, {high}")
        self.low, self.high = low, high
        self._h: float | None = None

    def begin(self) -> None:
        self._h = None

    def __call__(self, env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        from envs.tabletop_expert import XY_TOL, expert_action, move_to
        from envs.tabletop_tasks import BLOCK_SIZE, LIFT_HEIGHT, OBJECTS, TASKS

        if self._h is None:
            self._h = float(rng.uniform(self.low, self.high))
        task = TASKS[env.task]
        if env.holding != task.block:
            return expert_action(env)
        pos = env.object_positions()
        ee = env.proprio[:3]
        offset = pos[task.block] - ee  # the carried block's center from the EE
        half = BLOCK_SIZE / 2
        if task.kind == "lift":
            target = np.array([ee[0], ee[1], LIFT_HEIGHT - self._h + half - offset[2]])
        else:
            goal = pos[task.target]
            goal_xy = goal[:2] - offset[:2]
            if np.max(np.abs(goal_xy - ee[:2])) > XY_TOL:
                return expert_action(env)  # still carrying toward the target
            rest_z = goal[2] + OBJECTS[task.target].half[2] + half - offset[2]
            target = np.array([goal_xy[0], goal_xy[1], rest_z + self._h])
        return move_to(env, target, 1.0)  # keep holding


class LaplacePerturbed(ActionSource):
    """a ~ Laplace(mu, b) around another source's action mu, clipped to [-1, 1].

    Args:
        mean: gives mu (7,) in normalized action units.
        scale: Laplace scale b of the six arm dimensions.
        gripper_scale: scale of the gripper dimension (default: ``scale``).
    """

    def __init__(self, mean: ActionSource, scale: float, *, gripper_scale: float | None = None):
        if scale < 0 or (gripper_scale is not None and gripper_scale < 0):
            raise ValueError(f"exploration noise scales must be >= 0, got {scale}, {gripper_scale}")
        self.mean = mean
        self.b = np.full(7, scale, dtype=np.float64)
        self.b[6] = scale if gripper_scale is None else gripper_scale

    def begin(self) -> None:
        self.mean.begin()

    def __call__(self, env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        mu = np.asarray(self.mean(env, obs, rng), dtype=np.float64)
        return np.clip(mu + rng.laplace(0.0, 1.0, size=7) * self.b, -1.0, 1.0).astype(np.float32)


class PolicySampler(ActionSource):
    """Self-exploration with a learned policy: chunks sampled from its own Laplace(mu, b).

    The policy acts every ``execute_steps`` steps (None: a whole chunk) and the sampled chunk runs
    open loop, as in imagined rollouts; the sampling noise comes from the episode's ``rng``.
    """

    def __init__(self, policy: Any, *, execute_steps: int | None = None):
        self.policy = policy
        self.execute_steps = execute_steps
        self._queue: list[np.ndarray] = []

    def begin(self) -> None:
        self._queue.clear()

    def __call__(self, env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        import torch

        if not self._queue:
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            actions, *_ = self.policy.act(observation_batch([obs]), generator=gen)
            chunk = self.policy.to_env_actions(actions)[0]  # (chunk, 7)
            self._queue.extend(chunk[: self.execute_steps or len(chunk)])
        return self._queue.pop(0)


def run_episode(
    env: Env,
    spec: EpisodeSpec,
    action_fn: ActionSource,
    *,
    max_steps: int | None = None,
    steps_after_success: int = 0,
) -> Episode:
    """Roll out one episode in a real env and record it in the step schema.

    Args:
        env: the environment.
        spec: task, seed (env reset and action noise) and source label.
        action_fn: (env, obs, rng) -> (7,) action.
        max_steps: step limit (default: the env's).
        steps_after_success: keep acting this many steps after the first success (the env
            keeps stepping past its own done), so frames after success carry their labels:
            what a reflector must learn to keep recognizing. 0 ends at the first success.
    """
    rng = np.random.default_rng([spec.seed, 7919])
    obs = env.reset(spec.task, seed=spec.seed)
    action_fn.begin()
    images, wrists, proprio, actions, success = (
        [obs.image],
        [obs.wrist_image],
        [obs.proprio],
        [],
        [False],
    )
    limit = max_steps or env.max_steps
    first_success = None
    for t in range(limit):
        a = np.asarray(action_fn(env, obs, rng), dtype=np.float32)
        obs, ok, _done, _info = env.step(a)
        actions.append(a)
        images.append(obs.image)
        wrists.append(obs.wrist_image)
        proprio.append(obs.proprio)
        success.append(bool(ok))
        if ok and first_success is None:
            first_success = t
        if first_success is not None and t - first_success >= steps_after_success:
            break
    actions.append(np.zeros(7, dtype=np.float32))
    has_wrist = all(w is not None for w in wrists)
    return Episode(
        episode_id=f"{spec.source}-{spec.task}-{spec.seed}",
        task_id=spec.task,
        instruction=env.instruction(spec.task),
        images=np.stack(images),
        wrist_images=np.stack(wrists) if has_wrist else None,
        proprio=np.stack(proprio),
        actions=np.stack(actions),
        success=np.array(success),
        source=spec.source,
    )


def store_meta(env: Env, env_cfg: Any) -> dict[str, Any]:
    """Metadata recorded with every Parquet file: the env's own description (name, image size,
    camera, controller limits, tasks) plus the config that built it."""
    from core.configlib import to_dict

    return {**env.meta(), "env_config": to_dict(env_cfg), "action_dim": 7, "proprio_dim": 8}
