"""LOOP math (RIPT-VLA / World-Env): RLOO and GRPO advantages, PPO ratio units, PPO-clip loss,
masks.

Pure functions on torch tensors, no state and no Ray. Shapes use B trajectories, T policy steps
(one policy step = one action chunk of C actions), A action dimensions, U ratio units per
trajectory, G groups of N rollouts of one initial state.
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


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalized advantages (GRPO, as RLinf and SimpleVLA-RL use them).

    A_n = (R_n - mean_m R_m) / (std_m R_m + eps), with the unbiased standard deviation of the
    group; a group whose rewards are all equal gets zero advantage.

    Args:
        rewards: (G, N) trajectory rewards, N >= 2.
        eps: added to the standard deviation.
    Returns:
        (G, N) advantages.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"grpo_advantages expects rewards of shape (num_groups, group_size >= 2), "
            f"got shape {tuple(rewards.shape)}"
        )
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (G, N)
    return centered / (rewards.std(dim=1, keepdim=True) + eps)


def mirrored_rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO for mirrored groups (``rollout.mirrored``): rollout n and n + N/2 acted with noise of
    opposite sign, so the partner's reward depends on n's own noise and would bias n's baseline.

    A_n = R_n - mean of the rewards outside n's pair. Both members of a pair share the
    baseline, so where their score functions are opposite the pair contributes
    (R_n - R_partner) * score_n: the reward's part that is even in the noise cancels.

    Args:
        rewards: (G, N) trajectory rewards, N even and >= 4, pairs (n, n + N/2).
    Returns:
        (G, N) advantages.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 4 or rewards.shape[1] % 2:
        raise ValueError(
            f"mirrored RLOO expects rewards of shape (num_groups, group_size) with an even "
            f"group_size >= 4 (a pair and at least one other pair), got {tuple(rewards.shape)}"
        )
    n = rewards.shape[1]
    pair = rewards + rewards.roll(n // 2, dims=1)  # (G, N): R_n + R_partner(n)
    others_mean = (rewards.sum(dim=1, keepdim=True) - pair) / (n - 2)
    return rewards - others_mean


ADVANTAGES = {
    "rloo": rloo_advantages,
    "grpo": grpo_advantages,
    "rloo_mirrored": mirrored_rloo_advantages,
}
RATIO_UNITS = ("chunk", "action", "dim")
OBJECTIVES = ("ppo", "filtered_l1")  # what the learner minimizes (``learner.objective``)


def ratio_log_probs(
    log_density: torch.Tensor, step_mask: torch.Tensor, executed: torch.Tensor, unit: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group per-dimension log-densities into the units one PPO ratio covers, with their mask.

    ``chunk``: one ratio per policy step, the log-prob of its whole chunk (C x A dimensions;
    every action of the chunk counts, executed or not). ``action``: one ratio per executed
    action, its A dimensions summed (RIPT-VLA's ``sum_on_action_dim``). ``dim``: one ratio per
    dimension of every executed action (a token-level ratio, as RLinf's).

    Args:
        log_density: (B, T, C, A) log-densities per action dimension.
        step_mask: (B, T) bool, valid policy steps (up to and including termination).
        executed: (B, T, C) bool, the actions of each chunk that ran in the environment.
        unit: one of ``RATIO_UNITS``.
    Returns:
        log_probs (B, U) and mask (B, U) bool, U = T, T * C or T * C * A. Masked units may hold
        anything (padding), ``ppo_clip_loss`` ignores them.
    """
    b, t, c, a = log_density.shape
    if unit == "chunk":
        return log_density.sum(dim=(-2, -1)), step_mask.bool()
    acted = executed.bool() & step_mask.bool()[..., None]  # (B, T, C)
    if unit == "action":
        return log_density.sum(dim=-1).reshape(b, t * c), acted.reshape(b, t * c)
    if unit == "dim":
        mask = acted[..., None].expand(b, t, c, a)  # (B, T, C, A)
        return log_density.reshape(b, t * c * a), mask.reshape(b, t * c * a)
    raise ValueError(f"unknown PPO ratio unit {unit!r}; expected one of {list(RATIO_UNITS)}")


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
    """PPO clipped surrogate loss with per-trajectory advantages and masked units.

    Per valid unit u (a chunk, an action or a dimension: ``ratio_log_probs``):
    r_u = exp(log p(a_u) - log p_old(a_u)) and l_u = -min(r_u A, clip(r_u, 1 - eps, 1 + eps) A),
    with A the trajectory's advantage. Normalization (WoVR): each trajectory's loss is the mean
    of l_u over its own valid units, so long and short trajectories weigh the same; the loss is
    then the mean over trajectories that have at least one valid unit (0 if none has). Masked
    units never reach the result, even when their log-probs are NaN or inf.

    Args:
        log_probs: (B, U) log-probabilities of the taken actions under the current policy.
        old_log_probs: (B, U) the same under the policy that collected them (no gradient).
        advantages: (B,) one advantage per trajectory, broadcast to its units.
        mask: (B, U) bool or 0/1, True for valid units (those after termination are False).
        clip_eps: PPO clip range eps (0.1 in LOOP).
    Returns:
        loss: scalar tensor to minimize.
        stats: detached scalar tensors over valid units: ``approx_kl`` (mean of
            (r - 1) - log r), ``clip_frac`` (fraction with |r - 1| > eps), ``ratio_mean``.
    """
    if log_probs.shape != old_log_probs.shape or log_probs.shape != mask.shape:
        raise ValueError(
            f"ppo_clip_loss: log_probs {tuple(log_probs.shape)}, old_log_probs "
            f"{tuple(old_log_probs.shape)} and mask {tuple(mask.shape)} must have the same "
            f"(B, U) shape"
        )
    if advantages.shape != log_probs.shape[:1]:
        raise ValueError(
            f"ppo_clip_loss: advantages must have shape (B,) = {tuple(log_probs.shape[:1])}, "
            f"got {tuple(advantages.shape)}"
        )
    valid = mask.bool()  # (B, U)
    weight = valid.to(log_probs.dtype)  # (B, U)
    zero = torch.zeros((), dtype=log_probs.dtype, device=log_probs.device)
    log_ratio = torch.where(valid, log_probs - old_log_probs.detach(), zero)  # (B, U)
    ratio = torch.exp(log_ratio)  # (B, U)
    adv = advantages.detach().to(log_probs.dtype).unsqueeze(-1)  # (B, 1)
    surrogate = ratio * adv  # (B, U)
    surrogate_clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv  # (B, U)
    per_unit = torch.where(valid, -torch.minimum(surrogate, surrogate_clipped), zero)  # (B, U)

    length = weight.sum(dim=-1)  # (B,) valid units per trajectory
    has_units = length > 0  # (B,)
    per_traj = per_unit.sum(dim=-1) / torch.where(has_units, length, torch.ones_like(length))
    num_traj = has_units.to(log_probs.dtype).sum()
    loss = (per_traj * has_units).sum() / num_traj.clamp_min(1.0)

    with torch.no_grad():
        num_units = weight.sum().clamp_min(1.0)
        approx_kl = (((ratio - 1.0) - log_ratio) * weight).sum() / num_units
        clip_frac = (((ratio - 1.0).abs() > clip_eps).to(weight.dtype) * weight).sum() / num_units
        ratio_mean = (ratio * weight).sum() / num_units
    stats = {"approx_kl": approx_kl, "clip_frac": clip_frac, "ratio_mean": ratio_mean}
    return loss, stats


def filtered_l1_loss(
    mu: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Regression of the mean action toward the actions of better-than-baseline rollouts.

    Per trajectory with a positive advantage, the mean of |mu - a| over its masked action
    dimensions; the loss is the mean over those trajectories (0 if none). Trajectories with
    A <= 0 contribute nothing: the policy imitates what its own search found better, as the
    L1 stage of SFT imitates demos, and is never pushed away from a failure.

    Args:
        mu: (B, U) the policy's mean per unit (an action dimension of a step), with gradient.
        actions: (B, U) the actions taken.
        advantages: (B,) one advantage per trajectory.
        mask: (B, U) bool, the units to regress (sampled and executed, before termination).
    """
    if mu.shape != actions.shape or mu.shape != mask.shape or advantages.shape != mu.shape[:1]:
        raise ValueError(
            f"filtered_l1_loss: mu {tuple(mu.shape)}, actions {tuple(actions.shape)} and mask "
            f"{tuple(mask.shape)} must share one (B, U) shape, advantages (B,), got "
            f"{tuple(advantages.shape)}"
        )
    valid = mask.bool() & (advantages > 0)[:, None]  # (B, U)
    err = torch.where(valid, (mu - actions.detach()).abs(), torch.zeros_like(mu))  # (B, U)
    length = valid.sum(dim=-1)  # (B,)
    used = length > 0
    per_traj = err.sum(dim=-1) / length.clamp_min(1)  # (B,)
    return (per_traj * used).sum() / used.sum().clamp_min(1)


__all__ = [
    "ADVANTAGES",
    "filtered_l1_loss",
    "RATIO_UNITS",
    "OBJECTIVES",
    "grpo_advantages",
    "ratio_log_probs",
    "rloo_advantages",
    "nonconstant_group_mask",
    "termination_mask",
    "ppo_clip_loss",
]
