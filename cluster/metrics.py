"""Metrics of a run: JSON lines on disk, the trackers (TensorBoard, W&B), and Ray metrics for the
dashboard.

Keys are grouped by the role that measures them (``rollout/``, ``sim/``, ``reflector/``,
``learner/``, ``timers/``, ``throughput/``, ``broadcast/``). Ray metrics are gauges named
``rehearse_<group>_<name>``, which Ray's Prometheus exporter publishes as
``ray_rehearse_<group>_<name>`` (the Ray dashboard's metrics view).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.fsutil import write_text_atomic
from core.tracking import Trackers


def ray_metric_name(key: str) -> str:
    return "rehearse_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


class MetricsLogger:
    """Writes one record per iteration to ``metrics.jsonl`` (+ the trackers, + Ray gauges).

    Args:
        run_dir: the run folder.
        loggers: trackers of ``core.tracking`` ("tensorboard", "wandb") in ``run_dir``.
        config: the run's config as a plain dict (stored with the W&B run).
        ray_metrics: also set Ray gauges (inside a Ray driver or actor).
        resumed_at: a run resumed from the checkpoint of this iteration: what was logged after
            it (before the run stopped) is rolled back, the JSON lines and the TensorBoard
            events alike, so the resumed run's logs equal an uninterrupted run's.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        loggers: Sequence[str] = ("tensorboard",),
        config: dict[str, Any] | None = None,
        ray_metrics: bool = True,
        resumed_at: int | None = None,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None and self.path.is_file():
            kept = [r for r in read_metrics(run_dir) if r["iteration"] <= resumed_at]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.trackers = Trackers(
            run_dir, loggers, job="post_train", config=config, resumed_at=resumed_at
        )
        self._ray = ray_metrics
        self._gauges: dict[str, Any] = {}

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        with self.path.open("a") as f:
            f.write(
                json.dumps(
                    {
                        "iteration": step,
                        **{k: (None if not math.isfinite(v) else v) for k, v in clean.items()},
                    }
                )
                + "\n"
            )
        self.trackers.log(step, clean)
        self.trackers.flush()  # one record per iteration: TensorBoard shows it at once
        if self._ray:
            self._set_gauges(clean)

    def _set_gauges(self, metrics: dict[str, float]) -> None:
        try:
            from ray.util import metrics as ray_metrics
        except ImportError:
            return
        for k, v in metrics.items():
            if not math.isfinite(v):
                continue
            g = self._gauges.get(k)
            if g is None:
                try:
                    g = self._gauges[k] = ray_metrics.Gauge(ray_metric_name(k), description=k)
                except Exception:  # not inside Ray
                    self._ray = False
                    return
            g.set(v)

    def close(self) -> None:
        self.trackers.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (empty when the run has none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ServiceGauges:
    """Ray metrics of a model service (Ray dashboard / Prometheus): request latency, batch size
    and queue depth. Passed as the services' ``observer`` by ``cluster/placement.py``; inert
    outside a Ray process.

    Args:
        name: the service's metric prefix ("sim" or "reflector").
    """

    def __init__(self, name: str):
        try:
            from ray.util import metrics

            self.latency = metrics.Histogram(
                f"rehearse_{name}_request_latency_ms",
                description=f"{name} request latency including batching wait",
                boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
            )
            self.batch = metrics.Gauge(
                f"rehearse_{name}_batch_size", description=f"{name} environments per model call"
            )
            self.queue = metrics.Gauge(  # not _queue_depth: the driver's per-iteration sum
                f"rehearse_{name}_queued_requests", description=f"{name} requests waiting"
            )
        except Exception:  # outside a Ray process
            self.latency = self.batch = self.queue = None

    def observe(self, *, latency_ms: float, batch_size: int, queue_depth: int) -> None:
        if self.latency is None:
            return
        self.latency.observe(latency_ms)
        self.batch.set(batch_size)
        self.queue.set(queue_depth)
