"""Memory bank: per-environment history of frames; the K conditioning frames come from it.

Selection follows EVAC / World-Env: the first frame, evenly spaced frames, and the latest one
(K = 4 over 10 frames gives indices 0, 3, 6, 9). The same rule picks history frames from real
episodes during training (``select_indices``), so training and imagination see the same kind of
history.
"""

from __future__ import annotations

import numpy as np
import torch


def select_indices(length: int, k: int) -> np.ndarray:
    """Indices of the K conditioning frames among ``length`` stored frames.

    K = 1 gives the latest frame; otherwise the first, K - 2 evenly spaced, and the latest,
    in time order. With fewer frames than K, early frames repeat.

    Args:
        length: number of stored frames (>= 1).
        k: number of frames to select (>= 1).
    Returns:
        (k,) int64 indices in [0, length).
    """
    if length < 1 or k < 1:
        raise ValueError(f"select_indices needs length >= 1 and k >= 1, got {length}, {k}")
    if k == 1:
        return np.array([length - 1], dtype=np.int64)
    return np.round(np.linspace(0, length - 1, k)).astype(np.int64)


class MemoryBank:
    """Frames generated so far for a batch of environments.

    Frames are stored as tensors in whatever space the model works in (pixels in [-1, 1] or
    latents); every environment has its own history length.

    Args:
        k: number of frames ``select`` returns per environment.
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"memory bank size K must be >= 1, got {k}")
        self.k = k
        self._frames: list[list[torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self._frames)

    def reset(self, frames: torch.Tensor) -> None:
        """Start one history per environment. frames: (B, C, H, W) or (B, T0, C, H, W) for
        several initial (context) frames."""
        if frames.ndim == 4:
            frames = frames[:, None]
        if frames.ndim != 5:
            raise ValueError(
                f"memory bank reset needs (B, C, H, W) or (B, T, C, H, W), "
                f"got {tuple(frames.shape)}"
            )
        self._frames = [list(f.unbind(0)) for f in frames]

    def append(self, frames: torch.Tensor) -> None:
        """Add the next frame of every environment. frames: (B, C, H, W)."""
        if len(frames) != len(self._frames):
            raise ValueError(
                f"memory bank holds {len(self._frames)} environments, got {len(frames)} frames"
            )
        ref = self._frames[0][0]
        if frames.shape[1:] != ref.shape:
            raise ValueError(
                f"memory bank frames are {tuple(ref.shape)}, got {tuple(frames.shape[1:])}"
            )
        for hist, f in zip(self._frames, frames, strict=True):
            hist.append(f)

    def lengths(self) -> list[int]:
        return [len(h) for h in self._frames]

    def latest(self) -> torch.Tensor:
        """(B, C, H, W) the latest frame of every environment."""
        return torch.stack([h[-1] for h in self._frames])

    def select(self) -> torch.Tensor:
        """(B, K, C, H, W) the conditioning frames of every environment, oldest first."""
        if not self._frames:
            raise ValueError("memory bank is empty: call reset() first")
        out = []
        for hist in self._frames:
            idx = select_indices(len(hist), self.k)
            out.append(torch.stack([hist[i] for i in idx]))
        return torch.stack(out)


__all__ = ["MemoryBank", "select_indices"]
