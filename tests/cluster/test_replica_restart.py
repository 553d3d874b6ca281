"""A dead service replica is restarted by Ray and the rollout worker's request is retried."""

from __future__ import annotations

import numpy as np
import pytest

from actors.clients import RayReflectorClient, RaySimulatorClient
from cluster.config import ReplicaConfig
from cluster.placement import start_replicas
from envs.config import EnvConfig
from envs.factory import make_env
from reflector_service.fake import FakeReflector
from reflector_service.service import ReflectorService
from simulator_service.fake import FakeWorldSimulator
from simulator_service.service import SimulatorService

pytestmark = pytest.mark.ray


class _FakeSim:
    def __init__(self, camera):
        self.camera = camera

    def __call__(self):
        return FakeWorldSimulator(self.camera)


def test_killed_replicas_restart_and_requests_retry(ray_cluster):
    ray = ray_cluster
    env = make_env(EnvConfig(image_size=32))
    obs = env.reset("lift_red", seed=0)
    rc = ReplicaConfig(num_cpus=0, max_restarts=2)
    sims = start_replicas(SimulatorService, rc, _FakeSim(env.camera), name="restart-sim")
    refls = start_replicas(ReflectorService, rc, FakeReflector, name="restart-refl")
    sim = RaySimulatorClient(sims, retry_wait_s=0.5, retries=5)
    refl = RayReflectorClient(refls, retry_wait_s=0.5, retries=5)
    frames = np.repeat(obs.image[None, None], 3, axis=0)  # (3, 1, H, W, 3)
    proprio = np.repeat(obs.proprio[None], 3, axis=0)
    sim.reset("g", frames, proprio)
    refl.reset("g", [obs.instruction] * 3, frames)
    before = sim.step("g", proprio)
    r_before = refl.score("g", before)

    ray.kill(sims[0], no_restart=False)
    ray.kill(refls[0], no_restart=False)
    after = sim.step("g", proprio)  # the replica lost the group: the client re-sends it
    r_after = refl.score("g", after)
    assert sim.recoveries >= 1 and refl.recoveries >= 1
    np.testing.assert_array_equal(after, before)  # the fake is deterministic given its context
    assert r_after.shape == r_before.shape == (3,)
    for a in [*sims, *refls]:
        ray.kill(a)
