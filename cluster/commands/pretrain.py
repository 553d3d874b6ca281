"""``rehearse pretrain``: vision pretraining; a policy checkpoint the few-demo SFT starts from."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

HELP = (
    "pretrain the policy's vision towers to locate objects in random scenes of another layout "
    "(tabletop); then: rehearse sft --set policy.checkpoint=OUT --set sft.freeze_vision=true"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="policy checkpoint folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--scenes", type=int, default=None, help="scenes (default: pretrain.scenes)")
    p.add_argument("--steps", type=int, default=None, help="steps (default: pretrain.steps)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from actors.starts import PRETRAIN_SEED_OFFSET
    from cluster.config import load_config
    from core.fsutil import refuse_existing, write_text_atomic
    from envs.factory import make_env
    from envs.tabletop_scenes import random_scenes
    from policy.checkpoint import build_policy, save_policy
    from policy.normalization import compute_statistics
    from policy.pretrain import pretrain_vision

    refuse_existing(args.out, overwrite=args.overwrite)
    cfg = load_config(args.config, args.set)
    changes = {k: v for k, v in (("scenes", args.scenes), ("steps", args.steps)) if v is not None}
    pc = dataclasses.replace(cfg.pretrain, **changes)  # re-validated
    if cfg.env.name != "tabletop":
        raise ValueError(
            f"rehearse pretrain generates tabletop scenes; env.name is {cfg.env.name!r}"
        )
    env_cfg = dataclasses.replace(cfg.env, layout=pc.layout)
    scenes = random_scenes(
        env_cfg,
        pc.scenes,
        seed=PRETRAIN_SEED_OFFSET + cfg.seed,
        max_random_steps=pc.max_random_steps,
        progress=not args.no_progress,
    )
    env = make_env(cfg.env)
    instructions = sorted({env.instruction(t) for t in env.task_names})
    env.close()
    stats = compute_statistics(scenes.actions, scenes.proprio, num_trajectories=pc.scenes)
    policy = build_policy(cfg.policy, instructions=instructions, stats=stats)
    metrics = pretrain_vision(
        policy, scenes.images, scenes.targets, pc, progress=not args.no_progress
    )
    metrics["targets"] = scenes.names
    save_policy(policy, args.out)
    write_text_atomic(Path(args.out) / "pretrain_metrics.json", json.dumps(metrics, indent=1))
    err, base = metrics["val_abs_error_m"], metrics["baseline_abs_error_m"]
    print(
        f"pretrained {args.out}: held-out localization error {100 * sum(err) / len(err):.2f} cm "
        f"(mean over {len(err)} coordinates; {100 * sum(base) / len(base):.2f} cm from the "
        f"layout alone)"
    )
    return 0
