"""PyTorch dataset over windows of consecutive steps of one or more episode stores.

A window of length W starting at row t holds rows t .. t+W-1 of one episode: what the world
model (history frames -> next frame) and the policy (observation -> action chunk) train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from trajectories.episode import Episode
from trajectories.store import EpisodeStore

FIELDS = ("images", "wrist_images", "proprio", "actions", "success", "done")


@dataclass(frozen=True)
class WindowIndex:
    store: int
    episode_id: str
    start: int


class WindowDataset(Dataset):
    """Windows of ``window`` consecutive rows from every episode of the given stores.

    Each item is a dict of tensors with a leading window axis: ``images`` (W, H, W_img, 3)
    uint8, ``proprio`` (W, 8), ``actions`` (W, 7), ``success`` (W,), ``done`` (W,), optional
    ``wrist_images``, plus ``task_id``, ``instruction``, ``source`` strings and ``start``.

    Args:
        stores: one store or several (mixed expert / exploration data).
        window: rows per window (>= 1).
        stride: distance between window starts.
        pad_end: also start windows near the end, repeating the terminal row (so every row
            is a window start); ``valid`` (W,) marks real rows.
        sources: keep only episodes of these sources.
        fields: which array fields to return.
    """

    def __init__(
        self,
        stores: EpisodeStore | Sequence[EpisodeStore],
        window: int,
        *,
        stride: int = 1,
        pad_end: bool = False,
        sources: Sequence[str] | None = None,
        episode_ids: Sequence[str] | None = None,
        fields: Sequence[str] = ("images", "proprio", "actions", "success", "done"),
    ):
        if window < 1 or stride < 1:
            raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; valid: {FIELDS}")
        self.stores = [stores] if isinstance(stores, EpisodeStore) else list(stores)
        self.window, self.fields, self.pad_end = window, tuple(fields), pad_end
        keep = set(episode_ids) if episode_ids is not None else None
        self.index: list[WindowIndex] = []
        for si, store in enumerate(self.stores):
            for info in store.episode_info:
                if sources is not None and info["source"] not in sources:
                    continue
                if keep is not None and info["episode_id"] not in keep:
                    continue
                rows = info["length"] + 1
                last = rows - 1 if pad_end else rows - window
                for t in range(0, last + 1, stride):
                    self.index.append(WindowIndex(si, info["episode_id"], t))

    def __len__(self) -> int:
        return len(self.index)

    def episode(self, i: int) -> Episode:
        w = self.index[i]
        return self.stores[w.store].load_episode(w.episode_id)

    def __getitem__(self, i: int) -> dict:
        w = self.index[i]
        ep = self.stores[w.store].load_episode(w.episode_id)
        rows = np.arange(w.start, w.start + self.window)
        valid = rows < len(ep.images)
        rows = np.minimum(rows, len(ep.images) - 1)
        item: dict = {
            "task_id": ep.task_id,
            "instruction": ep.instruction,
            "source": ep.source,
            "start": w.start,
            "valid": torch.from_numpy(valid),
        }
        for f in self.fields:
            arr = getattr(ep, f)
            if arr is None:
                raise ValueError(f"episode {ep.episode_id!r} has no {f}")
            item[f] = torch.from_numpy(np.ascontiguousarray(arr[rows]))
        return item
