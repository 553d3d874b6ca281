"""Starting or joining a Ray cluster, the one place that decides how (no role calls ray.init)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# Ray takes the node's address from the route to the outside unless clusters are "disabled" (its
# setting for laptops, which makes every Ray process bind to 127.0.0.1); ray.init refuses
# _node_ip_address="127.0.0.1" (it resolves loopback to the outside address).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


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
    join that one); joining is explicit (``cluster.address: auto`` or an address). A local
    cluster listens on loopback only: its node address is 127.0.0.1, so the GCS, the raylet, the
    workers, the agents and the dashboard bind there and nothing is reachable from another host.

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
    with _loopback_node():
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


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While a local cluster starts, Ray's node address is 127.0.0.1 (in this process and in the
    processes it starts, which keep it); afterwards the setting is restored, so a later join of
    a real cluster from this process gets its routable address."""
    from ray._private import ray_constants

    before_env, before_const = os.environ.get(_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = before_env


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
