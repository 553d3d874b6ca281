"""LOOP math (RIPT-VLA / World-Env): RLOO advantages, PPO-clip loss, masks.

Pure functions on torch tensors, no state and no Ray. Shapes use B trajectories, T policy steps
(one policy step = one action chunk), A action dimensions, G groups of N rollouts of one initial
state.
"""

from __future__ import annotations

import torch


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages within each group of rollouts.

    A_n = R_n - mean_{m != n} R_m, i.e. the baseline of rollout n is the mean reward of the
    other N - 1 rollouts from the same initial state.

    Args:
        rewards: (G, N) trajectory rewards, one row per group, N >= 2.
    Returns:
        (G, N) advantages.
    Raises:
        ValueError: if ``rewards`` is not 2-D or a group has fewer than 2 rollouts.
    """
    if rewards.ndim != 2:
        raise ValueError(
            f"rloo_advantages expects rewards of shape (num_groups, group_size), "
            f"got shape {tuple(rewards.shape)}"
        )
    n = rewards.shape[1]
    if n < 2:
        raise ValueError(
            f"rloo_advantages needs group_size >= 2 (the baseline is the mean of the other "
            f"rollouts), got group_size {n}"
        )
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (n - 1)  # (G, N)
    return rewards - others_mean


def nonconstant_group_mask(rewards: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """Groups whose rewards are not all equal ("dynamic sampling" keeps only these).

    A group whose N rewards are all equal has zero RLOO advantage everywhere, so it adds no
    gradient and only dilutes the batch. A group holding a NaN counts as not constant, so the
    learner sees the NaN (and skips that update) instead of the group silently disappearing.

    Args:
        rewards: (G, N) trajectory rewards.
        atol: rewards whose spread (max - min) is at most ``atol`` count as equal.
    Returns:
        (G,) bool, True for groups to keep.
    """
    if rewards.ndim != 2:
        raise ValueError(
            f"nonconstant_group_mask expects rewards of shape (num_groups, group_size), "
            f"got shape {tuple(rewards.shape)}"
        )
    spread = rewards.amax(dim=1) - rewards.amin(dim=1)  # (G,), NaN if any reward is NaN
    return ~(spread <= atol)


def termination_mask(done: torch.Tensor) -> torch.Tensor:
    """Valid-step mask from per-step done flags: valid up to and including the first done.

    Args:
        done: (B, T) bool (or 0/1) done flags; steps after the first done are padding.
    Returns:
        (B, T) bool, True for the steps that count in the loss.
    """
    done_i = done.to(torch.long)  # (B, T)
    dones_before = done_i.cumsum(dim=-1) - done_i  # (B, T): dones strictly before step t
    return dones_before == 0


def ppo_clip_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss with per-trajectory advantages and masked steps.

    Per valid step: r_t = exp(log p(a_t) - log p_old(a_t)) and
    l_t = -min(r_t A, clip(r_t, 1 - eps, 1 + eps) A), with A the trajectory's advantage.
    Normalization (WoVR): each trajectory's loss is the mean of l_t over its own valid steps,
    so long and short trajectories weigh the same; the loss is then the mean over trajectories
    that have at least one valid step (0 if none has). Masked steps never reach the result,
    even when their log-probs are NaN or inf.

    Args:
        log_probs: (B, T) log-probabilities of the taken action chunks under the current policy.
        old_log_probs: (B, T) the same under the policy that collected them (no gradient).
        advantages: (B,) one advantage per trajectory, broadcast to its steps.
        mask: (B, T) bool or 0/1, True for valid steps (steps after termination are False).
        clip_eps: PPO clip range eps (0.1 in LOOP).
    Returns:
        loss: scalar tensor to minimize.
        stats: detached scalar tensors over valid steps: ``approx_kl`` (mean of
            (r - 1) - log r), ``clip_frac`` (fraction with |r - 1| > eps), ``ratio_mean``.
    """
    if log_probs.shape != old_log_probs.shape or log_probs.shape != mask.shape:
        raise ValueError(
            f"ppo_clip_loss: log_probs {tuple(log_probs.shape)}, old_log_probs "
            f"{tuple(old_log_probs.shape)} and mask {tuple(mask.shape)} must have the same "
            f"(B, T) shape"
        )
    if advantages.shape != log_probs.shape[:1]:
        raise ValueError(
            f"ppo_clip_loss: advantages must have shape (B,) = {tuple(log_probs.shape[:1])}, "
            f"got {tuple(advantages.shape)}"
        )
    valid = mask.bool()  # (B, T)
    weight = valid.to(log_probs.dtype)  # (B, T)
    zero = torch.zeros((), dtype=log_probs.dtype, device=log_probs.device)
    log_ratio = torch.where(valid, log_probs - old_log_probs.detach(), zero)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach().to(log_probs.dtype).unsqueeze(-1)  # (B, 1)
    surrogate = ratio * adv  # (B, T)
    surrogate_clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv  # (B, T)
    per_step = torch.where(valid, -torch.minimum(surrogate, surrogate_clipped), zero)  # (B, T)

    length = weight.sum(dim=-1)  # (B,) valid steps per trajectory
    has_steps = length > 0  # (B,)
    per_traj = per_step.sum(dim=-1) / torch.where(has_steps, length, torch.ones_like(length))
    num_traj = has_steps.to(log_probs.dtype).sum()
    loss = (per_traj * has_steps).sum() / num_traj.clamp_min(1.0)

    with torch.no_grad():
        num_steps = weight.sum().clamp_min(1.0)
        approx_kl = (((ratio - 1.0) - log_ratio) * weight).sum() / num_steps
        clip_frac = (((ratio - 1.0).abs() > clip_eps).to(weight.dtype) * weight).sum() / num_steps
        ratio_mean = (ratio * weight).sum() / num_steps
    stats = {"approx_kl": approx_kl, "clip_frac": clip_frac, "ratio_mean": ratio_mean}
    return loss, stats


__all__ = [
    "rloo_advantages",
    "nonconstant_group_mask",
    "termination_mask",
    "ppo_clip_loss",
]
