"""Rollout worker: an inference copy of the policy driving imagined rollouts through the services.

Wrap with ``ray.remote(**resources)(RolloutWorker)`` where it is created (``cluster/placement``).
The worker holds no training state: the learner publishes trainable weights (LoRA + heads)
with a version, the worker copies them in place before its next rollouts, and every trajectory
records the version it came from. ``RealRolloutWorker`` runs the same groups in the real env
with its ground-truth success as the reward (``post_train.world: real``, the oracle).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from actors.clients import RayReflectorClient, RaySimulatorClient
from actors.config import RolloutConfig
from actors.evaluation import EnvPool, EvalJob
from actors.real_rollout import real_rollout_group
from actors.rollout import (
    GroupResult,
    ReflectorClient,
    SimulatorClient,
    rollout_group,
    to_trajectory_batch,
)
from trajectories.initial_states import InitialState


class RolloutWorker:
    """Runs RLOO groups of imagined rollouts.

    Args:
        policy_factory: builds the policy (in this process, on this worker's device).
        sim, reflector: service clients, or lists of Ray actor handles (replicas).
        rollout: rollout settings (group size, steps, eta).
        worker_index: this worker's index (seeds: base seed + index).
        seed: base seed.
        limits: controller limits for the kinematics (None: tabletop defaults).
    """

    def __init__(
        self,
        policy_factory: Callable[[], Any],
        *,
        sim: SimulatorClient | list[Any],
        reflector: ReflectorClient | list[Any],
        rollout: RolloutConfig,
        worker_index: int,
        seed: int = 0,
        limits: Any = None,
    ):
        if not 0.0 < rollout.eta < 1.0:
            raise ValueError(
                f"rollout worker needs a termination eta in (0, 1), got {rollout.eta}: "
                "resolve 0 with reflector_service.checkpoint.termination_eta first"
            )
        self._setup(policy_factory, rollout, worker_index, seed)
        self.sim = RaySimulatorClient(sim) if isinstance(sim, list) else sim
        self.reflector = RayReflectorClient(reflector) if isinstance(reflector, list) else reflector
        self.limits = limits

    def _setup(
        self,
        policy_factory: Callable[[], Any],
        rollout: RolloutConfig,
        worker_index: int,
        seed: int,
    ) -> None:
        torch.set_num_threads(1)
        self.policy = policy_factory()
        self.policy.eval()
        self.cfg = rollout
        self.index = worker_index
        self.version = 0
        self.generator = torch.Generator().manual_seed(seed + worker_index)
        self._groups_run = 0

    def load_weights(self, published: tuple[int, dict[str, torch.Tensor]]) -> int:
        """Copy published (version, trainable weights) into the policy in place; returns
        the version."""
        version, state = published
        self.policy.load_trainable_state_dict(state)
        self.version = int(version)
        return self.version

    def run_groups(
        self,
        inits: list[InitialState],
        group_ids: list[int],
        *,
        keep_frames: bool = False,
        deterministic: bool = False,
    ) -> list[GroupResult]:
        """Run one group per initial state."""
        results = []
        for init, gid in zip(inits, group_ids, strict=True):
            key = f"w{self.index}-g{gid}-{self._groups_run}"
            self._groups_run += 1
            results.append(
                rollout_group(
                    self.policy,
                    self.sim,
                    self.reflector,
                    init,
                    key=key,
                    group_id=gid,
                    group_size=self.cfg.group_size,
                    max_policy_steps=self.cfg.max_policy_steps,
                    execute_steps=self.cfg.execute_steps,
                    eta=self.cfg.eta,
                    policy_version=self.version,
                    generator=self.generator,
                    limits=self.limits,
                    keep_frames=keep_frames and not results,
                    deterministic=deterministic,
                )
            )
        return results

    def rollout(
        self, inits: list[InitialState], group_ids: list[int], *, keep_frames: bool = False
    ) -> tuple[Any, dict[str, Any]]:
        """Run groups and return (the learner's TrajectoryBatch, a small summary).

        Called with ``num_returns=2`` so the driver fetches only the summary while the batch
        goes to the learner by reference. With ``keep_frames`` the summary carries the first
        group's imagined frames (N, S, H, W, 3) for a video.
        """
        t0 = time.perf_counter()
        results = self.run_groups(inits, group_ids, keep_frames=keep_frames)
        batch = to_trajectory_batch(results, self.policy)
        return batch, self._summary(results, time.perf_counter() - t0, keep_frames=keep_frames)

    def imagine(self, inits: list[InitialState], group_ids: list[int]) -> dict[str, Any]:
        """Imagined evaluation: groups acted with the mean action (as in the real-env
        evaluation) and nothing kept for the learner; returns the summary of ``rollout``."""
        t0 = time.perf_counter()
        results = self.run_groups(inits, group_ids, deterministic=True)
        return self._summary(results, time.perf_counter() - t0, keep_frames=False)

    def _summary(
        self, results: list[GroupResult], seconds: float, *, keep_frames: bool
    ) -> dict[str, Any]:
        return {
            "worker": self.index,
            "rollout_s": seconds,
            "env_steps": sum(r.env_steps for r in results),
            "rewards": np.concatenate([r.rewards for r in results]),
            "terminated": np.concatenate([r.terminated for r in results]),
            "lengths": np.concatenate([r.lengths for r in results]),
            "versions": [r.policy_version for r in results],
            "tasks": [r.init.task_id for r in results],
            "frames": results[0].frames if keep_frames else None,
            "recoveries": self._recoveries(),
        }

    def _recoveries(self) -> int:
        return self.sim.recoveries + self.reflector.recoveries

    def ping(self) -> int:
        return self.version


class RealRolloutWorker(RolloutWorker):
    """Runs RLOO groups in the real environment with its ground-truth success as the reward
    (``post_train.world: real``; ``actors/real_rollout.py``); starts are ``EvalJob`` (task,
    seed), and everything else (weights, versions, summaries, the learner's batch) is as for
    imagined groups.

    Args:
        policy_factory: builds the policy.
        env_factory: builds one real env; the worker keeps ``group_size`` of them.
        rollout: rollout settings (group size, horizon; eta is not used).
        worker_index, seed: as for ``RolloutWorker``.
    """

    def __init__(
        self,
        policy_factory: Callable[[], Any],
        *,
        env_factory: Callable[[], Any],
        rollout: RolloutConfig,
        worker_index: int,
        seed: int = 0,
    ):
        self._setup(policy_factory, rollout, worker_index, seed)
        self.envs = EnvPool(env_factory)

    def run_groups(
        self,
        inits: list[EvalJob],
        group_ids: list[int],
        *,  # type: ignore[override]
        keep_frames: bool = False,
        deterministic: bool = False,
    ) -> list[GroupResult]:
        envs = self.envs.take(self.cfg.group_size)
        results = []
        for start, gid in zip(inits, group_ids, strict=True):
            self._groups_run += 1
            results.append(
                real_rollout_group(
                    self.policy,
                    envs,
                    start,
                    group_id=gid,
                    max_policy_steps=self.cfg.max_policy_steps,
                    execute_steps=self.cfg.execute_steps,
                    policy_version=self.version,
                    generator=self.generator,
                    keep_frames=keep_frames and not results,
                    deterministic=deterministic,
                )
            )
        return results

    def _recoveries(self) -> int:
        return 0
