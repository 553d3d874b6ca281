"""Rollout worker: an inference copy of the policy running RLOO groups in a world.

Wrap with ``ray.remote(**resources)(RolloutWorker)`` where it is created (``cluster/``). The
world is imagination (``actors.worlds.ImaginedWorld``: the simulator and reflector services)
or the real env (``actors.worlds.RealWorld``: the oracle, rewarded by the env's own success);
the worker runs the same acting loop in either. It holds no training state: the learner
publishes trainable weights (LoRA + heads) with a version, the worker copies them in place
before its next rollouts, and every trajectory records the version it came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from actors.config import RolloutConfig
from actors.rollout import GroupResult, act_in_chunks, sum_timings, to_trajectory_batch


class RolloutWorker:
    """Runs RLOO groups of rollouts.

    Args:
        policy_factory: builds the policy (in this process, on this worker's device).
        world: makes the environment groups (``ImaginedWorld`` or ``RealWorld``).
        rollout: rollout settings (group size, horizon, sampling width).
        worker_index: this worker's index (seeds: base seed + index).
        seed: base seed.
    """

    def __init__(
        self,
        policy_factory: Callable[[], Any],
        *,
        world: Any,
        rollout: RolloutConfig,
        worker_index: int,
        seed: int = 0,
    ):
        torch.set_num_threads(1)
        self.policy = policy_factory()
        self.policy.eval()
        self.world = world
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
        starts: list[Any],
        group_ids: list[int],
        *,
        keep_frames: bool = False,
        deterministic: bool = False,
    ) -> list[GroupResult]:
        """Run one group of ``group_size`` rollouts per start, all groups in one batch.

        Args:
            starts: what the world starts groups from (``InitialState`` or ``EvalJob``).
            group_ids: the learner's id of each group.
            keep_frames: keep the first group's frames (a video).
            deterministic: act with the mean action (imagined evaluation); otherwise sample
                at ``scale_factor`` times the policy's scale.
        """
        if not starts:
            return []
        n = self.cfg.group_size
        keys = []
        for gid in group_ids:
            keys.append(f"w{self.index}-g{gid}-{self._groups_run}")
            self._groups_run += 1
        explore_at = None
        if self.cfg.explore == "one_step" and not deterministic:
            # one policy step per group, shared by its rollouts (they reach it in one state)
            k = torch.randint(self.cfg.max_policy_steps, (len(starts),), generator=self.generator)
            explore_at = np.repeat(k.numpy(), n)  # (G * N,)
        # every group of this call steps together: one policy batch, one batched model call;
        # exploring at one step, a group's rollouts share the world's noise (one state until k)
        world = self.world.group(list(starts), n, keys, common_noise=explore_at is not None)
        rollout = act_in_chunks(
            self.policy,
            world,
            max_policy_steps=self.cfg.max_policy_steps,
            execute_steps=self.cfg.execute_steps,
            deterministic=deterministic,
            generator=self.generator,
            scale_factor=1.0 if deterministic else self.cfg.scale_factor,
            mirror=n if self.cfg.mirrored else 0,
            explore_at=explore_at,
            keep_frames=keep_frames,
        )
        results = []
        for j, (start, gid, key) in enumerate(zip(starts, group_ids, keys, strict=True)):
            task, instruction = self.world.describe(start)
            part = rollout.rows(slice(j * n, (j + 1) * n), timings=j == 0)
            results.append(
                GroupResult(
                    key=key,
                    group_id=gid,
                    policy_version=self.version,
                    task=task,
                    instruction=instruction,
                    rollout=part,
                    terminated=self.world.succeeded(part.rewards),
                    frames=part.frames if j == 0 else None,
                )
            )
        return results

    def rollout(
        self, starts: list[Any], group_ids: list[int], *, keep_frames: bool = False
    ) -> tuple[Any, dict[str, Any]]:
        """Run groups and return (the learner's TrajectoryBatch, a small summary).

        Called with ``num_returns=2`` so the driver fetches only the summary while the batch
        goes to the learner by reference. With ``keep_frames`` the summary carries the first
        group's frames (N, S, H, W, 3) for a video.
        """
        t0 = time.perf_counter()
        results = self.run_groups(starts, group_ids, keep_frames=keep_frames)
        batch = to_trajectory_batch(results, self.policy)
        return batch, self._summary(results, time.perf_counter() - t0, keep_frames=keep_frames)

    def imagine(
        self, starts: list[Any], group_ids: list[int], *, keep_frames: bool = False
    ) -> dict[str, Any]:
        """Evaluation in this worker's world: groups acted with the mean action (as in the
        real-env evaluation) and nothing kept for the learner; the summary of ``rollout``."""
        t0 = time.perf_counter()
        results = self.run_groups(starts, group_ids, deterministic=True, keep_frames=keep_frames)
        return self._summary(results, time.perf_counter() - t0, keep_frames=keep_frames)

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
            "group_ids": [r.group_id for r in results],
            "versions": [r.policy_version for r in results],
            "tasks": [r.task for r in results],
            "frames": results[0].frames if keep_frames else None,
            "caption": _caption(results[0]) if keep_frames else None,
            "recoveries": self.world.recoveries,
            "timings": sum_timings(r.rollout.timings for r in results),
        }

    def set_world(self, world: Any) -> None:
        """Act in another world from now on (co-evolution restarts the simulator replicas)."""
        self.world.close()
        self.world = world

    def ping(self) -> int:
        return self.version

    def close(self) -> None:
        """Free the world's envs (call before the process ends)."""
        self.world.close()


def _caption(g: GroupResult) -> dict[str, Any] | None:
    """What the video of group ``g`` says below its frames (``cluster.video.Caption``'s fields):
    the task, each rollout's final R, its ending, and the frame where it ended."""
    if g.frames is None or g.rollout.frames is None:
        return None
    first_step = g.frames.shape[1] - (g.rollout.frames.shape[1] - 1)  # after the context
    return {
        "task": g.task,
        "rewards": g.rewards,
        "terminated": g.terminated,
        "end_frame": first_step - 1 + g.rollout.steps,
        "first_step": first_step,
    }
