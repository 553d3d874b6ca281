"""``rehearse config``: the resolved config with each key's meaning, and the reference page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "show the resolved config with each key's meaning and default, or write docs/CONFIG.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=["show", "docs"],
        help="show: the config of --config and --set, every key with its meaning (and its "
        "default where it differs); docs: the reference page of every key (defaults)",
    )
    p.add_argument("--out", default=None, help="docs: write the page here (default: stdout)")
    p.add_argument(
        "--check",
        action="store_true",
        help="docs: exit 1 if --out differs from the generated page instead of writing it",
    )


def run(args: argparse.Namespace) -> int:
    from cluster.config import load_config, reference_markdown
    from core.configdoc import text
    from core.fsutil import write_text_atomic

    if args.action == "show":
        if args.out or args.check:
            raise ValueError("--out and --check belong to 'rehearse config docs'")
        print(text(load_config(args.config, args.set)))
        return 0
    page = reference_markdown()
    if args.out is None:
        if args.check:
            raise ValueError("--check needs --out (the page to compare)")
        sys.stdout.write(page)
        return 0
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != page:
            print(f"{out} is out of date: run rehearse config docs --out {out}")
            return 1
        print(f"{out} is current")
        return 0
    write_text_atomic(out, page)
    print(f"wrote {out}")
    return 0
