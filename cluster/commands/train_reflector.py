"""``rehearse train-reflector``: BCE-train the reflector's projector and head on episode stores."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

HELP = "train the reflector (VLM reward model) on per-frame success labels of episode stores"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="episode store folders (expert, exploration, failed episodes together)",
    )
    p.add_argument(
        "--calibrate-on",
        nargs="+",
        default=[],
        metavar="DIR",
        help="episode stores used only to choose the termination rule (hold, eta) "
        "with the validation split, never trained on (other seeds than --data)",
    )
    p.add_argument(
        "--out", required=True, help="output folder (checkpoints best/ and last/, summary.json)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists and is not empty"
    )
    p.add_argument("--max-steps", type=int, default=None, help="override reflector.train.max_steps")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="override reflector.train.time_budget_s (seconds, 0 = none)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import shutil

    from cluster.config import load_config
    from core.configlib import to_dict
    from core.fsutil import refuse_existing
    from reflector_service.train import train_reflector

    experiment = load_config(args.config, args.set)
    cfg = experiment.reflector
    train_cfg = cfg.train
    if args.max_steps is not None:
        train_cfg = dataclasses.replace(train_cfg, max_steps=args.max_steps)
    if args.time_budget is not None:
        train_cfg = dataclasses.replace(train_cfg, time_budget_s=args.time_budget)
    for flag, dirs in (("--data", args.data), ("--calibrate-on", args.calibrate_on)):
        for d in dirs:
            if not Path(d).exists():
                raise FileNotFoundError(f"{flag} {d} does not exist")
    overlap = {str(Path(d).resolve()) for d in args.data} & {
        str(Path(d).resolve()) for d in args.calibrate_on
    }
    if overlap:
        raise ValueError(
            f"--calibrate-on must not repeat --data (calibrating on training episodes "
            f"would hide early terminations): {sorted(overlap)}"
        )
    refuse_existing(args.out, overwrite=args.overwrite)
    if Path(args.out).exists():  # --overwrite: no checkpoint of the old run stays beside the new
        shutil.rmtree(args.out)
    summary = train_reflector(
        cfg.model,
        train_cfg,
        args.data,
        args.out,
        progress=not args.no_progress,
        calibration_data=args.calibrate_on,
        loggers=experiment.loggers,
        config=to_dict(experiment),
    )
    best = summary["best"] or {}
    cal = summary.get("eta_calibration") or {}
    print(
        f"trained {summary['steps']} steps in {summary['seconds']:.0f} s; best {best.get('on')} "
        f"auc {best.get('roc_auc')} at step {best.get('step')}; termination hold {cal.get('hold')} "
        f"eta {cal.get('eta')}; checkpoints in {args.out}"
    )
    return 0
