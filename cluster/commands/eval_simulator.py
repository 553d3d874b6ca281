"""``rehearse eval-simulator``: open-loop fidelity of a trained world model on held-out episodes."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

HELP = "replay held-out episodes open loop through a trained world simulator; fidelity per horizon"


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (RUN/checkpoint)")
    p.add_argument("--data", nargs="+", required=True, help="held-out episode store folders")
    p.add_argument("--out", required=True, help="folder for fidelity.json and rollout.gif")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--horizons", type=_ints, default=(1, 5, 10, 20), help="e.g. 1,5,10,20")
    p.add_argument("--starts", type=_ints, default=(0, 10), help="start steps, e.g. 0,10")
    p.add_argument("--max-episodes", type=int, default=32, help="episodes replayed")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: config)")
    p.add_argument("--sampler", choices=("ddim", "dpmsolver++"), default=None)
    p.add_argument(
        "--residual-deadzone",
        type=float,
        default=None,
        help="drop predicted pixel changes below this (in [0, 1] units) when sampling",
    )
    p.add_argument(
        "--recorded-proprio",
        action="store_true",
        help="draw action maps from recorded states instead of kinematics",
    )
    p.add_argument(
        "--reflector",
        default=None,
        help="reflector checkpoint: also replay whole episodes (up to --reflector-steps) and "
        "report how often R > eta on the real and on the imagined frames, for successes and "
        "failures",
    )
    p.add_argument(
        "--reflector-steps",
        type=int,
        default=48,
        help="imagined steps per episode for --reflector (the RL rollout horizon)",
    )
    p.add_argument(
        "--eta",
        type=float,
        default=None,
        help="threshold for --reflector (default: the checkpoint's own)",
    )
    p.add_argument("--raw-weights", action="store_true", help="use raw instead of EMA weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _reward_agreement(model, args: argparse.Namespace) -> dict:
    from reflector_service.checkpoint import load_reflector, termination_eta
    from simulator_service.evaluate import reward_agreement

    if args.reflector_steps < 1:
        raise ValueError("--reflector-steps must be >= 1")
    if args.eta is not None and not 0.0 < args.eta < 1.0:
        raise ValueError(f"--eta must be in (0, 1), got {args.eta}")
    reflector = load_reflector(args.reflector)
    eta = termination_eta(args.eta, args.reflector)

    def score(frames, instruction: str):
        return reflector.score(frames[None], [instruction])[0].numpy()

    out = reward_agreement(
        model,
        args.data,
        score,
        eta=eta,
        max_episodes=args.max_episodes,
        max_steps=args.reflector_steps,
        seed=args.seed,
        progress=not args.no_progress,
    )
    out["checkpoint"] = str(args.reflector)
    return out


def run(args: argparse.Namespace) -> int:
    from core.fsutil import output_folder
    from simulator_service.checkpoint import load_world_model, read_config
    from simulator_service.evaluate import evaluate_open_loop, write_report

    if min(args.horizons) < 1:
        raise ValueError("--horizons must be >= 1")
    if args.max_episodes < 1:
        raise ValueError("--max-episodes must be >= 1")
    for d in args.data:
        if not Path(d).exists():
            raise FileNotFoundError(f"--data {d} does not exist")
    cfg = read_config(args.checkpoint)
    if args.sampler is not None and args.sampler != cfg.sampler:
        if cfg.train.timesteps == "sampler":
            raise ValueError(
                f"--sampler {args.sampler}: {args.checkpoint} trained only at the timesteps of "
                f"{cfg.sampler} (simulator.train.timesteps = 'sampler')"
            )
        cfg = dataclasses.replace(cfg, sampler=args.sampler)
    if args.residual_deadzone is not None:
        cfg = dataclasses.replace(cfg, residual_deadzone=args.residual_deadzone)
    model = load_world_model(args.checkpoint, cfg=cfg, ema=not args.raw_weights)
    with output_folder(args.out, overwrite=args.overwrite) as out:
        result = evaluate_open_loop(
            model,
            args.data,
            horizons=args.horizons,
            starts=args.starts,
            max_episodes=args.max_episodes,
            steps=args.steps,
            use_kinematics=not args.recorded_proprio,
            seed=args.seed,
            video=out / "rollout.gif",
            progress=not args.no_progress,
        )
        result["checkpoint"] = str(args.checkpoint)
        if args.reflector is not None:
            result["reflector"] = _reward_agreement(model, args)
        write_report(out / "fidelity.json", result)
    print(json.dumps(result))
    return 0
