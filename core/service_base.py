"""The shared body of the model service actors: dynamic batching, metrics, health.

``simulator_service/service.py`` and ``reflector_service/service.py`` subclass this with their
request types. An instance lives inside an async Ray actor; the backend (the model, keyed by
episode group) is built inside the actor from a picklable factory, so the heavy model is
created where its resources are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from core.batcher import DynamicBatcher


class BatchedService:
    """Serves ``backend.<batch_method>(requests)`` through a dynamic batcher.

    Args:
        backend_factory: builds the backend in the actor process.
        batch_method: name of the backend's batched method (list of requests -> results).
        name: metric name prefix ("sim" or "reflector").
        max_batch_size, max_wait_ms: dynamic batching limits (environments, milliseconds).
        observer: builds, from ``name``, what receives every request's latency, batch size and
            queue depth (``observe(latency_ms=, batch_size=, queue_depth=)``), e.g. the Ray
            dashboard's gauges (``cluster.metrics.ServiceGauges``); None keeps only ``stats``.
    """

    def __init__(
        self,
        backend_factory: Callable[[], Any],
        *,
        batch_method: str,
        name: str,
        max_batch_size: int,
        max_wait_ms: float,
        observer: Callable[[str], Any] | None = None,
    ):
        self.backend = backend_factory()
        self.name = name
        self.batcher = DynamicBatcher(
            getattr(self.backend, batch_method),
            size_of=lambda req: len(req[1]),
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_ms / 1000.0,
        )
        self._observer = observer(name) if observer is not None else None
        self.started = time.time()

    async def _submit(self, key: str, *payload: Any) -> Any:
        """Queue the request ``(key, *payload)`` for the next batch; its result."""
        t = time.perf_counter()
        out = await self.batcher.submit((key, *payload))
        if self._observer is not None:
            self._observer.observe(
                latency_ms=1000 * (time.perf_counter() - t),
                batch_size=self.batcher.stats.last_batch_size,
                queue_depth=self.batcher.queue_depth,
            )
        return out

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def release(self, key: str) -> None:
        self.backend.release(key)

    def stats(self) -> dict[str, float]:
        s = self.batcher.stats.summary()
        s["queue_depth"] = self.batcher.queue_depth
        s["uptime_s"] = time.time() - self.started
        return s

    def ping(self) -> str:
        return "ok"
