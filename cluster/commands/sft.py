"""``rehearse sft``: fine-tune the policy on few expert demos, then measure its success."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

HELP = "supervised fine-tuning of the policy on N expert demos per task (L1, then scale head)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="episode store with expert demos")
    parser.add_argument(
        "--demos-per-task",
        type=int,
        default=5,
        help="expert demos per task to train on (default 5)",
    )
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists and is not empty"
    )
    parser.add_argument("--steps", type=int, default=None, help="L1 steps (default: sft.steps)")
    parser.add_argument(
        "--scale-steps", type=int, default=None, help="scale-head steps (default: sft.scale_steps)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="batch size (default: sft.batch_size)"
    )
    parser.add_argument(
        "--eval-episodes",
        type=int,
        default=0,
        help="after training, episodes per task in the real env for the policy "
        "and the expert (tabletop only; 0 = skip)",
    )
    parser.add_argument(
        "--execute-steps",
        type=int,
        default=0,
        help="actions of each chunk executed before re-planning (0 = all)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from cluster.config import load_config
    from core.configlib import to_dict
    from core.fsutil import refuse_existing
    from policy.sft import run_sft
    from trajectories.store import EpisodeStore

    if args.demos_per_task < 1:
        raise ValueError(f"--demos-per-task must be >= 1, got {args.demos_per_task}")
    if args.eval_episodes < 0 or args.execute_steps < 0:
        raise ValueError("--eval-episodes and --execute-steps must be >= 0")
    refuse_existing(args.out, overwrite=args.overwrite)
    cfg = load_config(args.config, args.set)
    policy_cfg, sft_cfg = cfg.policy, cfg.sft
    overrides = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("scale_steps", args.scale_steps),
            ("batch_size", args.batch_size),
        )
        if v is not None
    }
    sft_cfg = dataclasses.replace(sft_cfg, **overrides)  # re-validated in __post_init__
    store = EpisodeStore(args.data)
    policy, metrics = run_sft(
        store,
        policy_cfg=policy_cfg,
        sft_cfg=sft_cfg,
        demos_per_task=args.demos_per_task,
        out=args.out,
        device=args.device,
        progress=not args.no_progress,
        loggers=cfg.loggers,
        config=to_dict(cfg),
    )
    summary = {
        "checkpoint": str(args.out),
        "train_episodes": metrics["train_episodes"],
        "final_l1": metrics["l1"][-1],
        "val_l1": metrics["val_l1"][-1:],
        "val_nll": metrics.get("val_nll"),
    }
    if args.eval_episodes:
        summary["eval"] = _evaluate(
            policy,
            store,
            episodes=args.eval_episodes,
            execute_steps=args.execute_steps,
            progress=not args.no_progress,
        )
        path = Path(args.out) / "sft_eval.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary["eval"], indent=2))
        os.replace(tmp, path)
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(policy, store, *, episodes: int, execute_steps: int, progress: bool) -> dict:
    """Success of the policy and of the scripted expert on the store's tasks, same seeds."""
    from actors.evaluation import evaluate_expert, evaluate_jobs, summarize
    from cluster.backends import EnvFactory
    from cluster.evaluate import eval_jobs
    from core.configlib import from_dict
    from envs.config import EnvConfig

    if "env_config" not in store.meta:
        raise ValueError(
            f"--eval-episodes needs the recording env in the store's metadata "
            f"({store.path} has none)"
        )
    env_cfg = from_dict(EnvConfig, store.meta["env_config"], source=f"{store.path} metadata")
    if env_cfg.name != "tabletop":
        raise ValueError(
            f"--eval-episodes supports the tabletop env (its scripted expert), the "
            f"store was recorded in {env_cfg.name!r}; use rehearse evaluate"
        )
    tasks = sorted({e["task_id"] for e in store.episode_info})
    jobs = eval_jobs(tasks, episodes, seed=0)
    make_env = EnvFactory(env_cfg)
    policy.eval()
    pol = summarize(evaluate_jobs(policy, make_env, jobs, execute_steps=execute_steps))
    exp = summarize(evaluate_expert(make_env, jobs))
    return {"policy": pol, "expert": exp}
