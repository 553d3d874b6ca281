"""A deterministic fake reflector for orchestration tests: reward from where the frame changed.

R = mean column (divided by the width) of the pixels that differ from the group's first frame,
0 when none do. With the fake simulator, which draws the end effector onto the start frame,
R grows as the policy moves the end effector to the image's right: a deterministic,
action-dependent reward that gives LOOP a signal to follow. Optional fixed latency per call.
"""

from __future__ import annotations

import time

import numpy as np


class FakeReflector:
    """Keyed, batched reflector backend with the interface of ``reflector_service.keyed``."""

    def __init__(self, *, latency_s: float = 0.0):
        self.latency_s = latency_s
        self._first: dict[str, np.ndarray] = {}
        self.calls = 0

    def _reward(self, key: str, frames: np.ndarray) -> np.ndarray:
        changed = np.any(frames != self._first[key], axis=-1)  # (N, H, W)
        w = frames.shape[2]
        cols = np.arange(w, dtype=np.float64)
        count = changed.sum(axis=(1, 2))
        mean_col = (changed * cols).sum(axis=(1, 2)) / np.maximum(count, 1)
        return np.where(count > 0, mean_col / max(1, w - 1), 0.0)

    def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 5 or len(instructions) != len(frames):
            raise ValueError(
                "fake reflector reset needs (N, T0, H, W, 3) frames and N instructions"
            )
        self._first[key] = frames[:, 0].copy()
        return self._reward(key, frames[:, -1])

    def release(self, key: str) -> None:
        self._first.pop(key, None)

    def score_batch(self, requests: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """requests: (key, frames (N, H, W, 3)) -> rewards (N,) each."""
        if self.latency_s:
            time.sleep(self.latency_s)
        self.calls += 1
        out = []
        for key, frames in requests:
            if key not in self._first:
                raise KeyError(f"reflector has no episode group {key!r} (reset it first)")
            out.append(self._reward(key, np.asarray(frames)))
        return out
