"""Real-environment episodes for the episode store: expert demos and Laplace-perturbed exploration.

Exploration follows World-Env: actions are sampled around a policy's mean, a ~ Laplace(mu, b),
so the world model also sees off-expert transitions and failures. Until a learned policy is
given, the scripted expert provides mu. Plain Python (no Ray): ``cluster/collect.py`` fans the
work out over Ray workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.base import Env, Observation
from trajectories.episode import Episode

ActionFn = Callable[[Env, Observation, np.random.Generator], np.ndarray]  # -> (7,)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to collect: which task, which seed, which source."""

    task: str
    seed: int
    source: str = "expert"


def expert_action_fn() -> ActionFn:
    """The scripted expert of the built-in tabletop env (reads the env's true state)."""
    from envs.tabletop_expert import expert_action

    def act(env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        return expert_action(env)

    return act


def laplace_perturbed(mean_fn: ActionFn, scale: float, *, gripper_scale: float | None = None) -> ActionFn:
    """Wrap an action function: a ~ Laplace(mu, b), clipped to [-1, 1].

    Args:
        mean_fn: gives mu (7,) in normalized action units.
        scale: Laplace scale b of the six arm dimensions.
        gripper_scale: scale of the gripper dimension (default: ``scale``).
    """
    if scale < 0:
        raise ValueError(f"exploration noise scale must be >= 0, got {scale}")
    b = np.full(7, scale, dtype=np.float64)
    b[6] = scale if gripper_scale is None else gripper_scale

    def act(env: Env, obs: Observation, rng: np.random.Generator) -> np.ndarray:
        mu = np.asarray(mean_fn(env, obs, rng), dtype=np.float64)
        return np.clip(mu + rng.laplace(0.0, 1.0, size=7) * b, -1.0, 1.0).astype(np.float32)

    return act


def run_episode(env: Env, spec: EpisodeSpec, action_fn: ActionFn, *, max_steps: int | None = None,
                steps_after_success: int = 0) -> Episode:
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
    images, wrists, proprio, actions, success = [obs.image], [obs.wrist_image], [obs.proprio], [], [False]
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
    """Metadata recorded with every Parquet file: what a consumer needs to interpret frames."""
    from cluster.configlib import to_dict

    meta = {
        "env": to_dict(env_cfg),
        "camera": env.camera.to_dict(),
        "image_size": int(env.camera.height),
        "action_dim": 7,
        "proprio_dim": 8,
    }
    meta["controller"] = env.limits.to_dict()
    return meta
