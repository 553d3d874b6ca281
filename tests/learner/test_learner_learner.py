"""The Learner with a tiny linear Laplace policy defined here (LoRA-like trunk + heads)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from core.configlib import ConfigError, from_dict
from learner import Learner, LearnerConfig, TrajectoryBatch
from policy.distribution import laplace_entropy, laplace_log_density, laplace_log_prob

OBS_DIM, CHUNK, ACTION_DIM = 4, 2, 3


class LinearLaplacePolicy(nn.Module):
    """obs["state"] -> tanh(lora) -> heads -> Laplace(loc, exp(log_scale)) per chunk step."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lora = nn.Linear(OBS_DIM, 8)
        self.heads = nn.Linear(8, CHUNK * ACTION_DIM * 2)
        self.calls: list[int] = []  # number of chunks scored per log_density call

    def dist(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.heads(torch.tanh(self.lora(state)))  # (..., CHUNK * A * 2)
        out = out.reshape(*state.shape[:-1], CHUNK, ACTION_DIM, 2)
        return out[..., 0], out[..., 1].clamp(-2.0, 0.5)  # loc, log_scale (..., CHUNK, A)

    def forward(self, obs):
        return self.dist(obs["state"])

    def log_density(self, obs, actions, *, scale_gradient=True):
        self.calls.append(actions.shape[0])
        loc, log_scale = self.dist(obs["state"])
        b = log_scale if scale_gradient else log_scale.detach()
        return laplace_log_density(actions, loc, b), log_scale

    def param_groups(self):
        return {"lora": list(self.lora.parameters()), "heads": list(self.heads.parameters())}

    def trainable_state_dict(self):
        return self.state_dict()

    def load_trainable_state_dict(self, state):
        with torch.no_grad():
            for k, v in self.state_dict().items():
                v.copy_(state[k])


def make_batch(
    policy: LinearLaplacePolicy,
    rewards: list[float],
    *,
    group_size: int,
    horizon: int = 3,
    seed: int = 0,
) -> TrajectoryBatch:
    """Sample action chunks from the policy for random states; terminate some early."""
    g = torch.Generator().manual_seed(seed)
    b = len(rewards)
    state = torch.randn(b, horizon, OBS_DIM, generator=g)  # (B, T, obs)
    with torch.no_grad():
        loc, log_scale = policy.dist(state)
        actions = torch.distributions.Laplace(loc, log_scale.exp()).sample()  # (B, T, C, A)
        old_log_probs = laplace_log_density(actions, loc, log_scale)  # (B, T, C, A)
    done = torch.zeros(b, horizon, dtype=torch.bool)
    done[::2, 1] = True  # every other trajectory stops after 2 steps
    return TrajectoryBatch(
        obs={"state": state},
        actions=actions,
        old_log_probs=old_log_probs,
        executed=torch.ones(b, horizon, CHUNK, dtype=torch.bool),
        rewards=torch.tensor(rewards),
        done=done,
        group_ids=torch.arange(b) // group_size,
        policy_version=torch.zeros(b, dtype=torch.long),
    )


def config(**kw) -> LearnerConfig:
    # the fake's scale is an output of its heads layer, trained with it ("all")
    base = dict(
        minibatch_size=4, micro_batch_size=4, lr_lora=1e-2, lr_heads=1e-3, scale_gradient="all"
    )
    base.update(kw)
    return LearnerConfig(**base)


def params_of(policy: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def test_positive_advantage_raises_log_prob_of_its_actions() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    learner = Learner(policy, config(ppo_epochs=3))
    metrics = learner.update(batch)
    with torch.no_grad():
        loc, log_scale = policy.dist(batch.obs["state"])
        new_lp = laplace_log_prob(batch.actions, loc, log_scale).sum(-1)  # (B, T)
    old_lp = batch.old_log_probs.sum(dim=(-2, -1))  # (B, T)
    first = (new_lp - old_lp)[:, 0]  # step 0 is valid in every trajectory
    assert first[0] > 0 and first[3] > 0  # advantage +1
    assert first[1] < 0 and first[2] < 0  # advantage -1
    assert metrics["learner/optimizer_steps"] == 3 and metrics["learner/skipped_updates"] == 0
    for key in ("loss", "approx_kl", "clip_frac", "grad_norm", "entropy", "ratio_mean"):
        assert torch.isfinite(torch.tensor(metrics[f"learner/{key}"])), key
    assert (
        metrics["learner/kept_trajectories"] == 4
        and metrics["learner/dropped_constant_groups"] == 0
    )


def test_filtered_l1_objective_moves_the_mean_toward_positive_trajectories_only() -> None:
    """``objective: filtered_l1``: the mean action nears the actions of the trajectories with a
    positive advantage (their valid steps); the first step's loss is the plain masked mean."""
    from learner.loop import filtered_l1_loss

    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    with torch.no_grad():
        loc0, _ = policy.dist(batch.obs["state"])
    valid = ~torch.tensor([[False, False, True], [False, False, False]] * 2)  # (B, T)
    units = valid[:, :, None, None].expand(loc0.shape).flatten(1)
    expected = filtered_l1_loss(
        loc0.flatten(1), batch.actions.flatten(1), torch.tensor([1.0, -1.0, -1.0, 1.0]), units
    )
    learner = Learner(policy, config(objective="filtered_l1", ppo_epochs=1, minibatch_size=4))
    metrics = learner.update(batch)
    assert math.isclose(metrics["learner/loss"], float(expected), rel_tol=1e-5)
    for _ in range(20):
        learner.update(batch)
    with torch.no_grad():
        loc, _ = policy.dist(batch.obs["state"])
    err0 = ((loc0 - batch.actions).abs() * valid[..., None, None]).sum(dim=(1, 2, 3))
    err = ((loc - batch.actions).abs() * valid[..., None, None]).sum(dim=(1, 2, 3))
    assert err[0] < 0.9 * err0[0] and err[3] < 0.9 * err0[3]
    with pytest.raises(ValueError, match="learner.objective must be one of"):
        LearnerConfig(objective="bc")


def test_the_anchor_joins_every_optimizer_step_and_its_resume_state() -> None:
    """``anchor_weight``: the anchor's loss is added at every optimizer step (its metric is the
    mean of them), pulls the policy toward its targets, and its generator is resumed."""
    policy = LinearLaplacePolicy()
    states = torch.randn(8, OBS_DIM, generator=torch.Generator().manual_seed(1))

    def anchor(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(8, (4,), generator=g)
        return (policy.dist(states[idx])[0] - 2.0).abs().mean()

    with pytest.raises(ConfigError, match="anchor_weight needs learner.anchor_data"):
        from_dict(LearnerConfig, {"anchor_weight": 1.0})
    cfg = config(anchor_weight=1.0, anchor_data=["demos"], lr_heads=1e-2)
    with pytest.raises(ValueError, match="needs an anchor loss"):
        Learner(policy, cfg)
    learner = Learner(policy, cfg, anchor=anchor)
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    first = learner.update(batch)["learner/anchor_l1"]
    for _ in range(30):
        last = learner.update(batch)["learner/anchor_l1"]
    assert last < 0.8 * first
    state = learner.state_dict()
    again = Learner(copy.deepcopy(policy), cfg, anchor=anchor, seed=7)
    again.load_state_dict(state)
    assert torch.equal(again._anchor_gen.get_state(), learner._anchor_gen.get_state())


def test_first_step_ratio_is_one_and_only_valid_steps_are_scored() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    metrics = Learner(policy, config()).update(batch)  # one minibatch, one step
    assert metrics["learner/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["learner/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["learner/clip_frac"] == 0.0
    assert policy.calls == [2 + 3 + 2 + 3]  # trajectories 0 and 2 end after 2 of 3 steps


def test_entropy_metric_is_the_mean_laplace_entropy_of_valid_steps() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    mask = ~torch.tensor([[False, False, True], [False] * 3] * 2)  # step 2 padded in 0 and 2
    with torch.no_grad():
        _, log_scale = policy.dist(batch.obs["state"])
        expected = laplace_entropy(log_scale).sum(-1)[mask].mean().item()
    metrics = Learner(policy, config()).update(batch)
    assert metrics["learner/entropy"] == pytest.approx(expected, rel=1e-5)


def test_padding_garbage_does_not_reach_the_update() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    batch.obs["state"][0, 2] = float("nan")  # after trajectory 0's done
    batch.old_log_probs[2, 2] = float("inf")
    batch.actions[0, 2] = float("nan")
    metrics = Learner(policy, config()).update(batch)
    assert metrics["learner/skipped_updates"] == 0
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_nan_reward_update_is_skipped_and_counted() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, float("nan"), 0.0, 1.0], group_size=2)
    before = params_of(policy)
    learner = Learner(policy, config(minibatch_size=2, micro_batch_size=1, ppo_epochs=2))
    metrics = learner.update(batch)
    # Group 0 (NaN) poisons every minibatch that holds one of its trajectories.
    assert metrics["learner/skipped_updates"] >= 1
    assert learner.skipped_updates == metrics["learner/skipped_updates"]
    assert metrics["learner/skipped_updates"] + metrics["learner/optimizer_steps"] == 4
    assert all(torch.isfinite(p).all() for p in policy.parameters())

    policy_all_nan = LinearLaplacePolicy()
    batch = make_batch(policy_all_nan, [float("nan")] * 4, group_size=2)
    before = params_of(policy_all_nan)
    learner = Learner(policy_all_nan, config())
    metrics = learner.update(batch)
    assert metrics["learner/skipped_updates"] == 1 and metrics["learner/optimizer_steps"] == 0
    assert metrics["learner/loss"] != metrics["learner/loss"]  # NaN: nothing applied
    for k, v in params_of(policy_all_nan).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not learner.optimizer.state  # AdamW never stepped


def test_param_groups_get_their_learning_rates() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    learner = Learner(policy, config(lr_lora=1e-2, lr_heads=1e-4, max_grad_norm=1e6))
    lrs = {g["name"]: g["lr"] for g in learner.optimizer.param_groups}
    assert lrs == {"lora": 1e-2, "heads": 1e-4}
    lora_ids = {id(p) for p in policy.lora.parameters()}
    for g in learner.optimizer.param_groups:
        assert all((id(p) in lora_ids) == (g["name"] == "lora") for p in g["params"])
    before = params_of(policy)
    learner.update(batch)
    # AdamW's first step moves each weight by about lr (|m / sqrt(v)| = 1).
    lora_step = (policy.lora.weight.detach() - before["lora.weight"]).abs().max().item()
    head_step = (policy.heads.weight.detach() - before["heads.weight"]).abs().max().item()
    assert lora_step == pytest.approx(1e-2, rel=1e-3)
    assert head_step == pytest.approx(1e-4, rel=1e-3)


def test_cosine_schedule_and_reset_make_every_update_a_fresh_cycle() -> None:
    """``lr_schedule: cosine`` walks each update's optimizer steps from the configured rates
    down to ``lr_min_ratio`` of them and restores them after; ``reset_optimizer`` starts each
    update with empty AdamW moments, while a plain learner carries them over."""
    seen: list[tuple[float, float, int]] = []  # (lora lr, heads lr, AdamW steps so far)

    def recording(learner: Learner) -> None:
        step = learner.optimizer.step

        def wrapped(*args, **kwargs):
            lrs = {g["name"]: g["lr"] for g in learner.optimizer.param_groups}
            state = learner.optimizer.state.get(policy.lora.weight, {})
            seen.append((lrs["lora"], lrs["heads"], int(state.get("step", 0))))
            return step(*args, **kwargs)

        learner.optimizer.step = wrapped

    for reset in (False, True):
        policy = LinearLaplacePolicy()
        batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
        cfg = config(ppo_epochs=3, lr_schedule="cosine", lr_min_ratio=0.1, reset_optimizer=reset)
        learner = Learner(policy, cfg)
        recording(learner)
        seen.clear()
        learner.update(batch)
        learner.update(batch)
        factors = [lr / 1e-2 for lr, _, _ in seen]
        assert factors == pytest.approx([1.0, 0.55, 0.1] * 2)
        assert [h / 1e-3 for _, h, _ in seen] == pytest.approx(factors)
        assert [n for *_, n in seen] == ([0, 1, 2] * 2 if reset else [0, 1, 2, 3, 4, 5])
        assert {g["name"]: g["lr"] for g in learner.optimizer.param_groups} == {
            "lora": 1e-2,
            "heads": 1e-3,
        }
    with pytest.raises(ConfigError, match="lr_schedule must be one of"):
        from_dict(LearnerConfig, {"lr_schedule": "linear"})
    with pytest.raises(ConfigError, match="lr_min_ratio must be in"):
        from_dict(LearnerConfig, {"lr_min_ratio": 2.0})


def test_gradient_accumulation_matches_one_big_pass() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [0.9, 0.1, 0.2, 0.7, 0.5, 0.0, 1.0, 0.3], group_size=4, horizon=4)
    twin = copy.deepcopy(policy)
    cfg = dict(minibatch_size=8, ppo_epochs=2)  # epoch 2 sees ratios != 1
    whole = Learner(policy, config(micro_batch_size=8, **cfg))
    split = Learner(twin, config(micro_batch_size=2, **cfg))
    m_whole, m_split = whole.update(batch), split.update(batch)
    for name in ("grad_norm", "loss", "approx_kl", "ratio_mean", "entropy"):
        key = f"learner/{name}"
        assert m_split[key] == pytest.approx(m_whole[key], rel=1e-5, abs=1e-7), key
    assert len(policy.calls) == 2 and len(twin.calls) == 8  # 4 micro-batches of 2 per epoch
    assert m_whole["learner/approx_kl"] > 0
    twin_params = twin.state_dict()
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, twin_params[k], rtol=1e-5, atol=1e-7, msg=k)


def test_constant_groups_are_skipped_when_asked() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 1.0, 0.0, 1.0, 0.0, 0.0], group_size=2)
    learner = Learner(policy, config())
    metrics = learner.update(batch)
    assert metrics["learner/kept_trajectories"] == 2
    assert metrics["learner/dropped_constant_groups"] == 2
    assert policy.calls == [2 + 3]  # only group 1 (trajectories 2 and 3) is scored

    kept_all = Learner(LinearLaplacePolicy(), config(skip_constant_groups=False)).update(batch)
    assert kept_all["learner/kept_trajectories"] == 6

    policy = LinearLaplacePolicy()
    before = params_of(policy)
    metrics = Learner(policy, config()).update(make_batch(policy, [1.0] * 4, group_size=2))
    assert metrics["learner/optimizer_steps"] == 0 and metrics["learner/skipped_updates"] == 0
    for k, v in params_of(policy).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_groups_must_have_group_size_trajectories() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    batch.group_ids = torch.tensor([0, 0, 0, 1])
    with pytest.raises(ValueError, match="group 0 holds 3 trajectories"):
        Learner(policy, config()).update(batch)
    batch.group_ids = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="group_size >= 2"):
        Learner(policy, config()).update(batch)


def test_rloo_advantages_follow_group_ids_in_any_order() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.5, 0.25], group_size=2)
    batch.group_ids = torch.tensor([7, 3, 7, 3])
    advantages, keep = Learner(policy, config()).advantages(batch)
    torch.testing.assert_close(advantages, torch.tensor([0.5, -0.25, -0.5, 0.25]))
    assert keep.all()


def test_state_dict_round_trip_resumes_identically() -> None:
    policy = LinearLaplacePolicy()
    cfg = config(minibatch_size=2, micro_batch_size=1, ppo_epochs=2)
    learner = Learner(policy, cfg, seed=3)
    learner.update(make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2, seed=1))
    learner.publish()
    state = copy.deepcopy(learner.state_dict())
    twin = copy.deepcopy(policy)
    resumed = Learner(twin, cfg, seed=99)
    resumed.load_state_dict(state)
    assert resumed.version == 1 and resumed.optimizer_steps == learner.optimizer_steps
    batch = make_batch(policy, [0.0, 1.0, 1.0, 0.2], group_size=2, seed=2)
    learner.update(batch)
    resumed.update(batch)
    twin_params = twin.state_dict()
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, twin_params[k], rtol=0, atol=0, msg=k)


def test_load_state_dict_rejects_mismatched_checkpoints() -> None:
    learner = Learner(LinearLaplacePolicy(), config())
    state = learner.state_dict()
    with pytest.raises(ValueError, match="missing key"):
        learner.load_state_dict({"optimizer": state["optimizer"]})

    class HeadsOnly(LinearLaplacePolicy):
        def param_groups(self):
            return {"heads": list(self.heads.parameters())}

    other = Learner(HeadsOnly(), config())
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict(state)

    # AdamW settings come from the current config, not from the checkpoint.
    changed = Learner(LinearLaplacePolicy(), config(lr_lora=3e-5, weight_decay=0.1))
    changed.load_state_dict(state)
    groups = {g["name"]: g for g in changed.optimizer.param_groups}
    assert groups["lora"]["lr"] == 3e-5 and groups["heads"]["weight_decay"] == 0.1


def test_publish_bumps_version_and_copies_weights() -> None:
    policy = LinearLaplacePolicy()
    learner = Learner(policy, config())
    version, weights = learner.publish()
    assert version == 1 and set(weights) == set(policy.state_dict())
    with torch.no_grad():
        policy.heads.weight.add_(1.0)
    assert not torch.equal(weights["heads.weight"], policy.heads.weight)
    assert learner.publish()[0] == 2
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    learner.config = config(max_staleness=2)
    assert learner.update(batch)["learner/staleness"] == 2.0


def test_trajectories_beyond_the_staleness_bound_are_dropped_and_counted() -> None:
    policy = LinearLaplacePolicy()
    learner = Learner(policy, config(max_staleness=1))
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)  # acted by version 0
    learner.publish()  # version 1: one behind is within the bound, and trains
    m = learner.update(batch)
    assert m["learner/stale_dropped"] == 0.0 and m["learner/optimizer_steps"] > 0
    learner.publish()  # version 2: two behind, dropped whole, no step
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    m = learner.update(batch)
    assert m["learner/stale_dropped"] == 4.0 and m["learner/kept_trajectories"] == 0.0
    assert m["learner/optimizer_steps"] == 0.0
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in before.items())


def test_bad_param_groups_are_rejected() -> None:
    class Bad(LinearLaplacePolicy):
        def param_groups(self):
            return {"backbone": list(self.lora.parameters())}

    with pytest.raises(ValueError, match="unknown group"):
        Learner(Bad(), config())

    class Twice(LinearLaplacePolicy):
        def param_groups(self):
            return {"lora": list(self.parameters()), "heads": list(self.heads.parameters())}

    with pytest.raises(ValueError, match="twice"):
        Learner(Twice(), config())


def test_config_validation_and_yaml_loading() -> None:
    cfg = from_dict(LearnerConfig, {"betas": [0.9, 0.95], "clip_eps": 0.2})
    assert cfg.betas == (0.9, 0.95) and cfg.clip_eps == 0.2
    assert LearnerConfig().lr_lora == 1e-4 and LearnerConfig().lr_heads == 1e-5
    with pytest.raises(ConfigError, match="micro_batch_size"):
        from_dict(LearnerConfig, {"minibatch_size": 6, "micro_batch_size": 4})
    with pytest.raises(ConfigError, match="group_size"):  # the rollouts' key, not the learner's
        from_dict(LearnerConfig, {"group_size": 8})
    with pytest.raises(ConfigError, match="did you mean"):
        from_dict(LearnerConfig, {"ppo_epoch": 2})
    with pytest.raises(ConfigError, match="did you mean 'clip_eps'"):
        from_dict(LearnerConfig, {"clip_epsilon": 0.1})


def test_trajectory_batch_checks_shapes() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0], group_size=2)
    fields = dict(batch.__dict__)
    with pytest.raises(ValueError, match=r"actions must have shape \(B, T, chunk, A\)"):
        TrajectoryBatch(**{**fields, "actions": batch.actions[:, :, 0]})
    with pytest.raises(ValueError, match=r"obs\['state'\]"):
        TrajectoryBatch(**{**fields, "obs": {"state": batch.obs["state"][:, :2]}})
    with pytest.raises(ValueError, match="rewards"):
        TrajectoryBatch(**{**fields, "rewards": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"executed must have shape \(B, T, chunk\)"):
        TrajectoryBatch(**{**fields, "executed": batch.executed[:, :, :1]})
    with pytest.raises(ValueError, match=r"old_log_probs must have shape \(B, T, chunk, A\)"):
        TrajectoryBatch(**{**fields, "old_log_probs": batch.old_log_probs.sum(dim=(-2, -1))})


def test_concat_batches_pads_time_and_tokens():
    from learner.batch import TrajectoryBatch, concat_batches

    def make(b, t, length, gid):
        done = torch.zeros(b, t, dtype=torch.bool)
        done[:, -1] = True
        return TrajectoryBatch(
            obs={
                "x": torch.randn(b, t, 3),
                "input_ids": torch.ones(b, t, length, dtype=torch.long),
            },
            actions=torch.randn(b, t, 2, 7),
            old_log_probs=torch.randn(b, t, 2, 7),
            executed=torch.ones(b, t, 2, dtype=torch.bool),
            rewards=torch.rand(b),
            done=done,
            group_ids=torch.full((b,), gid),
            policy_version=torch.zeros(b, dtype=torch.long),
        )

    joined = concat_batches([make(2, 3, 4, 0), make(3, 1, 6, 1)], pad_ids={"input_ids": 0})
    assert joined.old_log_probs.shape == (5, 3, 2, 7) and joined.executed.shape == (5, 3, 2)
    assert joined.obs["input_ids"].shape == (5, 3, 6)
    assert joined.obs["input_ids"][0, 0, 4:].tolist() == [0, 0]
    # each trajectory still terminates exactly once, at its own step
    assert joined.done.sum(1).tolist() == [1, 1, 1, 1, 1]
    assert joined.done[2:, 0].all() and joined.done[:2, 2].all()


def test_update_trains_on_exactly_the_groups_dynamic_sampling_chose() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0, 0.5, 0.5], group_size=2)
    learner = Learner(policy, config(advantage="grpo"))
    metrics = learner.update(batch, groups=[1])
    assert metrics["learner/kept_trajectories"] == 2
    assert metrics["learner/dropped_constant_groups"] == 2  # groups 0 and 2 not trained
    assert policy.calls == [2 + 3]  # trajectory 2 ends after 2 steps, 3 runs all 3
    with pytest.raises(ValueError, match=r"groups \[7\]"):
        learner.update(batch, groups=[1, 7])


def test_clip_per_group_clips_each_group_to_the_max_norm() -> None:
    policy = LinearLaplacePolicy()
    learner = Learner(policy, config(clip_per_group=True, max_grad_norm=1e-3))
    for p in policy.parameters():
        p.grad = torch.ones_like(p)
    total = learner._clip_gradients()
    n_lora = sum(p.numel() for p in policy.lora.parameters())
    n_heads = sum(p.numel() for p in policy.heads.parameters())
    assert total.item() == pytest.approx(math.sqrt(n_lora + n_heads), rel=1e-5)
    for group in (policy.lora, policy.heads):
        norm = torch.cat([p.grad.flatten() for p in group.parameters()]).norm()
        assert norm.item() == pytest.approx(1e-3, rel=1e-3)


def test_a_step_that_leaves_a_weight_non_finite_is_undone_and_counted() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    before = params_of(policy)
    learner = Learner(policy, config())
    step = learner.optimizer.step

    def overflowing_step(*args, **kwargs):
        step(*args, **kwargs)
        with torch.no_grad():
            policy.heads.bias[0] = float("inf")  # as a step of a huge learning rate may

    learner.optimizer.step = overflowing_step
    metrics = learner.update(batch)
    assert metrics["learner/skipped_updates"] == 1 and metrics["learner/optimizer_steps"] == 0
    for k, v in params_of(policy).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_a_huge_learning_rate_never_reaches_the_published_weights() -> None:
    """lr 3e37 (finite loss and gradients) leaves finite weights of ~5e37 that the policy cannot
    compute with: publish restores the last published (initial) weights and counts it."""
    policy = LinearLaplacePolicy()
    initial = params_of(policy)
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    learner = Learner(policy, config(lr_lora=3e37, lr_heads=3e37, ppo_epochs=2))
    learner.update(batch)
    _, weights = learner.publish()
    assert learner.rolled_back == 1 and learner.skipped_updates == 1
    for k, v in weights.items():
        torch.testing.assert_close(v, initial[k], rtol=0, atol=0)


def test_a_policy_broken_by_finite_weights_is_never_published() -> None:
    """Weights of 1e38 are finite, the policy's outputs are not: publish restores the last
    published weights (here the initial ones) and counts it."""
    policy = LinearLaplacePolicy()
    initial = params_of(policy)
    batch = make_batch(policy, [1.0, 0.0, 0.0, 1.0], group_size=2)
    learner = Learner(policy, config())
    learner.update(batch)
    with torch.no_grad():
        policy.heads.weight.fill_(1e38)  # what a huge learning rate leaves behind
    version, weights = learner.publish()
    assert version == 1 and learner.rolled_back == 1 and learner.skipped_updates == 1
    for k, v in weights.items():
        torch.testing.assert_close(v, initial[k], rtol=0, atol=0)
    learner.update(batch)  # training goes on from the restored weights
    _, weights = learner.publish()
    assert learner.rolled_back == 1 and all(torch.isfinite(w).all() for w in weights.values())


def _plain_half_gradient(policy, batch, advantages, rows) -> torch.Tensor:
    """Mean over the rows of -A_n * (mean over valid executed actions of d log p), by hand."""
    total = None
    for n in rows:
        valid = ~torch.cumsum(batch.done[n].long(), 0).roll(1, 0).bool()
        valid[0] = True  # steps up to and including the first done
        loc, log_scale = policy.dist(batch.obs["state"][n][valid])  # (T', C, A)
        lp = laplace_log_density(batch.actions[n][valid], loc, log_scale).sum(-1)  # (T', C)
        loss = -advantages[n] * lp.mean()
        grads = torch.autograd.grad(loss, list(policy.parameters()))
        flat = torch.cat([g.reshape(-1) for g in grads]) / len(rows)
        total = flat if total is None else total + flat
    return total


def test_gradient_signal_measures_the_halves_of_the_groups_against_a_plain_loop() -> None:
    policy = LinearLaplacePolicy()
    rewards = [0.9, 0.1, 0.2, 0.7, 0.5, 0.0, 1.0, 0.3, 0.4, 0.8, 0.6, 0.0]
    batch = make_batch(policy, rewards, group_size=2, horizon=4)  # 6 groups
    learner = Learner(policy, config(micro_batch_size=2, minibatch_size=12, gradient_signal=True))
    advantages, _ = learner.advantages(batch)
    groups = batch.group_ids
    h1 = _plain_half_gradient(policy, batch, advantages, (groups % 2 == 0).nonzero().flatten())
    h2 = _plain_half_gradient(policy, batch, advantages, (groups % 2 == 1).nonzero().flatten())
    metrics = learner.update(batch)
    cosine = float(h1 @ h2 / (h1.norm() * h2.norm()))
    share = float(h1 @ h2 / ((h1 + h2) / 2).square().sum())
    assert metrics["learner/grad_half_cosine"] == pytest.approx(cosine, rel=1e-4)
    assert metrics["learner/grad_signal_share"] == pytest.approx(share, rel=1e-4)


def test_gradient_signal_is_one_for_identical_halves_and_leaves_the_update_alone() -> None:
    policy = LinearLaplacePolicy()
    batch = make_batch(policy, [1.0, 0.0, 0.3, 0.9], group_size=2)
    for field in ("obs", "actions", "old_log_probs", "rewards", "done"):  # group 1 = group 0
        value = getattr(batch, field)
        for v in value.values() if isinstance(value, dict) else [value]:
            v[2:] = v[:2]
    twin = copy.deepcopy(policy)
    measured = Learner(policy, config(ppo_epochs=2, gradient_signal=True))
    plain = Learner(twin, config(ppo_epochs=2))
    m_measured, m_plain = measured.update(batch), plain.update(batch)
    assert m_measured["learner/grad_half_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert m_measured["learner/grad_signal_share"] == pytest.approx(1.0, abs=1e-6)
    assert "learner/grad_half_cosine" not in m_plain
    for k, v in twin.state_dict().items():  # the extra pass changes neither weights nor steps
        torch.testing.assert_close(policy.state_dict()[k], v, rtol=0, atol=0, msg=k)
    one_group = make_batch(policy, [1.0, 0.0], group_size=2)
    m_one = measured.update(one_group)
    assert math.isnan(m_one["learner/grad_half_cosine"])
    assert math.isnan(m_one["learner/grad_signal_share"])
