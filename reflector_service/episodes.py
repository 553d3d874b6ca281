"""Labeled episodes for the reflector: frames and per-frame success labels from episode stores,
and full scoring of them (training validation, evaluation, eta calibration)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reflector_service.model import Reflector, hold_min, previous_frames


@dataclass
class LabeledEpisode:
    """Frames and labels of one episode. images: (T, H, W, 3) uint8; labels: (T,) bool.

    ``store`` names the episode store it came from: the validation split and the eta calibration
    treat each store as its own kind of episode (a noisy expert's near misses and a weak policy's
    easy failures are both "exploration", yet a reflector may stop one and not the other).
    """

    episode_id: str
    task_id: str
    instruction: str
    source: str
    images: torch.Tensor
    labels: np.ndarray
    store: str = ""

    @property
    def succeeded(self) -> bool:
        return bool(self.labels.any())


def load_labeled_episodes(
    paths: Sequence[str | Path], *, progress: bool = True
) -> list[LabeledEpisode]:
    """Every episode of the given episode stores (all sources).

    Raises:
        FileNotFoundError: a store does not exist.
        ValueError: stores with different image sizes, or no episodes at all.
    """
    from trajectories.store import EpisodeStore

    episodes: list[LabeledEpisode] = []
    size = None
    for p in paths:
        store = EpisodeStore(p)
        for eid in tqdm(store.episode_ids, desc=f"load {Path(p).name}", disable=not progress):
            ep = store.load_episode(eid)
            hw = ep.images.shape[1:3]
            if size is None:
                size = (hw, p)
            elif hw != size[0]:
                raise ValueError(
                    f"episode store {p} has {hw[0]}x{hw[1]} frames but {size[1]} has "
                    f"{size[0][0]}x{size[0][1]}; train on stores of one image size"
                )
            episodes.append(
                LabeledEpisode(
                    episode_id=ep.episode_id,
                    task_id=ep.task_id,
                    instruction=ep.instruction,
                    source=ep.source,
                    images=torch.from_numpy(np.ascontiguousarray(ep.images)),
                    labels=np.asarray(ep.success, dtype=bool),
                    store=str(p),
                )
            )
    if not episodes:
        raise ValueError(f"no episodes in {', '.join(map(str, paths))}")
    return episodes


@torch.no_grad()
def score_episodes(
    model: Reflector,
    episodes: Sequence[LabeledEpisode],
    *,
    batch: int = 8,
    progress: bool = False,
    hold: int | None = None,
) -> list[np.ndarray]:
    """R for every prefix of every episode (full scoring; episodes may differ in length).

    ``hold`` None applies the checkpoint's hold rule (R as rollouts see it); 1 gives the
    per-frame reward r_t = sigmoid(head(h_t)) itself.
    """
    hold = model.cfg.hold if hold is None else hold
    model.eval()
    out: list[np.ndarray] = []
    for lo in tqdm(range(0, len(episodes), batch), desc="score", disable=not progress):
        part = episodes[lo : lo + batch]
        toks = [model.frame_tokens(e.images, prev=previous_frames(e.images)) for e in part]
        logits = model.prefix_logits(toks, [e.instruction for e in part])
        out += [hold_min(torch.sigmoid(x).cpu(), hold).numpy() for x in logits]
    return out
