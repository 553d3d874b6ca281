"""The batch of imagined trajectories that the learner trains on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrajectoryBatch:
    """B trajectories of T policy steps each, padded after termination.

    One policy step is one action chunk. Steps after a trajectory's first ``done`` are padding:
    their contents are ignored (they may hold anything, NaN included).

    Attributes:
        obs: what the policy needs to score an action chunk, opaque to the learner; every
            tensor has leading dims (B, T, ...).
        actions: (B, T, chunk, A) the action chunks taken.
        old_log_probs: (B, T) log p_old of those chunks under the policy that acted.
        rewards: (B,) trajectory rewards (reflector reward at termination, or at T).
        done: (B, T) bool, True at the step where the trajectory terminated.
        group_ids: (B,) int64, trajectories sharing an initial state share an id (RLOO groups).
        policy_version: (B,) int64, the weights version that collected each trajectory.
    """

    obs: dict[str, torch.Tensor]
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    rewards: torch.Tensor
    done: torch.Tensor
    group_ids: torch.Tensor
    policy_version: torch.Tensor

    def __post_init__(self) -> None:
        if self.old_log_probs.ndim != 2:
            raise ValueError(
                f"TrajectoryBatch.old_log_probs must have shape (B, T), "
                f"got {tuple(self.old_log_probs.shape)}"
            )
        b, t = self.old_log_probs.shape
        expected = {
            "actions": (self.actions, (b, t), 4, "(B, T, chunk, A)"),
            "rewards": (self.rewards, (b,), 1, "(B,)"),
            "done": (self.done, (b, t), 2, "(B, T)"),
            "group_ids": (self.group_ids, (b,), 1, "(B,)"),
            "policy_version": (self.policy_version, (b,), 1, "(B,)"),
        }
        for name, (value, lead, ndim, shape) in expected.items():
            if (
                not isinstance(value, torch.Tensor)
                or value.ndim != ndim
                or (tuple(value.shape[: len(lead)]) != lead)
            ):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"TrajectoryBatch.{name} must have shape {shape} with B={b}, T={t} "
                    f"(from old_log_probs), got {got}"
                )
        if not self.obs:
            raise ValueError("TrajectoryBatch.obs is empty: the policy needs observations")
        for key, value in self.obs.items():
            if not isinstance(value, torch.Tensor) or tuple(value.shape[:2]) != (b, t):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"TrajectoryBatch.obs[{key!r}] must have leading dims (B, T) = ({b}, {t}), "
                    f"got {got}"
                )
        if not self.rewards.is_floating_point():
            raise ValueError(
                f"TrajectoryBatch.rewards must be floating point, got {self.rewards.dtype}"
            )
        self.done = self.done.bool()
        self.group_ids = self.group_ids.long()
        self.policy_version = self.policy_version.long()

    @property
    def batch_size(self) -> int:
        """B, the number of trajectories."""
        return self.old_log_probs.shape[0]

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        """The same batch with every tensor on ``device``."""
        return TrajectoryBatch(
            obs={k: v.to(device) for k, v in self.obs.items()},
            actions=self.actions.to(device),
            old_log_probs=self.old_log_probs.to(device),
            rewards=self.rewards.to(device),
            done=self.done.to(device),
            group_ids=self.group_ids.to(device),
            policy_version=self.policy_version.to(device),
        )

    def index(self, idx: torch.Tensor) -> TrajectoryBatch:
        """The trajectories ``idx`` ((K,) int64 indices), in that order."""
        return TrajectoryBatch(
            obs={k: v[idx] for k, v in self.obs.items()},
            actions=self.actions[idx],
            old_log_probs=self.old_log_probs[idx],
            rewards=self.rewards[idx],
            done=self.done[idx],
            group_ids=self.group_ids[idx],
            policy_version=self.policy_version[idx],
        )
