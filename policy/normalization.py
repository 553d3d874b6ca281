"""Action and proprio normalization with OpenVLA-OFT's q01/q99 bounds.

Model space: the masked action dimensions (pose deltas) and all proprio dimensions map to
[-1, 1] by a_n = 2 (a - q01) / (q99 - q01) - 1, clipped; unnormalize is
a = 0.5 (a_n + 1)(q99 - q01) + q01. The gripper is not normalized: as in OFT's LIBERO pipeline
the env command (-1 open, +1 close) becomes g = 1 - clip(g_env, 0, 1) (1 open, 0 closed) for
training, and the model output is binarized back for the env: g_env = -sign(2 g - 1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATS_FILE = "dataset_statistics.json"


def compute_statistics(
    actions: np.ndarray, proprio: np.ndarray, *, num_trajectories: int
) -> dict[str, Any]:
    """Statistics of one dataset in OFT's layout.

    Args:
        actions: (N, A) env actions (terminal rows already removed).
        proprio: (N, P) proprio states.
        num_trajectories: number of episodes they came from.
    Returns:
        {"action": {mean, std, max, min, q01, q99, mask}, "proprio": {...}, "num_transitions",
        "num_trajectories"}; the mask is True for every dimension but the last (gripper).
    """

    def stats(x: np.ndarray) -> dict[str, list]:
        x = x.astype(np.float64)
        return {
            "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(),
            "max": x.max(0).tolist(),
            "min": x.min(0).tolist(),
            "q01": np.quantile(x, 0.01, axis=0).tolist(),
            "q99": np.quantile(x, 0.99, axis=0).tolist(),
        }

    if len(actions) == 0:
        raise ValueError("cannot compute action statistics from an empty dataset")
    action = stats(actions)
    action["mask"] = [True] * (actions.shape[1] - 1) + [False]
    return {
        "action": action,
        "proprio": stats(proprio),
        "num_transitions": int(len(actions)),
        "num_trajectories": int(num_trajectories),
    }


def statistics_from_store(
    store, *, dataset_name: str, episode_ids: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """OFT-layout statistics ``{dataset_name: ...}`` of the episodes of an ``EpisodeStore``."""
    ids = store.episode_ids if episode_ids is None else episode_ids
    acts, props = [], []
    for eid in ids:
        ep = store.load_episode(eid)
        acts.append(ep.actions[:-1])  # the terminal row's action is not an action
        props.append(ep.proprio[:-1])
    return {
        dataset_name: compute_statistics(
            np.concatenate(acts), np.concatenate(props), num_trajectories=len(ids)
        )
    }


def save_statistics(stats: dict[str, Any], folder: str | Path) -> Path:
    """Write ``dataset_statistics.json`` atomically into ``folder``."""
    path = Path(folder) / STATS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2))
    os.replace(tmp, path)
    return path


def load_statistics(folder_or_file: str | Path) -> dict[str, Any]:
    """Read ``dataset_statistics.json`` (a folder holding it, or the file itself)."""
    p = Path(folder_or_file)
    path = p / STATS_FILE if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(
            f"missing action statistics {path}: run SFT (which writes it) or copy the "
            f"checkpoint's {STATS_FILE}"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} must map dataset names to statistics")
    return data


class Normalizer:
    """Normalize env actions/proprio for the model and unnormalize model actions for the env.

    Args:
        stats: OFT-layout statistics of ONE dataset (``{"action": ..., "proprio": ...}``).
    """

    def __init__(self, stats: dict[str, Any], *, name: str = "dataset"):
        try:
            a, p = stats["action"], stats["proprio"]
            self.a_low = torch.tensor(a["q01"], dtype=torch.float32)
            self.a_high = torch.tensor(a["q99"], dtype=torch.float32)
            self.a_mask = torch.tensor(a.get("mask", [True] * (len(a["q01"]) - 1) + [False]))
            self.p_low = torch.tensor(p["q01"], dtype=torch.float32)
            self.p_high = torch.tensor(p["q99"], dtype=torch.float32)
        except (KeyError, TypeError) as e:
            raise ValueError(f"statistics of {name!r} lack action/proprio q01/q99 ({e})") from None
        self.stats = stats

    @classmethod
    def from_file(cls, folder_or_file: str | Path, *, key: str = "") -> Normalizer:
        """Load the statistics of dataset ``key`` ("" = the only one in the file)."""
        data = load_statistics(folder_or_file)
        if not key:
            if len(data) != 1:
                raise ValueError(
                    f"{folder_or_file} holds statistics of {sorted(data)}; set "
                    "policy.unnorm_key to one of them"
                )
            key = next(iter(data))
        if key not in data:
            raise ValueError(f"no statistics {key!r} in {folder_or_file}; it has {sorted(data)}")
        return cls(data[key], name=key)

    @property
    def action_dim(self) -> int:
        return int(self.a_low.numel())

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., A) env actions -> model space (pose in [-1, 1], gripper 1 open / 0 closed)."""
        low, high = self.a_low.to(actions), self.a_high.to(actions)
        scaled = (2 * (actions - low) / (high - low).clamp_min(1e-8) - 1).clamp(-1, 1)
        out = torch.where(self.a_mask.to(actions.device), scaled, actions)
        return torch.cat([out[..., :-1], 1 - actions[..., -1:].clamp(0, 1)], dim=-1)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., A) model actions -> env actions (gripper binarized to -1 open / +1 close)."""
        low, high = self.a_low.to(actions), self.a_high.to(actions)
        a = actions.clamp(-1, 1)
        raw = 0.5 * (a + 1) * (high - low) + low
        out = torch.where(self.a_mask.to(actions.device), raw, actions)
        g = 2 * actions[..., -1:] - 1
        g_env = -torch.where(g >= 0, torch.ones_like(g), -torch.ones_like(g))
        return torch.cat([out[..., :-1], g_env], dim=-1)

    def normalize_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        """(..., P) proprio -> [-1, 1] by its q01/q99."""
        low, high = self.p_low.to(proprio), self.p_high.to(proprio)
        return (2 * (proprio - low) / (high - low).clamp_min(1e-8) - 1).clamp(-1, 1)
