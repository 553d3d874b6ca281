"""Dynamic batching: requests from many callers are merged up to the size limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.batcher import DynamicBatcher


def test_merges_concurrent_requests_and_keeps_order():
    calls = []

    def fn(reqs):
        calls.append([len(r) for r in reqs])
        return [[x * 10 for x in r] for r in reqs]

    async def main():
        b = DynamicBatcher(fn, size_of=len, max_batch_size=8, max_wait_s=0.05)
        outs = await asyncio.gather(*(b.submit([i, i + 1]) for i in range(6)))
        return outs, b.stats.summary()

    outs, stats = asyncio.run(main())
    assert outs == [[i * 10, (i + 1) * 10] for i in range(6)]
    assert all(sum(c) <= 8 for c in calls)
    assert len(calls) == 2  # 12 items in batches of at most 8
    assert stats["items"] == 12 and stats["requests"] == 6


def test_max_wait_bounds_latency_of_a_lonely_request():
    async def main():
        b = DynamicBatcher(lambda rs: rs, size_of=lambda r: 1, max_batch_size=64, max_wait_s=0.02)
        t = time.perf_counter()
        await b.submit("x")
        return time.perf_counter() - t

    assert asyncio.run(main()) < 1.0


def test_errors_reach_every_caller_and_loop_survives():
    state = {"fail": True}

    def fn(reqs):
        if state["fail"]:
            state["fail"] = False
            raise RuntimeError("model crashed")
        return reqs

    async def main():
        b = DynamicBatcher(fn, size_of=lambda r: 1, max_batch_size=4, max_wait_s=0.05)
        results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        again = await b.submit(3)
        return results, again

    results, again = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert again == 3


def test_bad_limits():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda r: r, size_of=len, max_batch_size=0, max_wait_s=0.1)
