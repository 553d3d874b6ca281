"""Vision pretraining as a pipeline step (``rehearse pretrain`` and the demo's first stage):
labelled scenes of another layout, the towers trained to locate objects, a policy checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cluster.config import ExperimentConfig


def pretrain_policy(cfg: ExperimentConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Write a policy checkpoint to ``out`` whose vision towers learned to locate objects in
    ``cfg.pretrain.scenes`` scenes of the ``cfg.pretrain.layout`` layout (seeds from
    ``PRETRAIN_SEED_OFFSET``, never a task start); the rest of the policy is freshly built.

    Returns:
        the metrics (also in ``out/pretrain_metrics.json``): the held-out localization error
        per coordinate and the error of the layout's mean alone.
    """
    from actors.starts import PRETRAIN_SEED_OFFSET
    from core.fsutil import write_text_atomic
    from envs.factory import make_env
    from envs.tabletop_scenes import random_scenes
    from policy.checkpoint import build_policy, save_policy
    from policy.normalization import compute_statistics
    from policy.pretrain import pretrain_vision

    pc = cfg.pretrain
    if cfg.env.name != "tabletop":
        raise ValueError(f"pretrain generates tabletop scenes; env.name is {cfg.env.name!r}")
    scenes = random_scenes(
        dataclasses.replace(cfg.env, layout=pc.layout),
        pc.scenes,
        seed=PRETRAIN_SEED_OFFSET + cfg.seed,
        max_random_steps=pc.max_random_steps,
        progress=progress,
    )
    env = make_env(cfg.env)
    instructions = sorted({env.instruction(t) for t in env.task_names})
    env.close()
    # placeholder statistics of the random actions: the SFT replaces them with its demos'
    stats = compute_statistics(scenes.actions, scenes.proprio, num_trajectories=pc.scenes)
    policy = build_policy(cfg.policy, instructions=instructions, stats=stats)
    metrics: dict[str, Any] = pretrain_vision(
        policy, scenes.images, scenes.targets, pc, progress=progress
    )
    metrics["targets"] = scenes.names
    save_policy(policy, out)
    write_text_atomic(Path(out) / "pretrain_metrics.json", json.dumps(metrics, indent=1))
    return metrics


def mean_cm(errors: list[float]) -> float:
    """Mean of per-coordinate errors in meters, in centimeters."""
    return 100 * sum(errors) / len(errors)
