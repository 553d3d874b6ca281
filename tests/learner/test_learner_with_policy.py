"""The Learner on the project's real (tiny) VLA policy: protocol fit, ratios, weight publishing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner import Learner, LearnerConfig, TrajectoryBatch
from learner.loop import termination_mask
from policy.checkpoint import build_policy
from policy.config import PolicyConfig
from policy.normalization import compute_statistics
from policy.tokenizer import encode_prompts

INSTRUCTIONS = ["pick up the red block", "put the blue block on the plate"]


def tiny_policy():
    rng = np.random.default_rng(0)
    stats = compute_statistics(
        rng.uniform(-1, 1, (64, 7)).astype(np.float32),
        rng.normal(size=(64, 8)).astype(np.float32),
        num_trajectories=4,
    )
    torch.manual_seed(0)
    cfg = PolicyConfig(chunk=2, lora_rank=4)
    return build_policy(cfg, instructions=INSTRUCTIONS, stats=stats)


def rollout_batch(policy, *, b: int = 4, t: int = 2) -> TrajectoryBatch:
    """Act with the policy on random frames, as a rollout worker would, and stack (B, T)."""
    g = torch.Generator().manual_seed(1)
    ids, lengths = encode_prompts(policy.tokenizer, [INSTRUCTIONS[i // 2 % 2] for i in range(b)])
    obs = {
        "image": torch.randint(0, 256, (b, t, 32, 32, 3), generator=g, dtype=torch.uint8),
        "proprio": torch.randn(b, t, 8, generator=g),
        "input_ids": ids[:, None].expand(b, t, -1).contiguous(),  # (B, T, L)
        "lengths": lengths[:, None].expand(b, t).contiguous(),  # (B, T)
    }
    actions, log_density, _, _ = policy.act({k: v.flatten(0, 1) for k, v in obs.items()})
    return TrajectoryBatch(
        obs=obs,
        actions=actions.reshape(b, t, *actions.shape[1:]),  # (B, T, chunk, A)
        old_log_probs=log_density.reshape(b, t, *actions.shape[1:]),  # (B, T, chunk, A)
        executed=torch.ones(b, t, actions.shape[1], dtype=torch.bool),
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]),
        done=torch.tensor([[False, True], [False, False], [True, False], [False, False]]),
        group_ids=torch.tensor([0, 0, 1, 1]),
        policy_version=torch.zeros(b, dtype=torch.long),
    )


def test_learner_trains_the_real_policy_and_publishes_loadable_weights() -> None:
    policy = tiny_policy()
    batch = rollout_batch(policy)
    learner = Learner(policy, LearnerConfig(minibatch_size=4, micro_batch_size=2))
    lrs = {g["name"]: g["lr"] for g in learner.optimizer.param_groups}
    assert lrs == {"lora": 1e-4, "heads": 1e-5}
    before = {k: v.clone() for k, v in policy.trainable_state_dict().items()}
    metrics = learner.update(batch)
    # Same weights as at rollout time: every ratio is 1 on the first (only) step.
    assert metrics["learner/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["learner/clip_frac"] == 0.0
    assert metrics["learner/optimizer_steps"] == 1 and metrics["learner/skipped_updates"] == 0
    scale = policy.cfg.log_scale_min  # the initial scale bias (-3) is clipped to log_scale_min
    chunk_entropy = (1 + np.log(2) + scale) * policy.cfg.chunk * policy.cfg.action_dim
    assert metrics["learner/entropy"] == pytest.approx(chunk_entropy, abs=1e-3)
    after = policy.trainable_state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert any("lora_" in k for k in changed) and any("action_head" in k for k in changed)

    version, weights = learner.publish()
    worker_policy = tiny_policy()  # a rollout worker's copy, still at version 0
    worker_policy.load_trainable_state_dict(weights)
    flat = {k: v.flatten(0, 1) for k, v in batch.obs.items()}
    actions = batch.actions.flatten(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(
            worker_policy.log_prob(flat, actions), policy.log_prob(flat, actions)
        )
    assert version == 1


@pytest.mark.parametrize(
    ("ratio", "scale"), [("chunk", "none"), ("action", "trunk"), ("dim", "none")]
)
def test_frozen_scale_head_stays_bit_for_bit_while_lora_and_action_head_train(ratio, scale) -> None:
    policy = tiny_policy()
    batch = rollout_batch(policy)
    cfg = LearnerConfig(minibatch_size=4, micro_batch_size=2, scale_gradient=scale, ratio=ratio,
        lr_lora=1e-3, lr_heads=1e-3, weight_decay=0.1, clip_per_group=True,
    )  # fmt: skip
    learner = Learner(policy, cfg)
    before = {k: v.clone() for k, v in policy.trainable_state_dict().items()}
    metrics = learner.update(batch)
    assert metrics["learner/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    after = policy.trainable_state_dict()
    scale = [k for k in after if k.startswith("vla.scale_head.")]
    assert scale and all(torch.equal(after[k], before[k]) for k in scale)
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert any("lora_" in k for k in changed) and any("action_head" in k for k in changed)
    # the frozen head is still part of what is published (rollout workers load it unchanged)
    _, weights = learner.publish()
    assert set(scale) <= set(weights)


def _first_gradients(policy, batch, scale: str) -> list[torch.Tensor]:
    """The trainable weights' gradient of the learner's loss on the whole batch."""
    learner = Learner(
        policy, LearnerConfig(minibatch_size=4, micro_batch_size=2, scale_gradient=scale)
    )
    advantages, keep = learner.advantages(batch, None)
    learner._accumulate_gradients(
        batch, termination_mask(batch.done), advantages, keep.nonzero().flatten()
    )
    return [p.grad.clone() for p in learner._params]


def test_scale_gradient_none_is_the_gradient_of_a_constant_scale() -> None:
    batch = rollout_batch(tiny_policy())
    none = _first_gradients(tiny_policy(), batch, "none")
    trunk = _first_gradients(tiny_policy(), batch, "trunk")
    # the plain way to a constant scale: the scale head's output detached, gradient through b on
    constant = tiny_policy()
    head = constant.vla.scale_head
    head.register_forward_hook(lambda _module, _inputs, out: out.detach())
    plain = _first_gradients(constant, batch, "trunk")
    for a, b in zip(none, plain, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(none, trunk, strict=True))
