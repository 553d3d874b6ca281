"""Success rate of a policy in a real environment, with or without reflector termination.

Episodes run side by side (one env each) through the one acting loop
(``actors.rollout.act_in_chunks`` over a ``actors.worlds.RealGroup``), so every policy call is
one batch over the episodes still running. Without a reflector an episode ends at the env's own
success or step limit (ground-truth termination). With one, the env's success signal is hidden
from the loop: the episode ends when the reflector's R exceeds eta (or at the step limit) and
counts as a success only if the task is achieved at that moment (World-Env's setting without
ground-truth termination). Plain Python: ``actors/eval_worker.py`` runs it in Ray workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from actors.clients import LocalReflectorClient
from actors.rollout import act_in_chunks
from actors.starts import EvalJob
from actors.worlds import EnvPool, RealGroup


def evaluate_jobs(
    policy: Any,
    make_env: Callable[[], Any] | EnvPool,
    jobs: list[EvalJob],
    *,
    execute_steps: int | None = None,
    max_steps: int | None = None,
    deterministic: bool = True,
    reflector: Any = None,
    eta: float = 0.5,
    keep_frames: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run one episode per job side by side (one env each); one record per job, same order.

    Args:
        policy: ``act`` / ``to_env_actions`` (see ``policy.policy.Policy``).
        make_env: builds one env, or a pool of envs to reuse.
        execute_steps: actions of each chunk executed before acting again (None: the whole
            chunk).
        max_steps: step limit (None: the env's).
        deterministic: act with the mean action (True) or sample the policy's Laplace.
        reflector: a keyed reflector backend (``reset``, ``score_batch``, ``release``) for
            reflector termination, or None for ground-truth termination.
        keep_frames: keep the frames of the first ``keep_frames`` episodes (videos).
        seed: seed of the sampling noise (``deterministic=False``).
    Returns:
        records: task, seed, success, steps, terminated_by ("success", "reflector", "limit"),
        grasped_target (the task's object held at some step; where the env reports it), and
        "frames" (S, H, W, 3) for the kept episodes.
    """
    pool = make_env if isinstance(make_env, EnvPool) else EnvPool(make_env)
    envs = pool.take(len(jobs))
    limit = max_steps or envs[0].max_steps
    client = LocalReflectorClient(reflector) if reflector is not None else None
    group = RealGroup(envs, jobs, limit=limit, reflector=client, eta=eta, key="eval")
    k = execute_steps or policy.cfg.chunk
    rollout = act_in_chunks(
        policy,
        group,
        max_policy_steps=-(-limit // min(k, policy.cfg.chunk)),
        execute_steps=k,
        deterministic=deterministic,
        generator=torch.Generator().manual_seed(seed),
        keep_frames=keep_frames > 0,
    )
    records = []
    for i, j in enumerate(jobs):
        rec = {
            "task": j.task,
            "seed": j.seed,
            "success": bool(group.success[i]),
            "steps": int(rollout.steps[i]),
            "terminated_by": group.ended_by[i],
        }
        if group.grasped is not None:  # the env says whether the task's object was held
            rec["grasped_target"] = bool(group.grasped[i])
        if i < keep_frames:
            rec["frames"] = rollout.frames[i, : rollout.steps[i] + 1]
        records.append(rec)
    return records


def evaluate_expert(
    make_env: Callable[[], Any], jobs: list[EvalJob], *, max_steps: int | None = None
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
    """Success rate with its 95% interval, per task, and how episodes ended; where the env
    reports grasps, ``near_miss_share``: the share of failed episodes that held the task's own
    object at some step (a near miss, not the wrong task or no grasp at all)."""
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
        **_near_misses(records),
    }


def _near_misses(records: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [r for r in records if not r["success"]]
    if not failed or any("grasped_target" not in r for r in records):
        return {}
    near = sum(r["grasped_target"] for r in failed)
    return {
        "failures": len(failed),
        "near_misses": int(near),
        "near_miss_share": near / len(failed),
    }
