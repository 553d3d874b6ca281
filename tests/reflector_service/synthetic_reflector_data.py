"""Synthetic episode stores for the reflector tests: success frames show a bright square."""

from __future__ import annotations

import numpy as np

from trajectories.episode import Episode
from trajectories.store import write_episodes

META = {"env": "synthetic", "image_size": 32}


def synthetic_episode(
    rng: np.random.Generator, i: int, *, success: bool, length: int = 12, size: int = 32
) -> Episode:
    """Dim noise frames; from a random step on (successful episodes only) a white square."""
    images = rng.integers(0, 60, (length, size, size, 3), dtype=np.uint8)
    labels = np.zeros(length, dtype=bool)
    if success:
        start = int(rng.integers(length // 3, length - 1))
        labels[start:] = True
        c = size // 2
        images[start:, c - 6 : c + 6, c - 6 : c + 6] = 255
    instruction = ["lift the red block", "put the yellow block on the green plate"][i % 2]
    return Episode(
        episode_id=f"ep{i:03d}",
        task_id=f"task{i % 2}",
        instruction=instruction,
        images=images,
        proprio=np.zeros((length, 8), np.float32),
        actions=np.zeros((length, 7), np.float32),
        success=labels,
        source="exploration" if not success else "expert",
    )


def write_synthetic_store(path, *, episodes: int = 16, seed: int = 0, length: int = 12):
    """A store of ``episodes`` synthetic episodes, half of them successful."""
    rng = np.random.default_rng(seed)
    eps = [
        synthetic_episode(rng, seed * 1000 + i, success=i % 2 == 0, length=length)
        for i in range(episodes)
    ]
    return write_episodes(path, eps, META)
