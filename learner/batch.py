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
        old_log_probs: (B, T, chunk, A) log-densities of those actions under the policy that
            acted, per action dimension (the learner sums them into its PPO ratio units).
        executed: (B, T, chunk) bool, the actions of each chunk that ran in the environment
            (an episode that ends mid-chunk, or ``execute_steps`` < chunk, leaves the rest).
        rewards: (B,) trajectory rewards (reflector reward at termination, or at T).
        done: (B, T) bool, True at the step where the trajectory terminated.
        group_ids: (B,) int64, trajectories sharing an initial state share an id (RLOO groups).
        policy_version: (B,) int64, the weights version that collected each trajectory.
    """

    obs: dict[str, torch.Tensor]
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    executed: torch.Tensor
    rewards: torch.Tensor
    done: torch.Tensor
    group_ids: torch.Tensor
    policy_version: torch.Tensor

    def __post_init__(self) -> None:
        if self.old_log_probs.ndim != 4:
            raise ValueError(
                f"TrajectoryBatch.old_log_probs must have shape (B, T, chunk, A), "
                f"got {tuple(self.old_log_probs.shape)}"
            )
        b, t, c, a = self.old_log_probs.shape
        expected = {
            "actions": (self.actions, (b, t, c, a), 4, "(B, T, chunk, A)"),
            "executed": (self.executed, (b, t, c), 3, "(B, T, chunk)"),
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
                    f"TrajectoryBatch.{name} must have shape {shape} with B={b}, T={t}, "
                    f"chunk={c}, A={a} (from old_log_probs), got {got}"
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
        self.executed = self.executed.bool()
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
            executed=self.executed.to(device),
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
            executed=self.executed[idx],
            rewards=self.rewards[idx],
            done=self.done[idx],
            group_ids=self.group_ids[idx],
            policy_version=self.policy_version[idx],
        )


def _pad_time(x: torch.Tensor, t: int, *, dim: int = 1) -> torch.Tensor:
    """Pad ``x`` along ``dim`` to length ``t`` by repeating its last slice (padding is masked)."""
    short = t - x.shape[dim]
    if short <= 0:
        return x
    last = x.narrow(dim, x.shape[dim] - 1, 1)
    return torch.cat([x, last.expand(*[short if d == dim else -1 for d in range(x.ndim)])], dim=dim)


def _pad_last(x: torch.Tensor, n: int, value: int) -> torch.Tensor:
    """Pad the last dim of an integer tensor to ``n`` with ``value`` (token padding)."""
    short = n - x.shape[-1]
    if short <= 0:
        return x
    return torch.nn.functional.pad(x, (0, short), value=value)


def concat_batches(
    batches: list[TrajectoryBatch], *, pad_ids: dict[str, int] | None = None
) -> TrajectoryBatch:
    """Join batches from several rollout workers into one (B = sum of Bs, T = max of Ts).

    Shorter batches are padded along T after their trajectories' ``done`` step (padding is
    masked by the learner). Integer observation tensors named in ``pad_ids`` (token ids) are
    also padded along their last dim with the given id.
    """
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    keys = set(batches[0].obs)
    for b in batches[1:]:
        if set(b.obs) != keys:
            raise ValueError(
                f"batches have different observation keys: {sorted(keys)} vs {sorted(b.obs)}"
            )
    t = max(b.old_log_probs.shape[1] for b in batches)
    pad_ids = pad_ids or {}
    obs = {}
    for k in keys:
        parts = [_pad_time(b.obs[k], t) for b in batches]
        if k in pad_ids:
            width = max(p.shape[-1] for p in parts)
            parts = [_pad_last(p, width, pad_ids[k]) for p in parts]
        obs[k] = torch.cat(parts)
    done = [b.done.bool() for b in batches]
    done = [torch.cat([d, d.new_zeros(d.shape[0], t - d.shape[1])], dim=1) for d in done]
    return TrajectoryBatch(
        obs=obs,
        actions=torch.cat([_pad_time(b.actions, t) for b in batches]),
        old_log_probs=torch.cat([_pad_time(b.old_log_probs, t) for b in batches]),
        executed=torch.cat([_pad_time(b.executed, t) for b in batches]),
        rewards=torch.cat([b.rewards for b in batches]),
        done=torch.cat(done),
        group_ids=torch.cat([b.group_ids for b in batches]),
        policy_version=torch.cat([b.policy_version for b in batches]),
    )
