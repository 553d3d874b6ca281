"""The one checkpoint contract of every trained thing (policy, world model, reflector).

A checkpoint is a folder, written under a temporary name and renamed into place
(``core.fsutil.staged_folder``), holding:

    config.yaml         the component's config dataclass (``write_config`` / ``read_config``)
    *.safetensors       weights (never pickle)
    state.json          optional: training step, metrics, calibration (``write_state`` /
                        ``read_state``)

Each package names its three functions after what it saves, with the same verbs:
``policy.checkpoint.save_policy / load_policy / read_config``,
``simulator_service.checkpoint.save_world_model / load_world_model / read_config``,
``reflector_service.checkpoint.save_reflector / load_reflector / read_config``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.configlib import ConfigError, from_dict, to_dict, yaml_problem

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
T = TypeVar("T")


def write_config(folder: str | Path, cfg: Any, **overrides: Any) -> None:
    """Write ``cfg`` (a config dataclass) as ``folder/config.yaml``, with ``overrides`` on top."""
    data = {**to_dict(cfg), **overrides}
    (Path(folder) / CONFIG_FILE).write_text(yaml.safe_dump(data, sort_keys=False))


def read_config(folder: str | Path, cls: type[T], *, what: str) -> T:
    """The config stored in a checkpoint folder.

    Args:
        folder: the checkpoint folder.
        cls: its config dataclass.
        what: the kind of checkpoint, for messages ("policy", "world model", "reflector").
    Raises:
        FileNotFoundError: no folder, or no ``config.yaml`` in it.
        ConfigError: the file is not valid YAML or does not fit ``cls``; names the file.
    """
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} checkpoint {folder} does not exist (expected a folder)")
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a {what} checkpoint: no {CONFIG_FILE}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return from_dict(cls, data, source=str(path))


def write_state(folder: str | Path, state: dict[str, Any]) -> None:
    """Write ``folder/state.json`` (JSON-able training state and metrics)."""
    (Path(folder) / STATE_FILE).write_text(json.dumps(state, indent=1, default=float))


def read_state(folder: str | Path, *, what: str, required: bool = False) -> dict[str, Any]:
    """``folder/state.json`` ({} when absent and not ``required``); errors name the file."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{what} checkpoint {folder} lacks {STATE_FILE}")
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} checkpoint {path} is not valid JSON: {e}") from None


__all__ = ["CONFIG_FILE", "STATE_FILE", "write_config", "read_config", "write_state", "read_state"]
