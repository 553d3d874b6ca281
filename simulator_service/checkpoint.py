"""World-model checkpoints: a folder of safetensors files, the config and a JSON state, written
atomically, in the contract of every checkpoint (``core/checkpoint.py``).

Layout: ``config.yaml`` (the full simulator config), ``model.safetensors`` (raw weights),
``ema.safetensors`` (EMA weights, used for sampling), ``optimizer.safetensors`` (AdamW moments;
param groups in ``state.json``), ``state.json`` (step, metrics). Modules whose weights come from
a local path in the config (VGGT, CLIP, VAE) are not stored; they reload from that path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.checkpoint import CONFIG_FILE, STATE_FILE, write_config, write_state
from core.checkpoint import read_config as read_checkpoint_config
from core.checkpoint import read_state as read_checkpoint_state
from core.fsutil import staged_folder
from core.weights import compare_state_dicts
from simulator_service.config import SimulatorConfig
from simulator_service.model import WorldModel

FILES = (CONFIG_FILE, "model.safetensors", "ema.safetensors", STATE_FILE)


def stored_state(model: WorldModel) -> dict[str, torch.Tensor]:
    """The model's state dict without modules that load from a configured local path."""
    skip = []
    if model.cfg.vggt.weights:
        skip.append("encoders.vggt.")
    if model.cfg.clip.weights:
        skip.append("encoders.clip.")
    if model.cfg.vae.weights:
        skip.append("vae.")
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
        if not any(k.startswith(s) for s in skip)
    }


def save_world_model(
    path: str | Path,
    *,
    model: WorldModel,
    ema: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (staging folder, then rename over the old one).

    Args:
        path: the checkpoint folder.
        model: the model (raw weights).
        ema: EMA state (same keys as ``stored_state(model)``).
        optimizer: saved for resuming when given.
        step: optimizer steps done.
        metrics: JSON-able numbers to keep beside the weights.
    """
    path = Path(path)
    with staged_folder(path) as tmp:
        save_file(stored_state(model), str(tmp / "model.safetensors"))
        save_file({k: v.cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        write_config(tmp, model.cfg)
        state: dict[str, Any] = {"step": int(step), "metrics": metrics or {}}
        if optimizer is not None:
            sd = optimizer.state_dict()
            tensors = {
                f"{i}.{name}": v.cpu().contiguous()
                for i, s in sd["state"].items()
                for name, v in s.items()
                if isinstance(v, torch.Tensor)
            }
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            state["optimizer_param_groups"] = sd["param_groups"]
        write_state(tmp, state)
    return path


def _check_files(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"simulator checkpoint {path} does not exist (expected a folder)")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"simulator checkpoint {path} lacks {', '.join(missing)}")


def read_state(path: str | Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder (step, metrics, optimizer groups); errors name
    the folder."""
    _check_files(Path(path))
    return read_checkpoint_state(path, what="simulator", required=True)


def read_config(path: str | Path) -> SimulatorConfig:
    """The simulator config a checkpoint was trained with."""
    _check_files(Path(path))
    return read_checkpoint_config(path, SimulatorConfig, what="simulator")


def check_compatible(expected: SimulatorConfig, found: SimulatorConfig, where: str) -> None:
    """Raise ValueError naming the architecture keys where two configs differ."""
    a, b = _flat(expected.model_dict()), _flat(found.model_dict())
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(
            f"{k} ({b.get(k)!r} in the checkpoint, {a.get(k)!r} configured)" for k in diff[:4]
        )
        raise ValueError(f"simulator checkpoint {where} was made with another config: {shown}")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_weights(model: WorldModel, file: Path) -> None:
    """Load a weights file into ``model``; ValueError naming missing, unexpected or misshapen
    keys."""
    try:
        state = load_file(str(file))
    except Exception as e:
        raise ValueError(f"{file} is not a readable safetensors file: {e}") from None
    m = compare_state_dicts(stored_state(model), state)
    if m.keys_differ:
        raise ValueError(
            f"{file} does not match the world model: missing {len(m.missing)} key(s) "
            f"{m.missing[:4]}, unexpected {len(m.unexpected)} {m.unexpected[:4]}"
        )
    if m.wrong_shapes:
        k, got, want = m.wrong_shapes[0]
        raise ValueError(f"{file}: {k} has shape {got}, the model expects {want}")
    model.load_state_dict(state, strict=False)


def load_world_model(
    path: str | Path, *, cfg: SimulatorConfig | None = None, ema: bool = True
) -> WorldModel:
    """Build the world model of a checkpoint and load its (EMA) weights.

    Args:
        path: checkpoint folder.
        cfg: when given, the checkpoint's architecture must match it (its weight paths and
            sampler settings are used); otherwise the checkpoint's own config is used.
        ema: load the EMA weights (default) rather than the raw ones.
    """
    path = Path(path)
    found = read_config(path)
    if cfg is not None:
        check_compatible(cfg, found, str(path))
    model = WorldModel(cfg or found)
    load_weights(model, path / ("ema.safetensors" if ema else "model.safetensors"))
    return model.eval()


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore AdamW state saved by ``save_world_model``."""
    path = Path(path)
    state = read_state(path)
    file = path / "optimizer.safetensors"
    if not file.is_file() or "optimizer_param_groups" not in state:
        raise FileNotFoundError(f"simulator checkpoint {path} has no optimizer state to resume")
    tensors = load_file(str(file))
    per: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        per.setdefault(int(i), {})[name] = v
    try:
        optimizer.load_state_dict({"state": per, "param_groups": state["optimizer_param_groups"]})
    except (ValueError, KeyError) as e:
        raise ValueError(f"optimizer state in {path} does not fit this model: {e}") from None


__all__ = [
    "save_world_model",
    "load_world_model",
    "load_weights",
    "load_optimizer",
    "read_config",
    "check_compatible",
    "read_state",
    "stored_state",
]
