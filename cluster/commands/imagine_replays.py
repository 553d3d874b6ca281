"""``rehearse imagine-replays``: real episodes replayed through a world model, written as stores."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "replay real episodes open loop through a trained world model and write the imagined frames, "
    "labeled with the real success, as episode stores (reflector training data)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulator", required=True, help="world model checkpoint folder")
    p.add_argument(
        "--data", nargs="+", required=True, help="real episode store folders (distinct names)"
    )
    p.add_argument("--out", required=True, help="folder for one imagined store per --data store")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="imagined steps per episode (default: the rollout horizon, "
        "rollout.max_policy_steps x rollout.execute_steps)",
    )
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from cluster.config import load_config
    from core.fsutil import output_folder
    from simulator_service.checkpoint import load_world_model
    from simulator_service.replay_stores import write_imagined_stores

    cfg = load_config(args.config, args.set)
    rc = cfg.rollout
    steps = rc.max_policy_steps * rc.execute_steps if args.max_steps is None else args.max_steps
    if steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {steps}")
    if not Path(args.simulator).is_dir():
        raise FileNotFoundError(f"--simulator {args.simulator} does not exist")
    for d in args.data:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"--data {d} does not exist")
    model = load_world_model(args.simulator)
    with output_folder(args.out, overwrite=args.overwrite) as out:
        write_imagined_stores(
            model,
            list(args.data),
            out,
            simulator=str(args.simulator),
            max_steps=steps,
            seed=cfg.seed if args.seed is None else args.seed,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    return 0
