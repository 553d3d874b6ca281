"""``rehearse export``: a policy checkpoint as a folder that loads anywhere."""

from __future__ import annotations

import argparse

HELP = (
    "write a policy (SFT or post-trained) as a self-contained folder: every weight, the LLM as "
    "a stock transformers folder with its peft adapter; or OpenVLA-OFT's layout (--format oft)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy checkpoint folder (e.g. RUN/policy)")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument(
        "--format",
        choices=("rehearse", "oft"),
        default="rehearse",
        help="rehearse: loads with rehearse evaluate and with PeftModel.from_pretrained "
        "(OUT/llm + OUT/adapter); oft: OpenVLA-OFT's files, LoRA merged into the LLM",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from core.fsutil import refuse_existing
    from policy.checkpoint import export_policy

    refuse_existing(args.out, overwrite=args.overwrite)
    out = export_policy(args.policy, args.out, fmt=args.format)
    print(f"exported {args.policy} to {out} ({args.format} layout)")
    return 0
