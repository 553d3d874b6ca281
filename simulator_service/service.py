"""The world simulator as a Ray actor: many rollout workers' steps batched into one model call.

Wrap with ``ray.remote(**resources)(SimulatorService)`` where the actor is created
(``cluster/placement.py``); this file defines the methods only. State is kept per episode group
(memory bank, cached reference features), so a group always talks to the same replica; a
replica that dies is restarted by Ray and rollout workers re-send the group's context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.service_base import BatchedService


class SimulatorService(BatchedService):
    """Async actor body around a keyed simulator backend (``reset``, ``step_batch``,
    ``release``)."""

    def __init__(
        self,
        backend_factory: Callable[[], Any],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        observer: Callable[[str], Any] | None = None,
    ):
        super().__init__(
            backend_factory,
            batch_method="step_batch",
            name="sim",
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            observer=observer,
        )

    async def reset(
        self, key: str, frames: np.ndarray, proprio: np.ndarray, common_noise: bool = False
    ) -> None:
        """Start a group: context frames (N, T0, H, W, 3) uint8, proprio (N, 8);
        ``common_noise``: its environments share the sampling noise."""
        await self._call(self.backend.reset, key, frames, proprio, common_noise=common_noise)

    async def step(
        self, key: str, next_proprio: np.ndarray, active: np.ndarray | None = None
    ) -> np.ndarray:
        """Next frames (N, H, W, 3) uint8 of a group given its next proprio states (N, 8);
        ``active`` (N,) bool: the environments still running (None: all); ended ones keep
        their last frame and cost no model compute."""
        p = np.asarray(next_proprio, dtype=np.float32)
        if active is None:
            return await self._submit(key, p)
        return await self._submit(key, p, np.asarray(active, dtype=bool))
