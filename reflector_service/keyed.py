"""The reflector behind the reflector service: incremental scoring state per episode group.

Each group (N rollouts advancing in lockstep) keeps its key/value cache; ``score_batch`` adds
one frame per rollout to every requested group. Groups are scored one after another inside a
batch: their caches have different lengths, and a merged cache is not worth it while one
reflector step costs a fraction of a simulator step (measure with benchmarks/).
"""

from __future__ import annotations

import numpy as np
import torch

from reflector_service.model import Reflector, ReflectorState


class KeyedReflector:
    """Keyed, batched reflector backend over a trained ``Reflector``; ``bf16`` runs its passes
    in bf16 autocast (``cluster.reflector.bf16``; rewards come back as fp32)."""

    def __init__(self, model: Reflector, *, bf16: bool = False):
        self.model = model.eval()
        self._states: dict[str, ReflectorState] = {}
        device = next(model.parameters()).device.type
        self._autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        """Start N rollouts from context frames (N, T0, H, W, 3); returns R (N,) after them."""
        frames = np.asarray(frames)
        if frames.ndim != 5 or frames.shape[1] < 1:
            raise ValueError(
                f"reflector reset needs context frames (N, T0, H, W, 3), got {frames.shape}"
            )
        if len(instructions) != len(frames):
            raise ValueError(f"{len(frames)} rollouts but {len(instructions)} instructions")
        with self._autocast():
            state = self.model.start(instructions)
            r = None
            for t in range(frames.shape[1]):
                r = self.model.step(state, frames[:, t])
        self._states[key] = state
        return r.float().numpy()

    def release(self, key: str) -> None:
        self._states.pop(key, None)

    def score_batch(self, requests: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """requests: (key, frames (N, H, W, 3)) -> rewards (N,) each."""
        out = []
        for key, frames in requests:
            if key not in self._states:
                raise KeyError(f"reflector has no episode group {key!r} (reset it first)")
            with self._autocast():
                r = self.model.step(self._states[key], frames)
            out.append(r.float().numpy())
        return out
