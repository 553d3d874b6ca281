"""Run checkpoints: trainable weights, learner state, driver state; written atomically.

Layout: ``run_dir/checkpoints/iter_000010/{trainable.safetensors, learner_state.pt,
driver_state.json}`` and ``run_dir/checkpoints/latest`` naming the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_run_checkpoint(
    run_dir: str | Path, iteration: int, learner_state: dict[str, Any], driver_state: dict[str, Any]
) -> Path:
    """Write one checkpoint folder (staged, then renamed) and point ``latest`` at it."""
    from safetensors.torch import save_file

    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter_{iteration:06d}"
    stage = root / f".{final.name}.{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        save_file(learner_state["trainable"], str(stage / "trainable.safetensors"))
        torch.save(learner_state["learner"], stage / "learner_state.pt")
        (stage / "driver_state.json").write_text(
            json.dumps({"iteration": iteration, **driver_state}, indent=1)
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    tmp = root / f".latest.{uuid.uuid4().hex[:8]}"
    tmp.write_text(final.name)
    os.replace(tmp, root / "latest")
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load_run_checkpoint(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(learner_state, driver_state) of a checkpoint folder; clear errors for missing files."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("trainable.safetensors", "learner_state.pt", "driver_state.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint {folder} is incomplete: {name} is missing")
    try:
        trainable = load_file(str(folder / "trainable.safetensors"))
    except Exception as e:  # truncated or foreign
        raise ValueError(
            f"checkpoint {folder}: trainable.safetensors is not readable: {_first_line(e)}"
        ) from None
    try:  # weights_only: a file that would run code on load is refused, never executed
        learner = torch.load(folder / "learner_state.pt", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"checkpoint {folder}: learner_state.pt is refused (not plain tensors and numbers, "
            f"or not readable): {_first_line(e)}"
        ) from None
    learner_state = {"trainable": trainable, "learner": learner}
    try:
        driver_state = json.loads((folder / "driver_state.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {folder}: driver_state.json is unreadable: {e}") from None
    return learner_state, driver_state


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
