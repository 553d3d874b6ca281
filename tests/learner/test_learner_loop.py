"""LOOP math against plain Python loops: RLOO, masks, PPO-clip loss."""

from __future__ import annotations

import math

import pytest
import torch

from learner.loop import (
    filtered_l1_loss,
    grpo_advantages,
    mirrored_rloo_advantages,
    nonconstant_group_mask,
    ppo_clip_loss,
    ratio_log_probs,
    rloo_advantages,
    termination_mask,
)


def test_rloo_advantages_match_loop() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.2, 0.9, 0.4, 0.4], [0.3, 0.3, 0.3, 0.3]])
    adv = rloo_advantages(rewards)
    for gi, row in enumerate(rewards.tolist()):
        for n, r in enumerate(row):
            others = [x for m, x in enumerate(row) if m != n]
            assert adv[gi, n].item() == pytest.approx(r - sum(others) / len(others), abs=1e-6)
    assert torch.all(adv[2] == 0)  # all-equal group: zero advantage


def test_rloo_advantages_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="num_groups, group_size"):
        rloo_advantages(torch.ones(8))


def test_nonconstant_group_mask() -> None:
    rewards = torch.tensor(
        [
            [1.0, 1.0, 1.0],  # all equal
            [0.0, 1.0, 0.0],  # varies
            [0.5, 0.5 + 1e-9, 0.5],  # equal within atol
            [0.5, float("nan"), 0.5],  # NaN is kept so the learner sees it
        ],
        dtype=torch.float64,
    )
    mask = nonconstant_group_mask(rewards, atol=1e-6)
    assert mask.tolist() == [False, True, False, True]
    assert nonconstant_group_mask(rewards, atol=0.0)[2].item() is True


def test_termination_mask_matches_loop() -> None:
    g = torch.Generator().manual_seed(1)
    done = torch.rand(6, 7, generator=g) < 0.3  # (B, T)
    done[0] = False  # never terminates: all valid
    done[1] = False
    done[1, 0] = True  # terminates at the first step
    mask = termination_mask(done)
    for b in range(6):
        seen_done = False
        for t in range(7):
            assert mask[b, t].item() == (not seen_done)
            seen_done = seen_done or bool(done[b, t])
    assert mask[0].all() and mask[1].tolist() == [True] + [False] * 6
    torch.testing.assert_close(termination_mask(done.long()), mask)


def _ppo_loss_loop(lp, old, adv, mask, eps):
    """Plain-Python PPO-clip loss with per-trajectory length normalization."""
    per_traj = []
    for b in range(len(lp)):
        terms = []
        for t in range(len(lp[b])):
            if mask[b][t]:
                r = math.exp(lp[b][t] - old[b][t])
                clipped = min(max(r, 1 - eps), 1 + eps)
                terms.append(-min(r * adv[b], clipped * adv[b]))
        if terms:
            per_traj.append(sum(terms) / len(terms))
    return sum(per_traj) / len(per_traj) if per_traj else 0.0


def test_ppo_clip_loss_matches_loop_with_masking() -> None:
    g = torch.Generator().manual_seed(2)
    b, t, eps = 5, 6, 0.1
    old = torch.randn(b, t, generator=g, dtype=torch.float64)
    lp = old + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)  # ratios inside/outside
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    done = torch.zeros(b, t, dtype=torch.bool)
    done[0, 2] = done[1, 0] = done[3, 5] = True
    mask = termination_mask(done)
    # Padding may hold garbage: it must not reach the loss.
    lp_padded = torch.where(mask, lp, torch.tensor(float("nan"), dtype=torch.float64))
    old_padded = torch.where(mask, old, torch.tensor(float("inf"), dtype=torch.float64))
    loss, stats = ppo_clip_loss(lp_padded, old_padded, adv, mask, eps)
    ref = _ppo_loss_loop(lp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), eps)
    assert loss.item() == pytest.approx(ref, rel=1e-10)

    ratios = [
        math.exp(lp[i, j].item() - old[i, j].item())
        for i in range(b)
        for j in range(t)
        if mask[i, j]
    ]
    kl = sum((r - 1) - math.log(r) for r in ratios) / len(ratios)
    frac = sum(abs(r - 1) > eps for r in ratios) / len(ratios)
    assert stats["approx_kl"].item() == pytest.approx(kl, rel=1e-10)
    assert stats["clip_frac"].item() == pytest.approx(frac)
    assert stats["ratio_mean"].item() == pytest.approx(sum(ratios) / len(ratios), rel=1e-10)
    assert 0 < frac < 1  # the test covers both regions


def test_ppo_clip_loss_ignores_trajectories_without_valid_steps() -> None:
    lp = torch.zeros(2, 3)
    adv = torch.tensor([1.0, 5.0])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    loss, stats = ppo_clip_loss(lp, lp, adv, mask, 0.1)
    assert loss.item() == pytest.approx(-1.0)  # only trajectory 0, ratio 1
    assert stats["approx_kl"].item() == 0.0 and stats["ratio_mean"].item() == 1.0
    loss0, _ = ppo_clip_loss(lp, lp, adv, torch.zeros(2, 3, dtype=torch.bool), 0.1)
    assert loss0.item() == 0.0


def test_ppo_clip_loss_gradient_zero_in_clipped_region() -> None:
    eps = 0.1
    # Columns: ratio 1.3 (above 1 + eps), 0.7 (below 1 - eps), 1.05 (inside), masked.
    log_ratio = torch.log(torch.tensor([[1.3, 0.7, 1.05, 1.0], [1.3, 0.7, 1.05, 1.0]]))
    old = torch.zeros(2, 4)
    lp = log_ratio.clone().requires_grad_(True)
    adv = torch.tensor([2.0, -3.0])  # trajectory 0 positive, trajectory 1 negative
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    loss, _ = ppo_clip_loss(lp, old, adv, mask, eps)
    loss.backward()
    grad = lp.grad
    n_traj, length = 2, 3
    r = log_ratio.exp()
    # A > 0: clipped above 1 + eps -> 0; below 1 - eps the unclipped term is the min -> -A r.
    assert grad[0, 0].item() == 0.0
    assert grad[0, 1].item() == pytest.approx(-2.0 * r[0, 1].item() / (length * n_traj))
    assert grad[0, 2].item() == pytest.approx(-2.0 * r[0, 2].item() / (length * n_traj))
    # A < 0: clipped below 1 - eps -> 0; above 1 + eps the unclipped term is the min.
    assert grad[1, 1].item() == 0.0
    assert grad[1, 0].item() == pytest.approx(3.0 * r[1, 0].item() / (length * n_traj))
    assert grad[1, 2].item() == pytest.approx(3.0 * r[1, 2].item() / (length * n_traj))
    assert torch.all(grad[:, 3] == 0)  # masked steps


def test_ppo_clip_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same"):
        ppo_clip_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3), 0.1)


def test_grpo_advantages_match_loop() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.2, 0.9, 0.4, 0.4], [0.3, 0.3, 0.3, 0.3]])
    adv = grpo_advantages(rewards, eps=1e-6)
    for gi, row in enumerate(rewards.tolist()):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / (len(row) - 1))
        for n, r in enumerate(row):
            assert adv[gi, n].item() == pytest.approx((r - mean) / (std + 1e-6), abs=1e-5)
    assert torch.all(adv[2] == 0)  # all-equal group: zero advantage
    with pytest.raises(ValueError, match="group_size >= 2"):
        grpo_advantages(torch.ones(3, 1))


def test_mirrored_rloo_advantages_leave_the_pair_out() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.2, 0.9, 0.4, 0.4, 0.1, 0.7]])
    adv = mirrored_rloo_advantages(rewards)
    half = rewards.shape[1] // 2
    for gi, row in enumerate(rewards.tolist()):
        for n, r in enumerate(row):
            partner = (n + half) % len(row)
            others = [x for m, x in enumerate(row) if m not in (n, partner)]
            assert adv[gi, n].item() == pytest.approx(r - sum(others) / len(others), abs=1e-6)
    assert torch.all(mirrored_rloo_advantages(torch.full((1, 4), 0.3)) == 0)
    with pytest.raises(ValueError, match="even group_size >= 4"):
        mirrored_rloo_advantages(torch.ones(2, 5))
    with pytest.raises(ValueError, match="even group_size >= 4"):
        mirrored_rloo_advantages(torch.ones(2, 2))


@pytest.mark.parametrize("unit", ["chunk", "action", "dim"])
def test_ratio_units_give_the_plain_per_unit_ppo_loss(unit) -> None:
    """Per chunk, per action and per dimension PPO against a plain loop over the units, with
    terminated trajectories, padding garbage, and actions of a chunk that never ran."""
    g = torch.Generator().manual_seed(5)
    b, t, c, a, eps = 4, 3, 4, 2, 0.1
    old = 0.5 * torch.randn(b, t, c, a, generator=g, dtype=torch.float64)
    new = old + 0.08 * torch.randn(b, t, c, a, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    done = torch.zeros(b, t, dtype=torch.bool)
    done[0, 1] = done[2, 0] = done[1, 2] = done[3, 2] = True
    step_mask = termination_mask(done)
    executed = torch.ones(b, t, c, dtype=torch.bool)
    executed[0, 1, 2:] = False  # trajectory 0 ended after the 2nd action of its last chunk
    executed[:, :, 3] = False  # execute_steps = 3 < chunk = 4
    garbage_new = torch.where(step_mask[..., None, None], new, torch.nan)
    garbage_old = torch.where(step_mask[..., None, None], old, torch.inf)

    lp, mask = ratio_log_probs(garbage_new, step_mask, executed, unit)
    lp_old, mask_old = ratio_log_probs(garbage_old, step_mask, executed, unit)
    assert torch.equal(mask, mask_old)
    loss, _ = ppo_clip_loss(lp, lp_old, adv, mask, eps)

    per_traj = []
    for i in range(b):
        terms = []
        for j in range(t):
            if not step_mask[i, j]:
                continue
            if unit == "chunk":  # the whole chunk, executed or not
                units = [(new[i, j].sum().item(), old[i, j].sum().item())]
            elif unit == "action":
                units = [
                    (new[i, j, k].sum().item(), old[i, j, k].sum().item())
                    for k in range(c)
                    if executed[i, j, k]
                ]
            else:
                units = [
                    (new[i, j, k, d].item(), old[i, j, k, d].item())
                    for k in range(c)
                    if executed[i, j, k]
                    for d in range(a)
                ]
            for x, y in units:
                r = math.exp(x - y)
                terms.append(-min(r * adv[i].item(), min(max(r, 1 - eps), 1 + eps) * adv[i].item()))
        per_traj.append(sum(terms) / len(terms))
    assert loss.item() == pytest.approx(sum(per_traj) / len(per_traj), rel=1e-10)
    units_per_step = {"chunk": 1, "action": c, "dim": c * a}[unit]
    assert lp.shape == (b, t * units_per_step)
    with pytest.raises(ValueError, match="unknown PPO ratio unit"):
        ratio_log_probs(new, step_mask, executed, "token")


def test_filtered_l1_loss_matches_loop() -> None:
    """Per trajectory with A > 0 the mean |mu - a| over its masked units, then the mean over
    those trajectories; others (A <= 0, or no unit) never count, nor do masked NaNs."""
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 6, generator=g)
    actions = torch.randn(5, 6, generator=g)
    mask = torch.rand(5, 6, generator=g) > 0.4
    mask[3] = False  # a positive trajectory without units
    adv = torch.tensor([0.5, -0.2, 1.0, 2.0, 0.0])
    actions[~mask] = float("nan")
    per = []
    for b in range(5):
        units = [abs(float(mu[b, u] - actions[b, u])) for u in range(6) if mask[b, u]]
        if adv[b] > 0 and units:
            per.append(sum(units) / len(units))
    got = filtered_l1_loss(mu, actions, adv, mask)
    assert math.isclose(float(got), sum(per) / len(per), rel_tol=1e-6)
    assert float(filtered_l1_loss(mu, actions, -adv.abs(), mask)) == 0.0
    with pytest.raises(ValueError, match="filtered_l1_loss"):
        filtered_l1_loss(mu, actions[:, :3], adv, mask)
