"""Shared fixtures: one local Ray cluster per test session, started only if a test asks; tiny
trained-format checkpoints of a policy, a world model and a reflector with their demos."""

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


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A folder of tiny checkpoints in the formats training writes, at 16 px: ``demos`` (one
    expert episode each of lift_red and place_red_on_blue), ``sft`` (a random policy with
    their statistics), ``sim`` (a world model), ``refl`` (a reflector) and ``calibrate``
    (the demos again and a copy of the first relabeled as a failure)."""
    import dataclasses

    import numpy as np
    import torch

    from actors.config import CollectConfig
    from cluster.collect import collect, episode_specs
    from envs.config import EnvConfig
    from policy.checkpoint import build_policy, save_policy
    from policy.config import PolicyConfig
    from policy.normalization import statistics_from_store
    from reflector_service.checkpoint import save_reflector
    from reflector_service.config import ReflectorModelConfig
    from reflector_service.model import Reflector
    from simulator_service.checkpoint import save_world_model, stored_state
    from simulator_service.config import SimulatorConfig
    from simulator_service.model import WorldModel
    from trajectories.store import EpisodeStore, write_episodes

    root = tmp_path_factory.mktemp("tiny_world")
    specs = episode_specs(["lift_red", "place_red_on_blue"], 1, seed=0, source="expert")
    collect(EnvConfig(image_size=16), CollectConfig(), specs, root / "demos", progress=False)
    store = EpisodeStore(root / "demos")
    torch.manual_seed(0)
    policy = build_policy(
        PolicyConfig(image_size=16, scale_bias_init=0.0),
        instructions=sorted(set(store.meta["tasks"].values())),
        stats=statistics_from_store(store, dataset_name="tabletop")["tabletop"],
    )
    save_policy(policy, root / "sft")
    sim = WorldModel(SimulatorConfig.preset("tiny")).eval()
    save_world_model(root / "sim", model=sim, ema=stored_state(sim), optimizer=None, step=0)
    save_reflector(Reflector(ReflectorModelConfig(image_size=16)), root / "refl", state={})
    eps = [store.load_episode(e) for e in store.episode_ids]
    failed = dataclasses.replace(eps[0], episode_id="failed", success=np.zeros_like(eps[0].success))
    write_episodes(root / "calibrate", [*eps, failed], store.meta)
    return root


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
