"""Placement of every role on the Ray cluster, from the config's ``cluster`` section.

Roles never pick devices: resources (GPUs, CPUs, fractions) are given here when the actors are
created, and a role builds its model on ``cuda`` only when Ray gave it a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.config import ClusterConfig, ReplicaConfig
from cluster.metrics import ServiceGauges
from core.configlib import ConfigError


def check_resources(cfg: ClusterConfig, *, services: bool = True) -> None:
    """Raise one clear error before anything starts if the cluster lacks what the config asks
    (``services``: count the simulator and reflector replicas)."""
    import ray

    have = ray.cluster_resources()
    gpus, cpus = float(have.get("GPU", 0.0)), float(have.get("CPU", 0.0))
    need_gpus = cfg.gpus_needed(services=services)
    if need_gpus > gpus + 1e-9:
        raise ConfigError(
            f"the config asks for {need_gpus:g} GPUs (cluster.rollout_workers x "
            f"rollout_worker_gpus + learners x learner_gpus + simulator/reflector replicas x "
            f"num_gpus) but "
            f"the Ray cluster has {gpus:g}; lower them (0 runs on CPU) or add GPU nodes"
        )
    need_cpus = cfg.cpus_needed(services=services)
    if need_cpus > cpus + 1e-9:
        raise ConfigError(
            f"the config reserves {need_cpus:g} CPUs for its roles but the Ray cluster has "
            f"{cpus:g}; lower cluster.*_cpus / num_cpus (fractions are fine) or add nodes"
        )


def device_for(num_gpus: float) -> str:
    """The torch device of a role given its GPU share (called inside the actor)."""
    import torch

    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def start_replicas(
    cls: type, rc: ReplicaConfig, backend_factory: Callable[[], Any], *, name: str
) -> list[Any]:
    """Start ``rc.replicas`` async service actors of ``cls`` restarted by Ray when they die."""
    import ray

    actor_cls = ray.remote(cls)
    return [
        actor_cls.options(
            name=f"{name}-{i}",
            num_gpus=rc.num_gpus,
            num_cpus=rc.num_cpus,
            max_restarts=rc.max_restarts,
            max_task_retries=0,
            max_concurrency=1000,
        ).remote(
            backend_factory,
            max_batch_size=rc.max_batch_size,
            max_wait_ms=rc.max_wait_ms,
            observer=ServiceGauges,
        )
        for i in range(rc.replicas)
    ]


def start_actor(
    cls: type,
    *args: Any,
    num_gpus: float,
    num_cpus: float,
    name: str,
    max_restarts: int = 0,
    **kwargs: Any,
) -> Any:
    """Start one actor of ``cls`` with the given resources."""
    import ray

    return (
        ray.remote(cls)
        .options(name=name, num_gpus=num_gpus, num_cpus=num_cpus, max_restarts=max_restarts)
        .remote(*args, **kwargs)
    )


def revive_actor(
    actor: Any,
    *,
    name: str,
    deaths: int,
    limit: int,
    error: Exception,
    log: Callable[[str], None],
    attempts: int = 600,
) -> None:
    """A worker died for the ``deaths``-th time: beyond ``limit`` (``cluster.worker_restarts``)
    stop the run in one line naming it; else log it and block until Ray's restart of it
    answers ``ping`` (calls fail while it restarts). The caller then restores its state."""
    import time

    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    if deaths > limit:
        raise RuntimeError(
            f"{name} died {deaths} times (cluster.worker_restarts = {limit}): "
            f"{str(error).splitlines()[0]}"
        ) from None
    log(f"{name} died; it is restarted and given the current weights")
    for _ in range(attempts):
        try:
            ray.get(actor.ping.remote(), timeout=10)
            return
        except (RayActorError, GetTimeoutError):
            time.sleep(0.5)
