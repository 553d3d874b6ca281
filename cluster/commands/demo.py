"""``rehearse demo``: the whole pipeline on the embedded default (local Ray, tabletop, CPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "run the whole pipeline on the embedded default: data, SFT, world model, reflector, LOOP, "
    "evaluation"
)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: every stage in a few minutes, no learning claim",
    )
    p.add_argument("--run-dir", default=None, help="run folder (default: demo.run_dir)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from cluster.config import load_config
    from cluster.demo import QUICK_OVERRIDES, run_demo

    config = args.config or (str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None)
    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.set)
    cfg = load_config(config, overrides)
    if args.quick and args.run_dir is None:
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-quick")
    if args.run_dir:
        cfg = dataclasses.replace(cfg, demo=dataclasses.replace(cfg.demo, run_dir=args.run_dir))
    run_demo(cfg, progress=not args.no_progress)
    return 0
