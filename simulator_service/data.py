"""Training transitions for the world model, held in memory: (history, action map, next frame).

Episodes come from one or more episode stores. For step t of an episode the history is the K
frames picked from o_0..o_t by the memory bank's rule, the action map draws the recorded next
proprio s_{t+1}, and the target is o_{t+1}. Expert and exploration episodes are kept in separate
pools so that batches mix them at a configured ratio (World-Env's ablation: the exploration data
drives most of the gain). Imagined episodes are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.base import Camera
from simulator_service.action_map import render_action_maps
from simulator_service.config import SimulatorConfig
from simulator_service.memory_bank import select_indices

EXPLORATION_SOURCES = ("exploration", "policy")


@dataclass
class EpisodeArrays:
    """One episode prepared for training. frames (T+1, 3, H, W) uint8; action_maps (T, 3, H, W)
    float16 (map of s_{t+1} at row t); proprio (T+1, 8); source; episode_id."""

    episode_id: str
    source: str
    frames: torch.Tensor
    action_maps: torch.Tensor
    proprio: np.ndarray


def load_episodes(
    dirs: list[str | Path], cfg: SimulatorConfig, *, progress: bool = True
) -> tuple[list[EpisodeArrays], Camera]:
    """Read every episode of the stores ``dirs`` and render its action maps.

    Args:
        dirs: episode store folders (all recorded with the same camera and image size).
        cfg: simulator config (image size, action map style).
        progress: show a progress bar.
    Returns:
        (episodes, camera)
    Raises:
        FileNotFoundError / ValueError: a missing store, no camera in its metadata, frames of
            another size than ``cfg.image_size``, imagined episodes, or no usable episode.
    """
    from tqdm import tqdm

    from trajectories.store import EpisodeStore

    if not dirs:
        raise ValueError("no episode store given (--data DIR ...)")
    camera: Camera | None = None
    out: list[EpisodeArrays] = []
    for d in dirs:
        store = EpisodeStore(d)
        cam = store.camera()
        if camera is not None and cam.to_dict() != camera.to_dict():
            raise ValueError(
                f"episode store {d} uses another camera than {dirs[0]}; train on "
                "stores of one environment setup"
            )
        camera = cam
        size = store.meta.get("image_size")
        if size is not None and int(size) != cfg.image_size:
            raise ValueError(
                f"episode store {d} has {size}x{size} frames, the simulator config "
                f"expects image_size {cfg.image_size}"
            )
        for info in tqdm(
            store.episode_info, desc=f"load {Path(d).name}", leave=False, disable=not progress
        ):
            if info["source"] == "imagined":
                raise ValueError(
                    f"episode store {d} holds imagined episode "
                    f"{info['episode_id']!r}; train the simulator on real data only"
                )
            ep = store.load_episode(info["episode_id"])
            if ep.num_steps < 1:
                continue
            if ep.images.shape[1:3] != (cfg.image_size, cfg.image_size):
                raise ValueError(
                    f"episode {ep.episode_id!r} in {d} has frames of shape "
                    f"{ep.images.shape[1:3]}, expected {cfg.image_size}x{cfg.image_size}"
                )
            maps = render_action_maps(ep.proprio[1:], cam, cfg.action_map, size=cfg.image_size)
            out.append(
                EpisodeArrays(
                    episode_id=f"{Path(d).name}/{ep.episode_id}",
                    source=ep.source,
                    frames=torch.from_numpy(ep.images).permute(0, 3, 1, 2).contiguous(),
                    action_maps=torch.from_numpy(maps).permute(0, 3, 1, 2).to(torch.float16),
                    proprio=ep.proprio,
                )
            )
    if not out:
        raise ValueError(f"the episode stores {list(map(str, dirs))} hold no episode with a step")
    assert camera is not None
    return out, camera


def reference_frames(ep: EpisodeArrays, num: int) -> torch.Tensor:
    """(num, 3, H, W) float in [0, 1]: the first ``num`` frames (the last repeats if short)."""
    idx = np.minimum(np.arange(num), len(ep.frames) - 1)
    return ep.frames[idx].float() / 255


class TransitionSampler:
    """Random batches of transitions from a fixed set of episodes, mixing sources.

    Args:
        episodes: the episodes to draw from.
        k: history length K.
        exploration_fraction: expected share of exploration transitions per batch (used only
            when both pools are non-empty).
    """

    def __init__(self, episodes: list[EpisodeArrays], *, k: int, exploration_fraction: float):
        self.episodes = episodes
        self.k = k
        self.fraction = exploration_fraction
        expl = [i for i, e in enumerate(episodes) if e.source in EXPLORATION_SOURCES]
        expert = [i for i, e in enumerate(episodes) if e.source not in EXPLORATION_SOURCES]
        self.pools = [np.array(p, dtype=np.int64) for p in (expert, expl)]
        # every transition of a pool is equally likely: weight episodes by their length
        self.weights = [
            np.array([len(episodes[i].action_maps) for i in p], dtype=np.float64)
            for p in self.pools
        ]
        self.weights = [w / w.sum() if len(w) else w for w in self.weights]

    def counts(self) -> dict[str, int]:
        return {"expert": int(len(self.pools[0])), "exploration": int(len(self.pools[1]))}

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor | np.ndarray]:
        """A batch: history (B, K, 3, H, W), action_map (B, 3, H, W), target (B, 3, H, W),
        all float in [0, 1]; episode (B,) indices into ``episodes``; step (B,) the t of each
        transition (target o_{t+1})."""
        both = len(self.pools[0]) and len(self.pools[1])
        if both:
            from_expl = rng.random(batch) < self.fraction
        else:
            from_expl = np.full(batch, len(self.pools[0]) == 0)
        eps = np.empty(batch, dtype=np.int64)
        for flag in (False, True):
            n = int((from_expl == flag).sum())
            if n:
                pool, w = self.pools[int(flag)], self.weights[int(flag)]
                eps[from_expl == flag] = rng.choice(pool, size=n, p=w)
        steps = [int(rng.integers(len(self.episodes[e].action_maps))) for e in eps]
        return self.gather(eps, steps)

    def gather(self, eps: np.ndarray, steps: list[int]) -> dict[str, torch.Tensor | np.ndarray]:
        """The transitions (episode eps[i], step steps[i]) as a batch (see ``sample``)."""
        hist, maps, target = [], [], []
        for e, t in zip(eps, steps, strict=True):
            ep = self.episodes[e]
            idx = select_indices(t + 1, self.k)
            hist.append(ep.frames[idx])
            maps.append(ep.action_maps[t])
            target.append(ep.frames[t + 1])
        return {
            "history": torch.stack(hist).float() / 255,
            "action_map": torch.stack(maps).float(),
            "target": torch.stack(target).float() / 255,
            "episode": np.asarray(eps),
            "step": np.asarray(steps, dtype=np.int64),
        }


def split_episodes(
    episodes: list[EpisodeArrays], val_fraction: float, seed: int
) -> tuple[list[EpisodeArrays], list[EpisodeArrays]]:
    """Deterministic split into (train, validation) by episode."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(episodes))
    n_val = int(round(val_fraction * len(episodes)))
    if val_fraction > 0 and len(episodes) > 1:
        n_val = max(1, n_val)
    n_val = min(n_val, len(episodes) - 1)
    val = {int(i) for i in order[:n_val]}
    return (
        [e for i, e in enumerate(episodes) if i not in val],
        [e for i, e in enumerate(episodes) if i in val],
    )


__all__ = [
    "EpisodeArrays",
    "load_episodes",
    "reference_frames",
    "TransitionSampler",
    "split_episodes",
]
