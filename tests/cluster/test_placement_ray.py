"""The two placements of imagination give the same trajectories for the same seeds: a rollout
worker acting through service replicas (Ray calls batched at the replicas) and one holding its
own world model and reflector (``cluster.placement: colocated``), with tiny trained-format
checkpoints of both models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cluster.config import ExperimentConfig, PostTrainConfig
from envs.config import EnvConfig

pytestmark = [pytest.mark.ray]
ENV = EnvConfig(image_size=16)


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


def test_colocated_and_service_placement_give_the_same_trajectories(ray_cluster, tiny_world):
    services = _run_groups(tiny_world, "services")
    colocated = _run_groups(tiny_world, "colocated")
    assert [g.group_id for g in colocated] == [0, 1] and len(services) == 2
    for a, b in zip(services, colocated, strict=True):
        for name in ("images", "actions", "old_log_probs", "executed", "done", "rewards"):
            np.testing.assert_array_equal(getattr(a.rollout, name), getattr(b.rollout, name))
        assert a.key == b.key and a.task == b.task
    assert colocated[0].frames is not None and colocated[1].frames is None
    # the two groups of the call were stepped as one batch yet kept their own starts
    first = [g.rollout.images[:, 0] for g in colocated]
    assert not np.array_equal(first[0], first[1]) or colocated[0].task != colocated[1].task


def test_colocated_workers_build_the_world_model_co_evolution_refined(tiny_world):
    """Co-evolution points the simulator at a refined checkpoint (``PostTrainRun.use_simulator``
    replaces the service's factory); colocated, the next world the workers get builds that one."""
    from cluster.world_setup import imagined_setup

    setup = imagined_setup(_cfg(tiny_world, "colocated"))
    assert setup.replicated == [] and [s.prefix for s in setup.services] == ["sim", "reflector"]
    sim = setup.services[0]
    (tiny_world / "refined").mkdir(exist_ok=True)
    sim.factory = dataclasses.replace(sim.factory, path=str(tiny_world / "refined"))
    world = setup.make_world({})
    assert world._sim == sim.factory and world._reflector == setup.services[1].factory
