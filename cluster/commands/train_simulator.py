"""``rehearse train-simulator``: train the world model on expert + exploration episode stores."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

HELP = "train the world simulator (action-conditioned diffusion) on episode stores"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="episode store folders (expert and exploration episodes)",
    )
    p.add_argument(
        "--out", required=True, help="run folder (checkpoint/, metrics.jsonl, summary.json)"
    )
    p.add_argument(
        "--preset",
        choices=("tiny", "demo", "full"),
        default=None,
        help="start from a simulator preset; the config's 'simulator' section and "
        "--set simulator.* apply on top (default: demo)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override simulator.train.steps")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="override simulator.train.time_budget_s (seconds, 0 = none)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def simulator_section(config: str | None, overrides: list[str], preset: str | None):
    """The simulator config: the experiment's ``simulator`` section, or with ``preset`` that
    preset with the YAML's ``simulator`` section and ``--set simulator.*`` applied on top."""
    import yaml

    from cluster.config import load_config
    from core.configlib import ConfigError, apply_overrides, from_dict, to_dict
    from simulator_service.config import SimulatorConfig

    cfg = load_config(config, overrides)  # validates the whole experiment config
    if preset is None:
        return cfg.simulator
    data: dict[str, Any] = {}
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    apply_overrides(data, list(overrides))
    section = data.get("simulator") or {}
    if not isinstance(section, dict):
        raise ConfigError("the 'simulator' section of the config must be a mapping")
    source = f"{config or 'defaults'}" + (" (with --set overrides)" if overrides else "")
    base = to_dict(SimulatorConfig.preset(preset))
    return from_dict(SimulatorConfig, _merge(base, section), source=source, prefix="simulator")


def run(args: argparse.Namespace) -> int:
    from cluster.config import load_config
    from core.configlib import to_dict
    from simulator_service.train import train_world_model

    cfg = simulator_section(args.config, args.set, args.preset)
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    if changes:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))
    for d in args.data:
        if not Path(d).exists():
            raise FileNotFoundError(f"--data {d} does not exist")
    experiment = load_config(args.config, args.set)  # the top-level keys (loggers)
    summary = train_world_model(
        cfg,
        args.data,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        loggers=experiment.loggers,
        config={**to_dict(experiment), "simulator": to_dict(cfg)},
    )
    summary.pop("validation_episodes", None)
    print(json.dumps(summary))
    return 0
