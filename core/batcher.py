"""Dynamic batching for the model services: many callers' requests, one model call.

A service actor (async Ray actor) awaits ``DynamicBatcher.submit(request)``; a background loop
gathers requests until ``max_batch_size`` items (environments, not requests) are waiting or
``max_wait_s`` has passed since the first one, runs the batch function in a worker thread (the
event loop keeps accepting requests while torch computes), and hands each caller its slice.
Plain asyncio: testable without Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class BatchStats:
    """Running figures of a batcher: batches run, items per batch, waits and compute time."""

    batches: int = 0
    items: int = 0
    requests: int = 0
    compute_s: float = 0.0
    wait_s: float = 0.0
    last_batch_size: int = 0
    sizes: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        b = max(1, self.batches)
        return {
            "batches": self.batches,
            "requests": self.requests,
            "items": self.items,
            "mean_batch_size": self.items / b,
            "mean_compute_ms": 1000 * self.compute_s / b,
            "mean_wait_ms": 1000 * self.wait_s / max(1, self.requests),
        }


class DynamicBatcher(Generic[Req, Res]):
    """Gathers requests and runs ``fn(requests) -> results`` (same order) on batches of them.

    Args:
        fn: called with a list of requests, returns one result per request; runs in a thread.
        size_of: number of items (environments) a request holds.
        max_batch_size: items per call at most (a single larger request runs alone).
        max_wait_s: how long the first waiting request may wait for company.
    """

    def __init__(
        self,
        fn: Callable[[list[Req]], Sequence[Res]],
        *,
        size_of: Callable[[Req], int],
        max_batch_size: int,
        max_wait_s: float,
    ):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.fn, self.size_of = fn, size_of
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future, float]] | None = None
        self._task: asyncio.Task | None = None
        self._carry: tuple[Req, asyncio.Future, float] | None = None

    @property
    def queue_depth(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + (1 if self._carry else 0)

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._queue = self._queue or asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, request: Req) -> Res:
        """Queue one request and wait for its result (exceptions of the batch propagate)."""
        self._ensure_loop()
        assert self._queue is not None
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, fut, time.perf_counter()))
        return await fut

    async def _next_batch(self) -> list[tuple[Req, asyncio.Future, float]]:
        assert self._queue is not None
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], self.size_of(first[0])
        deadline = first[2] + self.max_wait_s
        while size < self.max_batch_size:
            timeout = deadline - time.perf_counter()
            try:
                item = (
                    self._queue.get_nowait()
                    if timeout <= 0
                    else await asyncio.wait_for(self._queue.get(), timeout)
                )
            except (TimeoutError, asyncio.QueueEmpty):
                break
            n = self.size_of(item[0])
            if size + n > self.max_batch_size:
                self._carry = item  # first of the next batch
                break
            batch.append(item)
            size += n
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            start = time.perf_counter()
            requests = [r for r, _, _ in batch]
            try:
                results = await asyncio.to_thread(self.fn, requests)
                if len(results) != len(requests):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for "
                        f"{len(requests)} requests"
                    )
            except Exception as e:  # every caller of this batch gets the error
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            end = time.perf_counter()
            n = sum(self.size_of(r) for r in requests)
            s = self.stats
            s.batches += 1
            s.requests += len(batch)
            s.items += n
            s.last_batch_size = n
            s.compute_s += end - start
            s.wait_s += sum(start - t for _, _, t in batch)
            for (_, fut, _), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
