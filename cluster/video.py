"""GIFs of rollout groups: the N rollouts of one start side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_group_video(frames: np.ndarray, path: Path) -> None:
    """frames: (N, S, H, W, 3) uint8 -> a GIF with the N rollouts side by side (small frames
    scaled up to about 128 px)."""
    import imageio.v2 as imageio

    n, s, h, w, _ = frames.shape
    strip = frames.transpose(1, 2, 0, 3, 4).reshape(s, h, n * w, 3)
    scale = max(1, 128 // h)
    strip = strip.repeat(scale, axis=1).repeat(scale, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(strip), duration=0.15, loop=0)
