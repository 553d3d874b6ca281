"""``rehearse post-train``: LOOP post-training on a Ray cluster (or a local one)."""

from __future__ import annotations

import argparse
import json

HELP = (
    "post-train a policy with LOOP in the world simulator (or, --world real, in the real env with "
    "its ground-truth reward), on Ray (local or --address / RAY_ADDRESS)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume", action="store_true", help="continue from the run's latest checkpoint"
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: cluster.address, "
        "then RAY_ADDRESS, else a local Ray started in-process)",
    )
    p.add_argument("--policy", default=None, help="SFT policy checkpoint (post_train.policy)")
    p.add_argument("--simulator", default=None, help="world simulator checkpoint or 'fake'")
    p.add_argument("--reflector", default=None, help="reflector checkpoint or 'fake'")
    p.add_argument(
        "--data", action="append", default=None, help="episode store(s) of initial states"
    )
    p.add_argument("--iterations", type=int, default=None, help="LOOP iterations")
    p.add_argument(
        "--world",
        choices=("imagined", "real"),
        default=None,
        help="where rollouts happen (post_train.world): the world simulator and reflector "
        "(imagined), or the real env with its success as the reward (real, the oracle; it "
        "also turns off co-evolution, which refines a world model, unless --set "
        "post_train.coevolve_every says otherwise)",
    )
    p.add_argument("--run-dir", default=None, help="run folder (post_train.run_dir)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides of the command line: ``--set`` first, then the flags (JSON values
    are YAML), validated together. ``--world real`` turns co-evolution off where the config
    (the demo's, say) schedules it for imagination and no ``--set`` names it."""
    sets = list(args.set or [])
    if args.world == "real" and not any(
        s.split("=", 1)[0].strip() == "post_train.coevolve_every" for s in sets
    ):
        sets.append("post_train.coevolve_every=0")
    flags = {
        "policy": args.policy,
        "simulator": args.simulator,
        "reflector": args.reflector,
        "data": args.data,
        "iterations": args.iterations,
        "run_dir": args.run_dir,
        "world": args.world,
    }
    return [*sets, *(f"post_train.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None)]


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from cluster.config import load_config
    from cluster.driver import post_train

    cfg = load_config(args.config, overrides(args))
    if args.address:
        cfg = dataclasses.replace(
            cfg, cluster=dataclasses.replace(cfg.cluster, address=args.address)
        )
    summary = post_train(cfg, resume=args.resume, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "last"}, indent=1))
    return 0
