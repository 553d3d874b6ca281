"""Success rate of a policy (or of the scripted expert) in a real environment, no Ray.

Episodes run side by side, one env each, so every policy call is one batch over the episodes
still running. Each call predicts a chunk; the first ``execute_steps`` actions (0 = the whole
chunk) run open loop before the next call, as OFT executes its chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from policy.policy import Policy


def _obs_batch(obs: list) -> dict[str, Any]:
    wrist = [o.wrist_image for o in obs]
    return {"image": np.stack([o.image for o in obs]),
            "wrist_image": None if wrist[0] is None else np.stack(wrist),
            "proprio": np.stack([o.proprio for o in obs]).astype(np.float32),
            "instruction": [o.instruction for o in obs]}


def evaluate_policy(policy: Policy, make_env: Callable[[], Any], *, tasks: list[str],
                    episodes_per_task: int, seed: int = 1000, execute_steps: int = 0,
                    deterministic: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run ``episodes_per_task`` episodes of each task and count successes.

    Args:
        policy: the policy (normalized actions; ``to_env_actions`` maps them to the env).
        make_env: builds one env (``envs.base.Env``).
        tasks: task names.
        episodes_per_task: episodes per task; episode i of a task uses seed ``seed + i``.
        execute_steps: actions of each chunk executed before re-planning (0 = all).
        deterministic: act with mu (True) or sample the Laplace policy.
    Returns:
        {"success_rate", "per_task": {task: rate}, "episodes", "mean_length"}.
    """
    jobs = [(t, seed + i) for t in tasks for i in range(episodes_per_task)]
    envs = [make_env() for _ in jobs]
    obs = [env.reset(t, seed=s) for env, (t, s) in zip(envs, jobs, strict=True)]
    running = list(range(len(jobs)))
    success = np.zeros(len(jobs), dtype=bool)
    length = np.zeros(len(jobs), dtype=int)
    k = execute_steps or policy.cfg.chunk
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=len(jobs), desc="eval", disable=not progress)
    while running:
        actions, *_ = policy.act(_obs_batch([obs[i] for i in running]),
                                 deterministic=deterministic, generator=gen)
        env_actions = policy.to_env_actions(actions)  # (B, chunk, A)
        still = []
        for row, i in enumerate(running):
            done = False
            for a in env_actions[row, :k]:
                res = envs[i].step(a)
                obs[i], length[i] = res.obs, length[i] + 1
                if res.success:
                    success[i] = True
                if res.done or res.success:
                    done = True
                    break
            if done:
                bar.update(1)
            else:
                still.append(i)
        running = still
    bar.close()
    per_task = {t: float(np.mean([success[j] for j, (tj, _) in enumerate(jobs) if tj == t]))
                for t in tasks}
    return {"success_rate": float(success.mean()), "per_task": per_task,
            "episodes": len(jobs), "mean_length": float(length.mean())}


def evaluate_expert(make_env: Callable[[], Any], expert: Callable[[Any], np.ndarray], *,
                    tasks: list[str], episodes_per_task: int, seed: int = 1000
                    ) -> dict[str, Any]:
    """The scripted expert's success rate on the same tasks and seeds as ``evaluate_policy``."""
    success, lengths, per_task = [], [], {}
    for t in tasks:
        wins = []
        for i in range(episodes_per_task):
            env = make_env()
            env.reset(t, seed=seed + i)
            n, ok = 0, False
            while True:
                res = env.step(expert(env))
                n += 1
                ok = ok or res.success
                if res.done or res.success:
                    break
            wins.append(ok)
            lengths.append(n)
        per_task[t] = float(np.mean(wins))
        success += wins
    return {"success_rate": float(np.mean(success)), "per_task": per_task,
            "episodes": len(success), "mean_length": float(np.mean(lengths))}
