"""The policy's action distribution: independent Laplace(mu, b) per action dimension.

World-Env and RIPT-VLA sample OFT actions from Laplace(mu, b) with mu from the L1 action head
and log b from the scale head. Pure functions on torch tensors: the policy samples and scores
with them, SFT fits the scale head with them, and the learner's LOOP math (``learner/loop.py``)
imports them; the policy owns its distribution.
"""

from __future__ import annotations

import math

import torch

_LOG_2 = math.log(2.0)


def laplace_log_prob(
    actions: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Log density of independent Laplace(loc, exp(log_scale)) per dimension, summed over A.

    log p(a) = sum_i [ -|a_i - mu_i| / b_i - log b_i - log 2 ],  b = exp(log_scale).

    Args:
        actions: (..., A) actions.
        loc: (..., A) Laplace location mu (broadcasts against ``actions``).
        log_scale: (..., A) log of the Laplace scale b (broadcasts against ``actions``).
    Returns:
        (...) log-probabilities, the product of the per-dimension densities in log space.
    """
    return laplace_log_density(actions, loc, log_scale).sum(dim=-1)


def laplace_log_density(
    actions: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Per-dimension Laplace log density: -|a - mu| / b - log b - log 2, broadcast, (..., A)."""
    return -(actions - loc).abs() * torch.exp(-log_scale) - log_scale - _LOG_2


def laplace_entropy(log_scale: torch.Tensor) -> torch.Tensor:
    """Entropy of independent Laplace distributions, summed over the last dimension.

    H = sum_i (1 + log 2 + log b_i); it does not depend on the location.

    Args:
        log_scale: (..., A) log of the Laplace scale b.
    Returns:
        (...) entropies in nats.
    """
    return (1.0 + _LOG_2 + log_scale).sum(dim=-1)


def laplace_sample(
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw a ~ Laplace(loc, exp(log_scale)) = loc + exp(log_scale) * eps, eps the standard
    noise of ``laplace_noise``.

    The uniform numbers come from ``generator`` on the CPU (then move to ``loc``'s device), so
    a seeded generator gives the same actions on any device.

    Args:
        loc: (..., A) location mu.
        log_scale: (..., A) log scale, same shape.
        noise: the standard noise eps itself, shaped like ``loc`` (None: drawn from
            ``generator``); mirrored rollouts pass the negation of their partner's.
    Returns:
        (..., A) samples.
    """
    if noise is None:
        noise = laplace_noise(tuple(loc.shape), generator=generator)
    elif noise.shape != loc.shape:
        raise ValueError(f"noise must be {tuple(loc.shape)}, got {tuple(noise.shape)}")
    return loc + log_scale.exp() * noise.to(loc.device)


def laplace_noise(
    shape: tuple[int, ...], *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard Laplace noise eps ~ Laplace(0, 1) of ``shape`` on the CPU (a ~ Laplace(mu, b) is
    mu + b * eps), by inverting the CDF of a uniform draw from ``generator``. -eps is as likely
    as eps: mirrored (antithetic) rollouts use both."""
    u = torch.rand(shape, generator=generator, device="cpu") - 0.5
    u = u.clamp(-0.5 + 1e-7, 0.5 - 1e-7)
    return -torch.sign(u) * torch.log1p(-2 * u.abs())


__all__ = [
    "laplace_log_prob",
    "laplace_log_density",
    "laplace_entropy",
    "laplace_noise",
    "laplace_sample",
]
