"""The two placements of imagination give the same trajectories for the same seeds: a rollout
worker acting through service replicas (Ray calls batched at the replicas) and one holding its
own world model and reflector (``cluster.placement: colocated``), with tiny trained-format
checkpoints of both models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from actors.config import CollectConfig
from cluster.collect import collect, episode_specs
from cluster.config import ExperimentConfig, PostTrainConfig
from envs.config import EnvConfig
from policy.checkpoint import build_policy, save_policy
from policy.config import PolicyConfig
from policy.normalization import statistics_from_store
from trajectories.store import EpisodeStore

pytestmark = [pytest.mark.ray]
ENV = EnvConfig(image_size=16)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from reflector_service.checkpoint import save_reflector
    from reflector_service.config import ReflectorModelConfig
    from reflector_service.model import Reflector
    from simulator_service.checkpoint import save_world_model, stored_state
    from simulator_service.config import SimulatorConfig
    from simulator_service.model import WorldModel

    root = tmp_path_factory.mktemp("placement")
    specs = episode_specs(["lift_red", "place_red_on_blue"], 1, seed=0, source="expert")
    collect(ENV, CollectConfig(), specs, root / "demos", progress=False)
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
    return root


def _cfg(root, placement: str) -> ExperimentConfig:
    cfg = ExperimentConfig(name="placement", env=ENV, loggers=[])
    return dataclasses.replace(
        cfg,
        rollout=dataclasses.replace(
            cfg.rollout, group_size=3, max_policy_steps=2, execute_steps=3, eta=0.5
        ),
        cluster=dataclasses.replace(
            cfg.cluster,
            placement=placement,
            simulator=dataclasses.replace(cfg.cluster.simulator, num_cpus=0.25),
            reflector=dataclasses.replace(cfg.cluster.reflector, num_cpus=0.25),
        ),
        post_train=PostTrainConfig(
            policy=str(root / "sft"),
            simulator=str(root / "sim"),
            reflector=str(root / "refl"),
            data=[str(root / "demos")],
        ),
    )


def _run_groups(root, placement: str):
    import ray

    from actors.rollout_worker import RolloutWorker
    from cluster.backends import PolicyFactory
    from cluster.placement import start_replicas
    from cluster.world_setup import imagined_setup

    setup = imagined_setup(_cfg(root, placement))
    handles = {
        s.prefix: start_replicas(s.cls, s.replicas, s.factory, name=f"{placement}-{s.prefix}")
        for s in setup.replicated
    }
    assert bool(handles) == (placement == "services")
    worker = RolloutWorker(
        PolicyFactory(str(root / "sft")),
        world=setup.make_world(handles),
        rollout=setup.rollout,
        worker_index=0,
    )
    try:
        return worker.run_groups(setup.sampler.sample(2), [0, 1], keep_frames=True)
    finally:
        for h in (h for hs in handles.values() for h in hs):
            ray.kill(h)


def test_colocated_and_service_placement_give_the_same_trajectories(ray_cluster, assets):
    services = _run_groups(assets, "services")
    colocated = _run_groups(assets, "colocated")
    assert [g.group_id for g in colocated] == [0, 1] and len(services) == 2
    for a, b in zip(services, colocated, strict=True):
        for name in ("images", "actions", "old_log_probs", "executed", "done", "rewards"):
            np.testing.assert_array_equal(getattr(a.rollout, name), getattr(b.rollout, name))
        assert a.key == b.key and a.task == b.task
    assert colocated[0].frames is not None and colocated[1].frames is None
    # the two groups of the call were stepped as one batch yet kept their own starts
    first = [g.rollout.images[:, 0] for g in colocated]
    assert not np.array_equal(first[0], first[1]) or colocated[0].task != colocated[1].task


def test_colocated_workers_build_the_world_model_co_evolution_refined(assets):
    """Co-evolution points the simulator at a refined checkpoint (``PostTrainRun.use_simulator``
    replaces the service's factory); colocated, the next world the workers get builds that one."""
    from cluster.world_setup import imagined_setup

    setup = imagined_setup(_cfg(assets, "colocated"))
    assert setup.replicated == [] and [s.prefix for s in setup.services] == ["sim", "reflector"]
    sim = setup.services[0]
    (assets / "refined").mkdir(exist_ok=True)
    sim.factory = dataclasses.replace(sim.factory, path=str(assets / "refined"))
    world = setup.make_world({})
    assert world._sim == sim.factory and world._reflector == setup.services[1].factory
