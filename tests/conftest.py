"""Shared fixtures: one local Ray cluster per test session, started only if a test asks."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs), shared by every Ray test of the session."""
    import ray

    from cluster.ray_session import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests without CUDA and `libero` tests without the libero extra."""
    import importlib.util

    has_cuda = False
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        pass
    has_libero = importlib.util.find_spec("libero") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "libero" in item.keywords and not has_libero:
            item.add_marker(
                pytest.mark.skip(reason="needs the libero extra (scripts/setup.sh --libero)")
            )
