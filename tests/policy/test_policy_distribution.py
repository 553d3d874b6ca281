"""The policy's Laplace distribution against plain loops and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch

from policy.distribution import laplace_entropy, laplace_log_prob, laplace_noise, laplace_sample


def test_laplace_log_prob_matches_loop_and_broadcasts() -> None:
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)  # (B, T, A)
    loc = torch.randn(3, 4, generator=g, dtype=torch.float64)  # broadcast over B
    log_scale = torch.randn(4, generator=g, dtype=torch.float64)  # broadcast over B, T
    out = laplace_log_prob(actions, loc, log_scale)
    assert out.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            total = 0.0
            for i in range(4):
                scale = math.exp(log_scale[i].item())
                diff = abs(actions[b, t, i].item() - loc[t, i].item())
                total += -diff / scale - math.log(2 * scale)
            assert out[b, t].item() == pytest.approx(total, rel=1e-12)
    ref = torch.distributions.Laplace(loc, log_scale.exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(out, ref)


def test_laplace_entropy_matches_torch_distributions() -> None:
    log_scale = torch.tensor([[-3.0, -2.0, 0.5], [0.0, 1.0, -1.0]], dtype=torch.float64)
    ref = torch.distributions.Laplace(torch.zeros_like(log_scale), log_scale.exp()).entropy()
    torch.testing.assert_close(laplace_entropy(log_scale), ref.sum(-1))


def test_laplace_sample_is_seeded_and_has_the_laplace_spread() -> None:
    loc = torch.full((20000, 2), 0.3)
    log_scale = torch.tensor([-2.0, 0.0]).expand(20000, 2)
    a = laplace_sample(loc, log_scale, generator=torch.Generator().manual_seed(3))
    b = laplace_sample(loc, log_scale, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # E|a - mu| = b for a Laplace: the mean absolute deviation recovers the scale
    mad = (a - loc).abs().mean(0)
    torch.testing.assert_close(mad, log_scale[0].exp(), rtol=0.05, atol=0.0)
    # mu + b * eps with the standard noise of the same draw: the same numbers bit for bit
    eps = laplace_noise((20000, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, loc + log_scale.exp() * eps)
    assert (eps.abs().mean(0) - 1).abs().max() < 0.05
