"""``rehearse collect``: record real-environment episodes into a new episode store."""

from __future__ import annotations

import argparse
import json

HELP = (
    "collect expert or Laplace-perturbed exploration episodes in a real env into an episode store"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        choices=["tabletop", "libero"],
        default=None,
        help="environment (default: the config's env.name)",
    )
    p.add_argument(
        "--source",
        choices=["expert", "exploration", "near_miss"],
        required=True,
        help="expert: scripted expert; exploration: a ~ Laplace(expert, b); near_miss: the "
        "expert holding the block just short of success (reflector hard negatives)",
    )
    p.add_argument(
        "--episodes-per-task",
        type=int,
        default=None,
        help="episodes per task (default: collect.episodes_per_task)",
    )
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    p.add_argument(
        "--policy",
        default=None,
        help="policy checkpoint: --source exploration samples from its Laplace(mu, b)",
    )
    p.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        help="Laplace scale b for exploration (default: collect.exploration_scale)",
    )
    p.add_argument(
        "--steps-after-success",
        type=int,
        default=None,
        help="keep recording this many steps after the first success "
        "(default: collect.steps_after_success)",
    )
    p.add_argument("--seed", type=int, default=None, help="base seed (default: the config's seed)")
    p.add_argument("--workers", type=int, default=0, help="Ray workers (0: in this process)")
    p.add_argument("--out", required=True, help="output folder (a new episode store)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from cluster.collect import check_sources, collect, episode_specs
    from cluster.config import load_config
    from envs.factory import task_names

    cfg = load_config(args.config, args.set)
    env_cfg = cfg.env if args.env is None else dataclasses.replace(cfg.env, name=args.env)
    collect_cfg = cfg.collect
    if args.noise_scale is not None:
        collect_cfg = dataclasses.replace(collect_cfg, exploration_scale=args.noise_scale)
    if args.steps_after_success is not None:
        collect_cfg = dataclasses.replace(collect_cfg, steps_after_success=args.steps_after_success)
    n = collect_cfg.episodes_per_task if args.episodes_per_task is None else args.episodes_per_task
    if n < 1:
        raise ValueError(f"--episodes-per-task must be >= 1, got {n}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    check_sources(env_cfg.name, args.source, args.policy)
    tasks = (
        task_names(env_cfg)
        if args.tasks is None
        else [t.strip() for t in args.tasks.split(",") if t.strip()]
    )
    specs = episode_specs(
        tasks, n, seed=cfg.seed if args.seed is None else args.seed, source=args.source
    )
    summary = collect(
        env_cfg,
        collect_cfg,
        specs,
        args.out,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        policy_path=args.policy,
    )
    print(
        f"collected {summary['episodes']} {args.source} episodes ({summary['steps']} steps) "
        f"into {summary['out']}; success rate {summary['success_rate']:.3f}"
    )
    print(json.dumps(summary["per_task"], indent=None))
    return 0
