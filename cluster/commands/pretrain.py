"""``rehearse pretrain``: vision pretraining; a policy checkpoint the few-demo SFT starts from."""

from __future__ import annotations

import argparse
import dataclasses

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
    from cluster.config import load_config
    from cluster.pretraining import mean_cm, pretrain_policy
    from core.fsutil import refuse_existing

    refuse_existing(args.out, overwrite=args.overwrite)
    cfg = load_config(args.config, args.set)
    changes = {k: v for k, v in (("scenes", args.scenes), ("steps", args.steps)) if v is not None}
    cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, **changes))
    m = pretrain_policy(cfg, args.out, progress=not args.no_progress)
    err, base = m["val_abs_error_m"], m["baseline_abs_error_m"]
    print(
        f"pretrained {args.out}: held-out localization error {mean_cm(err):.2f} cm (mean over "
        f"{len(err)} coordinates; {mean_cm(base):.2f} cm from the layout alone)"
    )
    return 0
