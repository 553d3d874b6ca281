"""The experiment config: every component's config nested into one, loaded from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cluster.configlib import ConfigError, apply_overrides, from_dict, require, to_dict
from actors.config import CollectConfig
from envs.config import EnvConfig
from learner.config import LearnerConfig


@dataclass
class ExperimentConfig:
    """One experiment. Each section is the config dataclass of one component.

    Attributes:
        name: experiment name (used for run folders).
        seed: base seed; workers use seed + worker index.
        env: the real environment.
        collect: real-environment data collection.
        learner: LOOP updates (optimizer, PPO clip, RLOO groups).
    """

    name: str = "experiment"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)

    def __post_init__(self) -> None:
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment config from YAML (defaults where the file is silent).

    Args:
        path: YAML file; None gives the defaults.
        overrides: ``key.sub=value`` strings applied on top (values parsed as YAML).
    Raises:
        ConfigError: one message naming the key and the file.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    if overrides:
        apply_overrides(data, overrides)
        source = f"{source} (with --set overrides)"
    return from_dict(ExperimentConfig, data, source=source)


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the full resolved config as YAML (atomically)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(p)


__all__ = ["ExperimentConfig", "load_config", "dump_config", "ConfigError"]
