"""Success rate of a policy in a real environment, with or without reflector termination.

Episodes run side by side (one env each) so every policy call is one batch over the episodes
still running. Without a reflector an episode ends at the env's own success or step limit
(ground-truth termination). With one, the env's success signal is hidden from the loop: the
episode ends when the reflector's R exceeds eta (or at the step limit) and counts as a success
only if the task is achieved at that moment (World-Env's setting without ground-truth
termination). Plain Python: ``actors/eval_worker.py`` runs it in Ray workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs.base import observation_batch


@dataclass(frozen=True)
class EvalJob:
    task: str
    seed: int


class EnvPool:
    """Real envs built once and reused across evaluation calls (a LIBERO scene takes tens of
    seconds to build; resetting one to another task or init state is much cheaper)."""

    def __init__(self, make_env: Callable[[], Any]):
        self.make_env = make_env
        self.envs: list[Any] = []

    def take(self, n: int) -> list[Any]:
        while len(self.envs) < n:
            self.envs.append(self.make_env())
        return self.envs[:n]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def evaluate_jobs(
    policy: Any,
    make_env: Callable[[], Any] | EnvPool,
    jobs: list[EvalJob],
    *,
    execute_steps: int = 0,
    max_steps: int = 0,
    deterministic: bool = True,
    reflector: Any = None,
    eta: float = 0.5,
    keep_frames: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run one episode per job; returns one record per job (same order).

    Args:
        policy: ``act`` / ``to_env_actions`` (see ``policy.policy.Policy``).
        make_env: builds one env, or a pool of envs to reuse.
        execute_steps: actions of each chunk executed before acting again (0: the whole chunk).
        max_steps: step limit (0: the env's).
        reflector: a keyed reflector backend (``reset``, ``score_batch``, ``release``) for
            reflector termination, or None for ground-truth termination.
        keep_frames: keep the frames of the first ``keep_frames`` episodes (videos).
    Returns:
        records: task, seed, success, steps, terminated_by ("success", "reflector", "limit"),
        and "frames" (S, H, W, 3) for the kept episodes.
    """
    pool = make_env if isinstance(make_env, EnvPool) else EnvPool(make_env)
    envs = pool.take(len(jobs))
    obs = [env.reset(j.task, seed=j.seed) for env, j in zip(envs, jobs, strict=True)]
    limit = max_steps or envs[0].max_steps
    n = len(jobs)
    steps = np.zeros(n, dtype=int)
    success = np.zeros(n, dtype=bool)
    how = [""] * n
    frames: list[list[np.ndarray]] = [[o.image] for o in obs[:keep_frames]]
    key = "eval"
    if reflector is not None:
        reflector.reset(
            key, [o.instruction for o in obs], np.stack([o.image for o in obs])[:, None]
        )
    running = list(range(n))
    gen = torch.Generator().manual_seed(seed)
    chunk_k = execute_steps or policy.cfg.chunk
    try:
        while running:
            actions, *_ = policy.act(
                observation_batch([obs[i] for i in running]),
                deterministic=deterministic,
                generator=gen,
            )
            env_actions = policy.to_env_actions(actions)  # (B, chunk, A)
            active = {i: True for i in running}
            for k in range(min(chunk_k, env_actions.shape[1])):
                live = [i for i in running if active[i]]
                if not live:
                    break
                for row, i in enumerate(running):
                    if not active[i]:
                        continue
                    res = envs[i].step(env_actions[row, k])
                    obs[i] = res.obs
                    steps[i] += 1
                    success[i] = res.success  # success *now*
                    if i < keep_frames:
                        frames[i].append(res.obs.image)
                    if reflector is None and res.success:
                        active[i], how[i] = False, "success"
                    elif steps[i] >= limit:
                        active[i], how[i] = False, "limit"
                if reflector is not None:
                    # every env of the group is scored each step (finished ones with their
                    # last frame)
                    r = reflector.score_batch([(key, np.stack([o.image for o in obs]))])[0]
                    for i in live:
                        if active[i] and r[i] > eta:
                            active[i], how[i] = False, "reflector"
            running = [i for i in running if active[i]]
    finally:
        if reflector is not None:
            reflector.release(key)
    records = []
    for i, j in enumerate(jobs):
        rec = {
            "task": j.task,
            "seed": j.seed,
            "success": bool(success[i]),
            "steps": int(steps[i]),
            "terminated_by": how[i],
        }
        if i < keep_frames:
            rec["frames"] = np.stack(frames[i])
        records.append(rec)
    return records


def evaluate_expert(
    make_env: Callable[[], Any], jobs: list[EvalJob], *, max_steps: int = 0
) -> list[dict[str, Any]]:
    """The scripted expert (tabletop) on the same jobs: records like ``evaluate_jobs``'s."""
    from actors.exploration import EpisodeSpec, ScriptedExpert, run_episode

    env = make_env()
    expert = ScriptedExpert()
    records = []
    for j in jobs:
        ep = run_episode(env, EpisodeSpec(j.task, j.seed), expert, max_steps=max_steps or None)
        records.append(
            {
                "task": j.task,
                "seed": j.seed,
                "success": bool(ep.success[-1]),
                "steps": ep.num_steps,
                "terminated_by": "success" if ep.success[-1] else "limit",
            }
        )
    env.close()
    return records


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved near 0 and 1)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate with its 95% interval, per task, and how episodes ended."""
    n = len(records)
    wins = sum(r["success"] for r in records)
    tasks = sorted({r["task"] for r in records})
    per_task = {t: float(np.mean([r["success"] for r in records if r["task"] == t])) for t in tasks}
    ends: dict[str, int] = {}
    for r in records:
        ends[r["terminated_by"]] = ends.get(r["terminated_by"], 0) + 1
    lo, hi = wilson_interval(wins, n)
    return {
        "episodes": n,
        "successes": int(wins),
        "success_rate": wins / max(1, n),
        "ci95": [lo, hi],
        "per_task": per_task,
        "ended_by": ends,
        "outcomes": [[r["task"], r["seed"], bool(r["success"])] for r in records],
        "mean_steps": float(np.mean([r["steps"] for r in records])) if n else 0.0,
    }
