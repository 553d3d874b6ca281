"""Starting or joining a Ray cluster, the one place that decides how (no role calls ray.init)."""

from __future__ import annotations

import os
from typing import Any


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    include_dashboard: bool = False,
    **kwargs: Any,
) -> Any:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets), else
    start a private local one in-process.

    Local means local: with no address, Ray starts its own cluster (``address="local"``) even
    when ``ray start`` left another cluster recorded on the machine (plain ``ray.init()`` would
    join that one); joining is explicit (``cluster.address: auto`` or an address).

    A local embedded cluster runs with Ray's token authentication off (Ray 2.60 turns it on by
    default, which makes local dashboard and client calls fail with 401); a shared cluster keeps
    whatever its operator configured. Returns the ``ray.init`` context.
    """
    import ray

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return ray.init(address=address, log_to_driver=True, **kwargs)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=include_dashboard,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
        configure_logging=True,
        logging_level="warning",
        **kwargs,
    )


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
