"""A deterministic fake world simulator for orchestration tests and overhead benchmarks.

It "predicts" the next frame by drawing the end effector's projected position (a small square,
colored by gripper opening) onto the episode's start frame: cheap, deterministic, and
action-dependent, so routing mistakes show. ``latency_s`` adds a fixed delay per batched call,
modelling an accelerator whose cost does not grow with the batch (the ideal of batching).
"""

from __future__ import annotations

import time

import numpy as np

from envs.base import Camera


class FakeWorldSimulator:
    """Keyed, batched simulator backend with the interface of ``simulator_service.keyed``.

    Args:
        camera: the env camera (projects the EE position).
        latency_s: sleep per ``step_batch`` call.
    """

    def __init__(self, camera: Camera, *, latency_s: float = 0.0):
        self.camera = camera
        self.latency_s = latency_s
        self._start: dict[str, np.ndarray] = {}
        self.calls = 0

    def reset(
        self, key: str, frames: np.ndarray, proprio: np.ndarray, *, common_noise: bool = False
    ) -> None:
        """``common_noise`` changes nothing: the fake's frames depend on the actions alone."""
        frames = np.asarray(frames)
        if frames.ndim != 5 or frames.dtype != np.uint8:
            raise ValueError(
                f"fake simulator reset needs (N, T0, H, W, 3) uint8 frames, got "
                f"{frames.shape} {frames.dtype}"
            )
        self._start[key] = frames[:, -1].copy()

    def release(self, key: str) -> None:
        self._start.pop(key, None)

    def step_batch(self, requests: list[tuple]) -> list[np.ndarray]:
        """requests: (key, next_proprio (N, 8)[, active (N,)]) -> next frames (N, H, W, 3) uint8
        each (ended environments hold still, so drawing them again changes nothing)."""
        if self.latency_s:
            time.sleep(self.latency_s)
        self.calls += 1
        out = []
        for key, proprio, *_ in requests:
            if key not in self._start:
                raise KeyError(f"simulator has no episode group {key!r} (reset it first)")
            frames = self._start[key].copy()
            uv, _ = self.camera.project(np.asarray(proprio)[:, :3])
            h, w = frames.shape[1:3]
            opening = np.clip(np.asarray(proprio)[:, 6] / 0.04, 0, 1)
            for i in range(len(frames)):
                c, r = int(round(uv[i, 0])), int(round(uv[i, 1]))
                if 0 <= r < h and 0 <= c < w:
                    frames[i, max(0, r - 1) : r + 2, max(0, c - 1) : c + 2] = (
                        255,
                        int(255 * opening[i]),
                        0,
                    )
            out.append(frames)
        return out
