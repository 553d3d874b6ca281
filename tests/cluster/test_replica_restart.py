"""A dead service replica is restarted by Ray and the rollout worker's request is retried."""

from __future__ import annotations

import time

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


def _kill_and_wait_for_restart(ray, handle, timeout_s: float = 120.0) -> None:
    """Kill a replica and wait until its restarted instance answers (``ray.kill`` returns
    before the actor is gone, so a request sent at once may still reach the old one)."""
    started = time.time() - ray.get(handle.stats.remote())["uptime_s"]
    ray.kill(handle, no_restart=False)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if time.time() - ray.get(handle.stats.remote(), timeout=10)["uptime_s"] > started + 0.5:
                return
        except Exception:  # dead or restarting
            pass
        time.sleep(0.2)
    raise AssertionError("the killed replica did not come back")


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
    (before,) = sim.step_many([("g", proprio)])
    r_before = refl.score("g", before)

    for h in (sims[0], refls[0]):
        _kill_and_wait_for_restart(ray, h)
    (after,) = sim.step_many([("g", proprio)])  # the replica lost the group: the client re-sends it
    r_after = refl.score("g", after)
    assert sim.recoveries >= 1 and refl.recoveries >= 1
    np.testing.assert_array_equal(after, before)  # the fake is deterministic given its context
    assert r_after.shape == r_before.shape == (3,)
    for a in [*sims, *refls]:
        ray.kill(a)
