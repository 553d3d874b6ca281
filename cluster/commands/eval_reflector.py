"""``rehearse eval-reflector``: metrics and a reward plot of a reflector on held-out episodes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = (
    "evaluate a reflector checkpoint on episode stores (AUC, accuracy, termination, whether R "
    "reads the instruction) with a plot"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="reflector checkpoint folder (e.g. OUT/best)")
    p.add_argument("--data", nargs="+", required=True, help="held-out episode store folders")
    p.add_argument(
        "--out",
        default=None,
        help="report folder for metrics.json and rewards.png (default: CKPT/eval)",
    )
    p.add_argument(
        "--eta", type=float, default=None, help="termination threshold (default: the checkpoint's)"
    )
    p.add_argument(
        "--plot-episodes",
        type=int,
        default=4,
        help="successful and failed episodes each in the plot (default 4)",
    )
    p.add_argument(
        "--val-split-of",
        default=None,
        metavar="SUMMARY_JSON",
        help="keep only the episodes of this training run's validation split "
        "(its summary.json); without it every episode of --data is scored",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from core.fsutil import write_text_atomic
    from reflector_service.checkpoint import load_reflector
    from reflector_service.episodes import load_labeled_episodes, score_episodes
    from reflector_service.metrics import plot_rewards, reflector_metrics
    from reflector_service.mismatch import mismatch_false_success
    from reflector_service.model import hold_min

    if args.eta is not None and not 0.0 < args.eta < 1.0:
        raise ValueError(f"--eta must be in (0, 1), got {args.eta}")
    if args.plot_episodes < 0:
        raise ValueError(f"--plot-episodes must be >= 0, got {args.plot_episodes}")
    model = load_reflector(args.ckpt)
    eta = model.cfg.eta if args.eta is None else args.eta
    episodes = load_labeled_episodes(args.data, progress=not args.no_progress)
    if args.val_split_of is not None:
        f = Path(args.val_split_of)
        if not f.is_file():
            raise FileNotFoundError(f"--val-split-of {f} does not exist")
        keep = set(json.loads(f.read_text()).get("val_episode_ids", []))
        episodes = [e for e in episodes if e.episode_id in keep]
        if not episodes:
            raise ValueError(f"none of the episodes in --data are in the validation split of {f}")
    frame = score_episodes(model, episodes, progress=not args.no_progress, hold=1)
    rewards = [hold_min(torch.from_numpy(r), model.cfg.hold).numpy() for r in frame]
    labels = [e.labels for e in episodes]
    metrics = reflector_metrics(rewards, labels, eta=eta, frame_rewards=frame)
    by_source = {}
    for src in sorted({e.source for e in episodes}):
        idx = [i for i, e in enumerate(episodes) if e.source == src]
        by_source[src] = reflector_metrics(
            [rewards[i] for i in idx],
            [labels[i] for i in idx],
            eta=eta,
            frame_rewards=[frame[i] for i in idx],
        )
    # does R read the instruction? successful expert episodes under every other task's instruction
    metrics["mismatch_false_success"] = mismatch_false_success(model, episodes, rewards, eta=eta)
    out = Path(args.out) if args.out else Path(args.ckpt) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "ckpt": str(args.ckpt),
        "data": list(args.data),
        "eta": eta,
        **metrics,
        "by_source": by_source,
    }
    curves = []
    for want in (True, False):
        picked = [i for i, e in enumerate(episodes) if e.succeeded == want][: args.plot_episodes]
        curves += [
            (
                f"{'success' if want else 'failed'} {episodes[i].task_id} ({episodes[i].source})",
                rewards[i],
                labels[i],
            )
            for i in picked
        ]
    if curves:
        report["plot"] = str(plot_rewards(out / "rewards.png", curves, eta=eta))
    write_text_atomic(out / "metrics.json", json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "by_source"}, indent=2))
    return 0
