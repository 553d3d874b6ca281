"""``rehearse evaluate``: success rate of a policy checkpoint in a real environment."""

from __future__ import annotations

import argparse
import json

HELP = (
    "success rate of a policy in a real env (ground-truth and/or reflector termination), "
    "JSON report"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint folder")
    p.add_argument("--env", choices=["tabletop", "libero"], default=None, help="default: env.name")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: all)")
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument(
        "--reflector",
        default=None,
        help="reflector checkpoint (reflector termination at R > eta: the checkpoint's eta "
        "unless rollout.eta is set)",
    )
    p.add_argument(
        "--termination",
        choices=["ground_truth", "reflector", "both"],
        default=None,
        help="default: both when --reflector is given, else ground_truth",
    )
    p.add_argument("--workers", type=int, default=0, help="Ray evaluation workers (0: in process)")
    p.add_argument("--videos", type=int, default=2, help="GIFs of this many episodes per mode")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: config seed)")
    p.add_argument("--out", default=None, help="folder for report.json and videos")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from cluster.config import load_config
    from cluster.evaluate import evaluate_policy

    cfg = load_config(args.config, args.set)
    env_cfg = cfg.env if args.env is None else dataclasses.replace(cfg.env, name=args.env)
    if args.episodes_per_task < 1:
        raise ValueError("--episodes-per-task must be >= 1")
    term = args.termination or ("both" if args.reflector else "ground_truth")
    modes = ("ground_truth", "reflector") if term == "both" else (term,)
    if "ground_truth" in modes:  # beside the mean action, the sampled policy LOOP optimizes
        modes = ("ground_truth", "sampled", *modes[1:])
    report = evaluate_policy(
        args.policy,
        env_cfg,
        tasks=None
        if args.tasks is None
        else [t.strip() for t in args.tasks.split(",") if t.strip()],
        episodes_per_task=args.episodes_per_task,
        seed=cfg.seed if args.seed is None else args.seed,
        workers=args.workers,
        restarts=cfg.cluster.worker_restarts,
        reflector_path=args.reflector,
        modes=modes,
        eta=cfg.rollout.eta,
        execute_steps=cfg.rollout.execute_steps,
        max_steps=cfg.rollout.eval_max_steps,
        videos=args.videos if args.out else 0,
        out=args.out,
        progress=not args.no_progress,
    )
    for mode in modes:
        s = report[mode]
        near = (
            f"; {s['near_misses']} of {s['failures']} failures held the task's object"
            if "near_misses" in s
            else ""
        )
        print(
            f"{mode}: success {s['success_rate']:.3f} "
            f"(95% CI {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f}, {s['episodes']} episodes){near}"
        )
    print(json.dumps({m: report[m]["per_task"] for m in modes}))
    return 0
