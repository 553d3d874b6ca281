"""The ``rehearse`` command line: one subcommand per module in ``cluster/commands/``.

Every subcommand gets ``--config FILE`` and ``--set KEY=VALUE`` (repeatable). Errors a user can
fix (bad config, bad files, bad arguments) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

import cluster.commands
from core.configlib import ConfigError


def _command_modules() -> dict[str, str]:
    """Map subcommand names to module paths, discovered in ``cluster/commands/``."""
    names = {}
    for info in pkgutil.iter_modules(cluster.commands.__path__):
        if not info.name.startswith("_"):
            names[info.name.replace("_", "-")] = f"cluster.commands.{info.name}"
    return dict(sorted(names.items()))


def _load(module_path: str) -> ModuleType:
    return importlib.import_module(module_path)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the named command's module is imported (fast ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="rehearse",
        description="Post-train VLA policies with RL inside a learned video world model, on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, path in _command_modules().items():
        if command is not None and name != command:
            sub.add_parser(name, help="")
            continue
        mod = _load(path)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("--config", default=None, help="experiment YAML (defaults if omitted)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set learner.lr_lora=5e-5 (repeatable)",
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _command_modules()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in commands:
        command = None
    if command is None:
        # full help lists every command with its one-line help
        parser = argparse.ArgumentParser(prog="rehearse")
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, path in commands.items():
            sub.add_parser(name, help=_load(path).HELP)
        args = parser.parse_args(argv)
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        if os.environ.get("REHEARSE_TRACEBACK"):
            raise
        print(f"rehearse {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rehearse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
