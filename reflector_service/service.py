"""The reflector as a Ray actor: frames from many rollout workers scored in one model call.

Wrap with ``ray.remote(**resources)(ReflectorService)`` where the actor is created
(``cluster/placement.py``). Incremental state (frame embeddings, key/value cache) is kept per
episode group; after a restart a rollout worker re-sends the group's frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.service_base import BatchedService


class ReflectorService(BatchedService):
    """Async actor body around a keyed reflector backend (``reset``, ``score_batch``,
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
            batch_method="score_batch",
            name="reflector",
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            observer=observer,
        )

    async def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        """Start a group from context frames (N, T0, H, W, 3); returns rewards (N,) now."""
        return await self._call(self.backend.reset, key, instructions, frames)

    async def score(self, key: str, frames: np.ndarray) -> np.ndarray:
        """Rewards (N,) in [0, 1] after adding one frame per environment (N, H, W, 3)."""
        return await self._submit(key, np.asarray(frames))
