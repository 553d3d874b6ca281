"""The policy network and its interface: shapes, log-probs, gradients, trainable state, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.configlib import ConfigError, from_dict
from policy.config import PolicyConfig
from policy.normalization import Normalizer


def test_act_shapes_and_log_prob_match_a_plain_loop(make_policy, make_batch):
    policy = make_policy()
    batch = make_batch(3)
    actions, log_density, mu, log_scale = policy.act(
        batch, generator=torch.Generator().manual_seed(1)
    )
    assert actions.shape == mu.shape == log_scale.shape == log_density.shape == (3, 8, 7)
    log_probs = log_density.sum(dim=(-2, -1))  # (3,)
    expected = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for t in range(8):
            for a in range(7):
                scale = math.exp(float(log_scale[b, t, a]))
                x, m = float(actions[b, t, a]), float(mu[b, t, a])
                expected[b] += -abs(x - m) / scale - math.log(2 * scale)
    torch.testing.assert_close(log_probs.double(), expected, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(policy.log_prob(batch, actions), log_probs, rtol=1e-5, atol=1e-4)
    det, det_lp, det_mu, _ = policy.act(batch, deterministic=True)
    torch.testing.assert_close(det, det_mu)
    assert torch.all(det_lp.sum(dim=(-2, -1)) > log_probs - 1e-4)  # the mode: highest density


def test_scale_factor_widens_sampling_but_not_the_scored_density(make_policy, make_batch):
    """RIPT-VLA's convention: samples at scale_factor x b, log-densities at the policy's b."""
    policy = make_policy()
    batch = make_batch(64)
    gen = torch.Generator
    a1, _, mu, log_scale = policy.act(batch, generator=gen().manual_seed(2))
    a3, lp3, _, _ = policy.act(batch, generator=gen().manual_seed(2), scale_factor=3.0)
    # the same uniform draws: every deviation from mu is exactly 3x as large
    torch.testing.assert_close(a3 - mu, 3.0 * (a1 - mu), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        own, _ = policy.log_density(batch, a3)
    torch.testing.assert_close(lp3, own, rtol=1e-5, atol=1e-4)
    expected = -(a3 - mu).abs() / log_scale.exp() - log_scale - math.log(2.0)
    torch.testing.assert_close(lp3, expected, rtol=1e-5, atol=1e-4)


def test_initial_log_scale_is_clipped_to_the_floor(make_policy, make_batch):
    _, _, _, log_scale = make_policy().act(make_batch(2))
    assert torch.allclose(log_scale, torch.full_like(log_scale, -2.0))


def test_batch_does_not_change_each_example(make_policy, make_batch):
    """Prompts of different lengths are right-padded; padding must not leak into outputs."""
    policy = make_policy()
    batch = make_batch(3)
    with torch.no_grad():
        mu, _ = policy(batch)
        for i in range(3):
            one = {
                k: (v[i : i + 1] if k != "instruction" else v[i : i + 1]) for k, v in batch.items()
            }
            mu_i, _ = policy(one)
            torch.testing.assert_close(mu_i[0], mu[i], rtol=1e-4, atol=1e-5)


def test_attention_is_bidirectional(make_policy, make_batch):
    """Changing the image changes the hidden state of the first placeholder and of earlier
    prompt tokens alike, which a causal mask would forbid for tokens before the image."""
    policy = make_policy()
    batch = make_batch(1)
    other = dict(batch, image=255 - batch["image"])
    body = policy.vla.llm_body()
    seen = []
    with torch.no_grad():
        for b in (batch, other):
            inputs = policy.prepare(b)
            h = {}

            def grab(module, args, kwargs, out, h=h):
                h["out"] = out.last_hidden_state

            handle = body.register_forward_hook(grab, with_kwargs=True)
            policy.vla(*inputs)
            handle.remove()
            seen.append(h["out"])
    # position 0 is BOS: under a causal mask it could not see the image patches after it
    assert not torch.allclose(seen[0][:, 0], seen[1][:, 0])


def test_uint8_and_float_images_and_resizing_agree(make_policy, make_batch):
    policy = make_policy()
    batch = make_batch(2, size=64)
    as_float = dict(batch, image=batch["image"].astype(np.float32) / 255.0)
    with torch.no_grad():
        torch.testing.assert_close(policy(batch)[0], policy(as_float)[0])
        small = make_batch(2, size=32)
        assert policy(small)[0].shape == (2, 8, 7)


def test_bad_inputs_raise_clear_errors(make_policy, make_batch):
    policy = make_policy()
    batch = make_batch(2)
    with pytest.raises(ValueError, match="must be \\(B, H, W, 3\\)"):
        policy(dict(batch, image=batch["image"][..., 0]))
    with pytest.raises(ValueError, match="square"):
        policy(dict(batch, image=batch["image"][:, :, :20]))
    with pytest.raises(ValueError, match="proprio"):
        policy(dict(batch, proprio=np.zeros((2, 5), np.float32)))
    with pytest.raises(ValueError, match="instruction"):
        policy(dict(batch, instruction=["only one"]))
    two = make_policy(num_images=2)
    with pytest.raises(ValueError, match="wrist_image"):
        two(batch)
    assert two(make_batch(2, wrist=True))[0].shape == (2, 8, 7)


def test_gradients_reach_only_the_trainable_part(make_policy, make_batch):
    policy = make_policy()
    batch = make_batch(2)
    actions = torch.zeros(2, 8, 7)
    policy.log_prob(batch, actions).sum().backward()
    groups = policy.param_groups()
    trainable = {id(p) for g in groups.values() for p in g}
    assert len(groups["lora"]) > 0 and len(groups["heads"]) > 0
    for name, p in policy.named_parameters():
        if id(p) in trainable:
            assert p.requires_grad, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # LoRA B starts at zero so A gets no gradient at first; B, heads must get one
    for name, p in policy.named_parameters():
        if "lora_B" in name or name.startswith("vla.action_head."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    heads = {n for n, p in policy.named_parameters() if id(p) in {id(q) for q in groups["heads"]}}
    assert all(n.startswith(("vla.action_head.", "vla.scale_head.")) for n in heads)
    assert not any(n.startswith("vla.proprio_projector.") for n in heads)
    with_proprio = make_policy(train_proprio_projector=True)
    assert any(
        p is with_proprio.vla.proprio_projector.fc1.weight
        for p in with_proprio.param_groups()["heads"]
    )
    assert not any(k.startswith("vla.projector.") for k in with_proprio.trainable_state_dict())
    with_projector = make_policy(train_projector=True)
    assert any(p is with_projector.vla.projector.fc1.weight for p in with_projector.parameters())
    assert any(
        p is with_projector.vla.projector.fc1.weight for p in with_projector.param_groups()["heads"]
    )
    assert {k for k in with_projector.trainable_state_dict() if k.startswith("vla.projector.")}


def test_trainable_state_round_trip_keeps_parameter_identity(make_policy, make_batch):
    src, dst = make_policy(), make_policy()
    dst.load_state_dict(src.state_dict())  # same frozen weights; only the trainable part moves
    with torch.no_grad():
        for n, p in src.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    before = {n: p for n, p in dst.named_parameters()}
    batch = make_batch(2)
    with torch.no_grad():
        assert not torch.allclose(dst(batch)[0], src(batch)[0])
    dst.load_trainable_state_dict({k: v.clone() for k, v in src.trainable_state_dict().items()})
    assert all(p is before[n] for n, p in dst.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(dst(batch)[0], src(batch)[0])
    state = src.trainable_state_dict()
    first = next(iter(state))
    with pytest.raises(ValueError, match=f"missing \\['{first}'\\]"):
        dst.load_trainable_state_dict({k: v for k, v in state.items() if k != first})
    with pytest.raises(ValueError, match="unexpected \\['bogus'\\]"):
        dst.load_trainable_state_dict(dict(state, bogus=torch.zeros(1)))


def test_lora_targets_that_match_nothing_are_refused(make_policy):
    with pytest.raises(ValueError, match="nonexistent_proj"):
        make_policy(lora_target_modules=["q_proj", "nonexistent_proj"])
    p = make_policy(lora_target_modules=["q_proj", "v_proj"])
    names = [n for n, _ in p.named_parameters() if "lora_A" in n]
    assert names and all(("q_proj" in n or "v_proj" in n) for n in names)


def test_normalization_round_trip_and_gripper(stats):
    norm = Normalizer(stats)
    rng = np.random.default_rng(0)
    env = torch.tensor(rng.uniform(-0.5, 0.5, (5, 7)), dtype=torch.float32)
    env[:, -1] = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0])
    model = norm.normalize_actions(env)
    assert torch.all(model[:, :-1].abs() <= 1)
    torch.testing.assert_close(model[:, -1], torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]))
    back = norm.unnormalize_actions(model)
    torch.testing.assert_close(back, env, rtol=1e-5, atol=1e-5)
    assert norm.unnormalize_actions(torch.full((1, 7), 0.7))[0, -1] == -1.0  # open


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="num_images"):
        from_dict(PolicyConfig, {"num_images": 3})
    with pytest.raises(ConfigError, match="log_scale_min"):
        from_dict(PolicyConfig, {"log_scale_min": 1.0, "log_scale_max": 0.5})
    with pytest.raises(ConfigError, match="preset"):
        from_dict(PolicyConfig, {"preset": "huge"})
    with pytest.raises(ConfigError, match="multiple of the patch size 8"):
        from_dict(PolicyConfig, {"image_size": 30})


def test_image_size_override_changes_the_towers_input(make_policy, make_batch):
    policy = make_policy(image_size=32)
    assert policy.cfg.arch.image_size == 32 and policy.vla.vision.num_patches == 16
    actions, log_density, _, _ = policy.act(make_batch(2, size=32))
    assert actions.shape == (2, policy.cfg.chunk, 7) and torch.isfinite(log_density).all()


def test_oft_7b_on_meta_device_matches_published_count(stats):
    from policy.checkpoint import build_policy

    with torch.device("meta"):
        p = build_policy(PolicyConfig(preset="oft-7b"), instructions=["x"], stats=stats)
    assert all(t.is_meta for t in p.parameters())
    count = {
        n: sum(t.numel() for t in m.parameters())
        for n, m in [
            ("dino", p.vla.vision.dino),
            ("siglip", p.vla.vision.siglip),
            ("projector", p.vla.projector),
            ("action_head", p.vla.action_head),
            ("proprio", p.vla.proprio_projector),
        ]
    }
    lora = sum(t.numel() for t in p.param_groups()["lora"])
    llm = sum(t.numel() for t in p.vla.llm.parameters()) - lora
    assert llm == 6_738_939_904
    assert count["siglip"] == 427_680_704 and count["projector"] == 71_385_600
    # HF DINOv2 adds a mask token and a class-token position embedding (2 x 1024)
    assert count["dino"] == 303_230_976 + 2 * 1024
    assert count["action_head"] == 151_117_831 and count["proprio"] == 16_818_176
    assert lora == 79_953_920  # rank 32 on q, k, v, o, gate, up, down of 32 layers


def test_lora_scope_vla_adapts_the_vision_towers_and_projector(tmp_path, make_policy, make_batch):
    """lora_scope "vla" (OpenVLA / OFT's LoRA over the whole VLA): adapters on every Linear of
    the vision towers (but SigLIP's unused pooling head) and the projector, trainable beside the
    LLM's, zero at the start (the same function as without them), and through a checkpoint."""
    from policy.checkpoint import load_policy, save_policy

    llm_only, vla = make_policy(), make_policy(lora_scope="vla")
    names = [n for n, _ in vla.named_parameters() if "lora_" in n]
    vision = [n for n in names if n.startswith(("vla.vision.", "vla.projector."))]
    assert not any(
        n.startswith(("vla.vision.", "vla.projector."))
        for n, _ in llm_only.named_parameters()
        if "lora_" in n
    )
    linears = [
        n
        for n, m in llm_only.vla.vision.named_modules()
        if type(m).__name__ == "Linear" and ".head." not in n
    ]
    assert len(vision) == 2 * (len(linears) + 3)  # A and B per tower Linear + projector fc1-3
    assert not any("siglip.head." in n for n in vision)
    batch = make_batch(2)
    vla.freeze_to_trainable()
    vla.log_prob(batch, torch.zeros(2, 8, 7)).sum().backward()
    lora_group = {id(p) for p in vla.param_groups()["lora"]}
    for n, p in vla.named_parameters():
        if n in vision:
            assert p.requires_grad and id(p) in lora_group, n
        if n in vision and "lora_B" in n and ".projector." in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    # zero-initialized adapters: the function of the same base weights without them
    vsd = vla.state_dict()

    def base_of(k):  # a Linear with an adapter keeps its weights under base_layer
        head, _, leaf = k.rpartition(".")
        return vsd[k] if k in vsd else vsd[f"{head}.base_layer.{leaf}"]

    llm_only.load_state_dict({k: base_of(k) for k in llm_only.state_dict()})
    with torch.no_grad():
        torch.testing.assert_close(vla(batch)[0], llm_only(batch)[0], rtol=0, atol=0)
        for n, p in vla.named_parameters():
            if n in vision and "lora_B" in n:
                p.normal_(0, 0.1)
    save_policy(vla, tmp_path / "ck")
    again = load_policy(tmp_path / "ck")
    assert again.cfg.lora_scope == "vla"
    with torch.no_grad():
        torch.testing.assert_close(again(batch)[0], vla(batch)[0], rtol=0, atol=0)
        assert not torch.allclose(again(batch)[0], llm_only(batch)[0])
