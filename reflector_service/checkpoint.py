"""Reflector checkpoints: a folder with the model config and safetensors weights, in the
contract of every checkpoint (``core/checkpoint.py``).

Layout::

    config.yaml            ReflectorModelConfig (eta and hold: the termination rule)
    trainable.safetensors  projector, summary embedding, head (and pixel adapter)
    frozen.safetensors     only when a tower has random weights (no path to reload it from)
    state.json             training step, metrics, calibration, data (informational)

Towers loaded from local paths are not copied: the config names their folders. A folder is
written under a temporary name and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.checkpoint import read_config as read_checkpoint_config
from core.checkpoint import read_state as read_checkpoint_state
from core.checkpoint import write_config, write_state
from core.fsutil import staged_folder
from core.weights import compare_state_dicts
from reflector_service.config import ReflectorModelConfig
from reflector_service.model import Reflector

TRAINABLE_FILE = "trainable.safetensors"
FROZEN_FILE = "frozen.safetensors"


def _frozen_random_state(model: Reflector) -> dict[str, torch.Tensor]:
    prefixes = tuple(
        p for p, rnd in (("vision.", model.vision_random), ("llm.", model.llm_random)) if rnd
    )
    if not prefixes:
        return {}
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def save_reflector(
    model: Reflector, path: str | Path, *, state: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s checkpoint folder atomically (replacing an existing one).

    Args:
        model: the reflector.
        path: the checkpoint folder.
        state: JSON-able information stored in state.json.
    Returns:
        The folder written.
    """
    path = Path(path)
    with staged_folder(path) as tmp:
        write_config(tmp, model.cfg)
        trainable = {
            n: p.detach().cpu().contiguous() for n, p in model.trainable_named_parameters()
        }
        save_file(trainable, str(tmp / TRAINABLE_FILE))
        frozen = _frozen_random_state(model)
        if frozen:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in frozen.items()},
                str(tmp / FROZEN_FILE),
            )
        write_state(tmp, state or {})
    return path


def read_config(path: str | Path) -> ReflectorModelConfig:
    """The model config stored in a checkpoint folder."""
    return read_checkpoint_config(path, ReflectorModelConfig, what="reflector")


def _load_weights(file: Path, what: str) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"reflector checkpoint is missing its {what} weights ({file})")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"reflector {what} weights {file} cannot be read: {e}") from None


def _copy_into(
    model: Reflector, state: dict[str, torch.Tensor], names: list[str], file: Path
) -> None:
    own = model.state_dict(keep_vars=True)
    m = compare_state_dicts({n: own[n] for n in names}, state)
    if m.keys_differ:
        raise ValueError(
            f"{file} does not match the model built from its config: missing {m.missing[:5]}, "
            f"unexpected {m.unexpected[:5]}"
        )
    if m.wrong_shapes:
        n, got, want = m.wrong_shapes[0]
        raise ValueError(f"{file}: {n} has shape {got}, the model expects {want}")
    with torch.no_grad():
        for n in names:
            own[n].copy_(state[n])


def load_reflector(path: str | Path, *, device: str | torch.device = "cpu") -> Reflector:
    """Rebuild a reflector from its checkpoint folder (towers from their paths or the folder).

    Raises:
        FileNotFoundError: missing folder, config or weights (also the towers' folders).
        ValueError: weights that do not match the config.
    """
    path = Path(path)
    cfg = read_config(path)
    model = Reflector(cfg)
    trainable = _load_weights(path / TRAINABLE_FILE, "trainable")
    _copy_into(
        model, trainable, [n for n, _ in model.trainable_named_parameters()], path / TRAINABLE_FILE
    )
    frozen_names = list(_frozen_random_state(model))
    if frozen_names:
        frozen = _load_weights(path / FROZEN_FILE, "frozen (random tower)")
        _copy_into(model, frozen, frozen_names, path / FROZEN_FILE)
    return model.to(device).eval()


def termination_eta(eta: float | None, reflector: str | None) -> float:
    """The threshold that ends an episode: ``eta`` when set, else the eta stored in the
    reflector checkpoint (chosen on validation by training), else the model config's default
    (``reflector`` None or "fake").

    Args:
        eta: a configured threshold in (0, 1), or None for "the checkpoint's".
        reflector: reflector checkpoint folder, "fake", or None.
    """
    if eta is not None:
        return eta
    if reflector is None or reflector == "fake":
        return ReflectorModelConfig().eta
    return read_config(reflector).eta


def read_state(path: str | Path) -> dict[str, Any]:
    """state.json of a checkpoint folder ({} when absent)."""
    return read_checkpoint_state(path, what="reflector")
