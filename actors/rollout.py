"""The one acting loop: a policy acting in chunks on a group of environments, imagined or real.

Every rollout runs through ``act_in_chunks``: training groups in imagination and in the real env
(the oracle), the imagined evaluation and the real-env evaluation. Environments come behind one
batched ``EnvGroup`` protocol (``reset`` / ``step`` over N environments), whose two
implementations live in ``actors/worlds.py``: the imagined group (kinematics + world simulator
+ reflector) and the real group (a pool of real envs). One policy step is one action chunk;
``execute_steps`` actions of it run (each one env step) before the policy acts again. An
environment ends when its group says so (reflector R > eta, the env's success or limit) or at
the horizon; its trajectory reward is the reward of its last step and the steps after its end
are padding. Ended environments leave the policy's batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from policy.distribution import laplace_log_density, laplace_noise


@dataclass
class Step:
    """What ``EnvGroup.step`` returns for its N environments.

    Attributes:
        obs: the policy's batch of the new observations: "image" (N, H, W, 3) uint8,
            "proprio" (N, 8), "instruction" (N strings), optional "wrist_image".
        reward: (N,) the reward of this step (reflector R, or 1.0 at real success).
        done: (N,) bool, the environment ended with this step.
    """

    obs: dict[str, Any]
    reward: np.ndarray
    done: np.ndarray


class EnvGroup(Protocol):
    """N environments stepped together (``actors/worlds.py``: imagined and real groups).

    ``step`` gets an action for every environment and the mask of those still running: the
    others ignore theirs and keep their last observation (their rows are padding).
    """

    n: int

    def reset(self) -> dict[str, Any]:
        """Start the N episodes; returns the policy's batch of first observations."""
        ...

    def step(self, actions: np.ndarray, active: np.ndarray) -> Step:
        """actions: (N, 7) env actions; active: (N,) bool."""
        ...

    def close(self) -> None:
        """Free what the group holds (service state)."""
        ...


@dataclass
class Rollout:
    """What a policy did in one group of N environments, T policy steps (padded after ``done``).

    Attributes:
        images: (N, T, H, W, 3) uint8 observation at each policy step.
        proprio: (N, T, 8).
        actions: (N, T, chunk, A) normalized action chunks taken.
        old_log_probs: (N, T, chunk, A) log-densities of those actions under the acting
            policy, per action dimension.
        executed: (N, T, chunk) bool, the sampled actions that ran in the environment (what the
            learner trains on; with ``explore_at`` the mean-action steps are not marked).
        done: (N, T) bool, exactly one True per row: the step where the rollout ended.
        rewards: (N,) the reward of each rollout's last step.
        steps: (N,) env steps each rollout took.
        frames: (N, 1 + S, H, W, 3) the first observation then one per env step (ended
            rollouts repeat their last frame), or None.
        timings: seconds spent acting: "policy_s" (the policy's forward passes), "env_s"
            (the group's steps), and what the group itself measured inside its steps
            (``EnvGroup.timings``: the imagined group's kinematics, world-model and reflector
            calls).
    """

    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    old_log_probs: np.ndarray
    executed: np.ndarray
    done: np.ndarray
    rewards: np.ndarray
    steps: np.ndarray
    frames: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env_steps(self) -> int:
        return int(self.steps.sum())

    def rows(self, rows: slice, *, timings: bool) -> Rollout:
        """The rollouts of some environments (one group of a batch of groups); ``timings``:
        keep the batch's timings (give them to one part only, so that sums stay right)."""
        return Rollout(
            images=self.images[rows],
            proprio=self.proprio[rows],
            actions=self.actions[rows],
            old_log_probs=self.old_log_probs[rows],
            executed=self.executed[rows],
            done=self.done[rows],
            rewards=self.rewards[rows],
            steps=self.steps[rows],
            frames=None if self.frames is None else self.frames[rows],
            timings=dict(self.timings) if timings else {},
        )

    @property
    def lengths(self) -> np.ndarray:
        """(N,) policy steps until the end, inclusive."""
        return self.done.argmax(axis=1) + 1


def _rows(batch: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The policy batch of some environments only."""
    out = {}
    for k, v in batch.items():
        if v is None:
            out[k] = None
        elif isinstance(v, list):
            out[k] = [v[i] for i in rows]
        else:
            out[k] = np.asarray(v)[rows]
    return out


def act_in_chunks(
    policy: Any,
    env: EnvGroup,
    *,
    max_policy_steps: int,
    execute_steps: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    scale_factor: float = 1.0,
    mirror: int = 0,
    explore_at: np.ndarray | None = None,
    replay: np.ndarray | None = None,
    keep_frames: bool = False,
) -> Rollout:
    """Run the group until every environment has ended or the horizon is reached.

    Args:
        policy: ``act(batch, deterministic, generator=, scale_factor=[, noise=]) -> (actions,
            log_density, mu, log_scale)`` and ``to_env_actions``; see ``policy.policy.Policy``
            (``noise`` only with ``mirror``, which also reads ``policy.cfg.chunk`` and
            ``.action_dim``).
        env: the group; it is reset here and closed at the end (also on errors).
        max_policy_steps: the horizon in policy steps (action chunks).
        execute_steps: actions of each chunk executed before the policy acts again.
        deterministic: act with the mean action mu (evaluation).
        generator: the sampling noise.
        scale_factor: sampling width multiplier (``Policy.act``).
        mirror: mirrored (antithetic) sampling: the environments come in consecutive groups
            of this many (even), and at every policy step the second half of each group acts
            with the negated standard noise of the first half (``-eps``; 0: independent noise).
            Each rollout is still a sample of the policy; pairs differ only in the noise's sign.
        explore_at: (N,) the one policy step at which each environment samples; at every
            other step it acts with the mean action, and those actions are not marked
            ``executed`` (the learner trains on sampled actions only). None: every step samples.
        replay: (N, chunk, A) the chunks to take at ``explore_at`` instead of sampling (another
            world's search replayed here: an imagined group's chunks in the real env); needs
            ``explore_at``.
        keep_frames: also return every frame (videos).
    """
    if mirror and (mirror % 2 or env.n % mirror):
        raise ValueError(
            f"mirrored sampling needs an even group size dividing the {env.n} environments, "
            f"got {mirror}"
        )
    if replay is not None and (explore_at is None or deterministic):
        raise ValueError("replayed chunks need explore_at and a sampling (not deterministic) run")
    try:
        obs = env.reset()
        n = env.n
        active = np.ones(n, dtype=bool)
        rewards = np.zeros(n, dtype=np.float64)
        steps = np.zeros(n, dtype=np.int64)
        images, proprios, actions, logps, executed, dones = [], [], [], [], [], []
        frames = [np.asarray(obs["image"])] if keep_frames else []
        policy_s = env_s = 0.0
        for t in range(max_policy_steps):
            rows = np.nonzero(active)[0]
            t0 = time.perf_counter()
            noise = None
            if mirror and not deterministic:
                noise = _mirrored_noise(n, mirror, policy.cfg, generator)[torch.from_numpy(rows)]
            a, logp, mu, log_scale = policy.act(
                _rows(obs, rows),
                deterministic=deterministic,
                generator=generator,
                scale_factor=scale_factor,
                **({} if noise is None else {"noise": noise}),
            )
            if explore_at is not None and not deterministic:
                sampled = torch.from_numpy(explore_at[rows] == t)  # (R,)
                if replay is not None:
                    a = torch.from_numpy(replay[rows]).to(mu)
                a = torch.where(sampled[:, None, None], a, mu)
                logp = laplace_log_density(a, mu, log_scale)
            a_np = a.float().cpu().numpy()  # (R, chunk, A)
            chunk_a = np.zeros((n, *a_np.shape[1:]), dtype=np.float32)
            chunk_lp = np.zeros((n, *a_np.shape[1:]), dtype=np.float32)
            chunk_a[rows], chunk_lp[rows] = a_np, logp.float().cpu().numpy()
            env_a = np.zeros((n, a_np.shape[1], 7), dtype=np.float32)
            env_a[rows] = policy.to_env_actions(a)  # (R, chunk, 7)
            policy_s += time.perf_counter() - t0
            images.append(np.asarray(obs["image"]))
            proprios.append(np.asarray(obs["proprio"], dtype=np.float32))
            actions.append(chunk_a)
            logps.append(chunk_lp)
            done_now = np.zeros(n, dtype=bool)
            ran = np.zeros((n, a_np.shape[1]), dtype=bool)  # (N, chunk)
            learn = active if explore_at is None or deterministic else active & (explore_at == t)
            for k in range(min(execute_steps, a_np.shape[1])):
                ran[:, k] = learn & active
                steps += active
                t0 = time.perf_counter()
                step = env.step(env_a[:, k], active.copy())
                env_s += time.perf_counter() - t0
                obs = step.obs
                # non-finite rewards pass through: the learner skips (and counts) such updates
                rewards = np.where(active, np.asarray(step.reward, dtype=np.float64), rewards)
                stop = active & np.asarray(step.done, dtype=bool)
                done_now |= stop
                active &= ~stop
                if keep_frames:
                    frames.append(np.asarray(obs["image"]))
                if not active.any():
                    break
            if t == max_policy_steps - 1:
                done_now |= active
                active[:] = False
            dones.append(done_now)
            executed.append(ran)
            if not active.any():
                break
    finally:
        env.close()
    return Rollout(
        images=np.stack(images, axis=1),
        proprio=np.stack(proprios, axis=1),
        actions=np.stack(actions, axis=1),
        old_log_probs=np.stack(logps, axis=1),
        executed=np.stack(executed, axis=1),
        done=np.stack(dones, axis=1),
        rewards=rewards,
        steps=steps,
        frames=np.stack(frames, axis=1) if keep_frames else None,
        timings={"policy_s": policy_s, "env_s": env_s, **getattr(env, "timings", {})},
    )


def _mirrored_noise(n: int, size: int, cfg: Any, generator: torch.Generator | None) -> torch.Tensor:
    """(n, chunk, A) standard Laplace noise, the second half of each group of ``size`` rows the
    negation of its first half."""
    half = laplace_noise((n // size, size // 2, cfg.chunk, cfg.action_dim), generator=generator)
    return torch.cat([half, -half], dim=1).flatten(0, 1)


def sum_timings(timings: Any) -> dict[str, float]:
    """Sum ``Rollout.timings``-like dicts key by key (over rollouts, workers)."""
    out: dict[str, float] = {}
    for t in timings:
        for k, v in t.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


@dataclass
class GroupResult:
    """One RLOO group: N rollouts from one start, as the learner and the driver see it.

    Attributes:
        rollout: the rollouts (``Rollout``).
        terminated: (N,) bool, the rollout ended by the task's success (real: the env's
            success; imagined: the reflector's R > eta), not by the horizon.
        task, instruction: the start's task and its language goal.
        frames: (N, T0 + S, H, W, 3) context then every frame (videos), or None.
    """

    key: str
    group_id: int
    policy_version: int
    task: str
    instruction: str
    rollout: Rollout
    terminated: np.ndarray
    frames: np.ndarray | None = None

    @property
    def rewards(self) -> np.ndarray:
        return self.rollout.rewards

    @property
    def lengths(self) -> np.ndarray:
        return self.rollout.lengths

    @property
    def env_steps(self) -> int:
        return self.rollout.env_steps


def to_trajectory_batch(results: list[GroupResult], policy: Any) -> Any:
    """The learner's ``TrajectoryBatch`` of some groups (tokenized instructions included).

    Observations: "image" (B, T, H, W, 3) uint8, "proprio" (B, T, 8), "input_ids" (B, T, L)
    and "lengths" (B, T), which is what ``policy.log_density`` reads.
    """
    from learner.batch import TrajectoryBatch

    if not results:
        raise ValueError("no groups to batch")
    rolls = [r.rollout for r in results]
    t = max(x.done.shape[1] for x in rolls)

    def pad(x: np.ndarray) -> np.ndarray:
        short = t - x.shape[1]
        return x if short == 0 else np.concatenate([x, np.repeat(x[:, -1:], short, axis=1)], axis=1)

    def cat(name: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([pad(getattr(x, name)) for x in rolls]))

    instructions = [r.instruction for r in results for _ in range(len(r.rewards))]
    ids, lengths = policy.tokenize(instructions)  # (B, L), (B,)
    b = len(instructions)
    done = [
        np.concatenate([x.done, np.zeros((len(x.done), t - x.done.shape[1]), bool)], 1)
        for x in rolls
    ]
    return TrajectoryBatch(
        obs={
            "image": cat("images"),
            "proprio": cat("proprio"),
            "input_ids": ids[:, None].expand(b, t, ids.shape[1]).contiguous(),
            "lengths": lengths[:, None].expand(b, t).contiguous(),
        },
        actions=cat("actions"),
        old_log_probs=cat("old_log_probs"),
        executed=cat("executed"),
        rewards=torch.from_numpy(np.concatenate([x.rewards for x in rolls]).astype(np.float32)),
        done=torch.from_numpy(np.concatenate(done)),
        group_ids=torch.from_numpy(
            np.concatenate([np.full(len(r.rewards), r.group_id) for r in results])
        ),
        policy_version=torch.from_numpy(
            np.concatenate([np.full(len(r.rewards), r.policy_version) for r in results])
        ),
    )
