"""Imagined rollouts of one RLOO group: policy -> kinematics -> world simulator -> reflector.

Plain Python over two small client interfaces, so the same loop runs against in-process models
(tests, ``--workers 0``) and against Ray service replicas (``actors/rollout_worker.py``).
One policy step is one action chunk; ``execute_steps`` actions of it are executed (each one an
imagined frame and a reflector score) before the policy acts again. An environment terminates
when the reflector's reward exceeds eta; its trajectory reward is R at termination (or at the
last step) and the steps after termination are padding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from envs.kinematics import next_proprio
from trajectories.initial_states import InitialState


class SimulatorClient(Protocol):
    """A world simulator holding the imagined state of named groups of environments."""

    recoveries: int  # times a group's state was re-sent after a replica restart

    def reset(self, key: str, frames: np.ndarray, proprio: np.ndarray) -> None:
        """frames: (N, T0, H, W, 3) uint8 context (last = current); proprio: (N, 8)."""
        ...

    def step(self, key: str, next_proprio: np.ndarray) -> np.ndarray:
        """next_proprio: (N, 8) -> next frames (N, H, W, 3) uint8."""
        ...

    def release(self, key: str) -> None: ...


class ReflectorClient(Protocol):
    """A reflector scoring named groups of environments incrementally."""

    recoveries: int

    def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        """Start N episodes from context frames (N, T0, H, W, 3); returns rewards (N,) now."""
        ...

    def score(self, key: str, frames: np.ndarray) -> np.ndarray:
        """Add one frame per environment (N, H, W, 3); returns rewards (N,) in [0, 1]."""
        ...

    def release(self, key: str) -> None: ...


@dataclass
class GroupResult:
    """N imagined trajectories of one group, T policy steps each (padded after ``done``).

    Attributes:
        images: (N, T, H, W, 3) uint8 observation at each policy step.
        proprio: (N, T, 8).
        actions: (N, T, chunk, A) normalized action chunks taken.
        old_log_probs: (N, T) log p of those chunks under the acting policy.
        done: (N, T) bool, True at the step where a trajectory ended.
        rewards: (N,) reflector reward at termination (or at the last step).
        terminated: (N,) bool, the reflector stopped the episode (R > eta).
        frames: (N, T0 + S, H, W, 3) the context then every imagined frame (videos), or None.
    """

    key: str
    group_id: int
    policy_version: int
    init: InitialState
    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    old_log_probs: np.ndarray
    done: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    env_steps: int
    frames: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        """(N,) policy steps until termination, inclusive."""
        return self.done.argmax(axis=1) + 1


@dataclass
class ChunkRecord:
    """What the policy did in one group, T policy steps (padded after ``done``): see
    ``GroupResult`` for the shapes."""

    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    old_log_probs: np.ndarray
    done: np.ndarray
    env_steps: int


def act_in_chunks(
    policy: Any,
    observe: Callable[[], dict[str, Any]],
    advance: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    n: int,
    max_policy_steps: int,
    execute_steps: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> ChunkRecord:
    """The loop of one group, shared by imagined and real rollouts.

    The policy acts on the N current observations, then up to ``execute_steps`` actions of the
    chunk run, each through ``advance``, until every rollout has ended or the horizon is
    reached.

    Args:
        observe: () -> the policy's batch: "image" (N, H, W, 3), "proprio" (N, 8), "instruction".
        advance: (env_actions (N, 7), active (N,) bool) -> stop (N,) bool: run one action of the
            active rollouts and say which of them ended with it.
    Returns:
        the record; ``done`` (N, T) holds exactly one True per row.
    """
    active = np.ones(n, dtype=bool)
    images, proprios, actions, logps, dones = [], [], [], [], []
    env_steps = 0
    for t in range(max_policy_steps):
        batch = observe()
        a, logp, _mu, _log_scale = policy.act(
            batch, deterministic=deterministic, generator=generator
        )
        env_a = policy.to_env_actions(a)  # (N, chunk, 7)
        images.append(np.asarray(batch["image"]))
        proprios.append(np.asarray(batch["proprio"], dtype=np.float32))
        actions.append(a.float().cpu().numpy())
        logps.append(logp.float().cpu().numpy())
        done_now = np.zeros(n, dtype=bool)
        for k in range(min(execute_steps, env_a.shape[1])):
            env_steps += int(active.sum())
            stop = active & advance(env_a[:, k], active.copy())
            done_now |= stop
            active &= ~stop
            if not active.any():
                break
        if t == max_policy_steps - 1:
            done_now |= active
            active[:] = False
        dones.append(done_now)
        if not active.any():
            break
    return ChunkRecord(
        images=np.stack(images, axis=1),
        proprio=np.stack(proprios, axis=1),
        actions=np.stack(actions, axis=1),
        old_log_probs=np.stack(logps, axis=1),
        done=np.stack(dones, axis=1),
        env_steps=env_steps,
    )


def rollout_group(
    policy: Any,
    sim: SimulatorClient,
    reflector: ReflectorClient,
    init: InitialState,
    *,
    key: str,
    group_id: int,
    group_size: int,
    max_policy_steps: int,
    execute_steps: int,
    eta: float,
    policy_version: int,
    generator: torch.Generator | None = None,
    limits: Any = None,
    keep_frames: bool = False,
    deterministic: bool = False,
) -> GroupResult:
    """Run ``group_size`` imagined rollouts from one initial state.

    Args:
        policy: ``act(batch, generator=...) -> (actions, log_probs, mu, log_scale)`` and
            ``to_env_actions``; see ``policy.policy.Policy``.
        sim, reflector: clients of the world simulator and the reflector.
        init: the shared initial state.
        key: name of this group at the services (unique while it runs).
        execute_steps: actions of each chunk executed before acting again (<= chunk).
        limits: controller limits for the kinematics (None: the tabletop defaults).
        deterministic: act with the mean action mu, as the real-env evaluation does (imagined
            evaluation); the group's rollouts then differ only by the world model's noise.
    """
    n = group_size
    frames0 = np.repeat(init.frames[None], n, axis=0)  # (N, T0, H, W, 3)
    state = {
        "image": frames0[:, -1],
        "proprio": np.repeat(init.proprio[None].astype(np.float32), n, axis=0),
        "instruction": [init.instruction] * n,
    }
    sim.reset(key, frames0, state["proprio"])
    rewards = np.asarray(reflector.reset(key, state["instruction"], frames0), dtype=np.float64)
    video = [state["image"]] if keep_frames else []

    def advance(env_a: np.ndarray, active: np.ndarray) -> np.ndarray:
        nonlocal rewards
        # every environment of the group steps (the services batch them); ended ones
        # keep their reward
        state["proprio"] = next_proprio(state["proprio"], env_a, limits=limits).astype(np.float32)
        state["image"] = sim.step(key, state["proprio"])
        # non-finite rewards pass through: the learner skips (and counts) such updates
        r = np.asarray(reflector.score(key, state["image"]), dtype=np.float64)
        rewards = np.where(active, r, rewards)
        if keep_frames:
            video.append(state["image"])
        return r > eta

    try:
        rec = act_in_chunks(
            policy,
            lambda: dict(state),
            advance,
            n=n,
            max_policy_steps=max_policy_steps,
            execute_steps=execute_steps,
            deterministic=deterministic,
            generator=generator,
        )
    finally:
        sim.release(key)
        reflector.release(key)
    return GroupResult(
        key=key,
        group_id=group_id,
        policy_version=policy_version,
        init=init,
        images=rec.images,
        proprio=rec.proprio,
        actions=rec.actions,
        old_log_probs=rec.old_log_probs,
        done=rec.done,
        rewards=rewards.astype(np.float32),
        terminated=rewards > eta,
        env_steps=rec.env_steps,
        frames=np.concatenate([frames0[:, :-1], np.stack(video, axis=1)], axis=1)
        if keep_frames
        else None,
    )


def to_trajectory_batch(results: list[GroupResult], policy: Any) -> Any:
    """The learner's ``TrajectoryBatch`` of some groups (tokenized instructions included).

    Observations: "image" (B, T, H, W, 3) uint8, "proprio" (B, T, 8), "input_ids" (B, T, L)
    and "lengths" (B, T), which is what ``policy.log_prob`` reads.
    """
    from learner.batch import TrajectoryBatch

    if not results:
        raise ValueError("no groups to batch")
    t = max(r.old_log_probs.shape[1] for r in results)

    def pad(x: np.ndarray) -> np.ndarray:
        short = t - x.shape[1]
        return x if short == 0 else np.concatenate([x, np.repeat(x[:, -1:], short, axis=1)], axis=1)

    instructions = [r.init.instruction for r in results for _ in range(len(r.rewards))]
    ids, lengths = policy.tokenize(instructions)  # (B, L), (B,)
    b = len(instructions)
    done = [
        np.concatenate([r.done, np.zeros((len(r.done), t - r.done.shape[1]), bool)], axis=1)
        for r in results
    ]
    return TrajectoryBatch(
        obs={
            "image": torch.from_numpy(np.concatenate([pad(r.images) for r in results])),
            "proprio": torch.from_numpy(np.concatenate([pad(r.proprio) for r in results])),
            "input_ids": ids[:, None].expand(b, t, ids.shape[1]).contiguous(),
            "lengths": lengths[:, None].expand(b, t).contiguous(),
        },
        actions=torch.from_numpy(np.concatenate([pad(r.actions) for r in results])),
        old_log_probs=torch.from_numpy(np.concatenate([pad(r.old_log_probs) for r in results])),
        rewards=torch.from_numpy(np.concatenate([r.rewards for r in results])),
        done=torch.from_numpy(np.concatenate(done)),
        group_ids=torch.from_numpy(
            np.concatenate([np.full(len(r.rewards), r.group_id) for r in results])
        ),
        policy_version=torch.from_numpy(
            np.concatenate([np.full(len(r.rewards), r.policy_version) for r in results])
        ),
    )
