"""VGGT-compatible names round trip, CLIP tower loading, encoder caching per episode."""

import numpy as np
import pytest
import torch

import core.compat  # noqa: F401
from simulator_service.clip_encoder import ClipImageEncoder, load_clip_visual
from simulator_service.conditioning import FeatureCache
from simulator_service.config import ClipConfig, SimulatorConfig, VGGTConfig
from simulator_service.vggt import VGGTAggregator, load_vggt_aggregator

TINY_VGGT = VGGTConfig(embed_dim=16, depth=2, num_heads=2, patch_size=8, img_size=16, input_size=16)


def test_vggt_full_config_matches_released_layout():
    with torch.device("meta"):
        agg = VGGTAggregator(VGGTConfig())
    sd = agg.state_dict()
    assert sum(p.numel() for p in agg.parameters()) == 909_112_320
    assert sd["camera_token"].shape == (1, 2, 1, 1024)
    assert sd["register_token"].shape == (1, 2, 4, 1024)
    assert sd["patch_embed.pos_embed"].shape == (1, 1370, 1024)
    assert sd["patch_embed.patch_embed.proj.weight"].shape == (1024, 3, 14, 14)
    assert sd["frame_blocks.23.attn.qkv.weight"].shape == (3072, 1024)
    assert sd["global_blocks.0.attn.q_norm.weight"].shape == (64,)
    assert "patch_embed.blocks.23.ls2.gamma" in sd and "patch_embed.mask_token" in sd
    assert "_resnet_mean" not in sd  # non-persistent buffers


def test_vggt_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    src = VGGTAggregator(TINY_VGGT).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = {f"aggregator.{k}": v for k, v in src.state_dict().items()}
    state["camera_head.trunk.0.weight"] = torch.zeros(3, 3)  # heads are skipped
    state["depth_head.proj.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "model.pt")
    dst = VGGTAggregator(TINY_VGGT).eval()
    load_vggt_aggregator(dst, tmp_path / "model.pt")
    x = torch.rand(2, 3, 3, 16, 16)
    out_a, out_b = src(x), dst(x)
    assert len(out_a) == 2 and out_a[-1].shape == (2, 3, 1 + 4 + 4, 32)
    assert torch.allclose(out_a[-1], out_b[-1])
    # larger input: pos_embed interpolated, first frame's tokens differ from the others'
    big = dst(torch.rand(1, 2, 3, 32, 32))[-1]
    assert big.shape == (1, 2, 5 + 16, 32)

    del state["aggregator.global_blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="global_blocks.1.mlp.fc2.bias"):
        load_vggt_aggregator(VGGTAggregator(TINY_VGGT), tmp_path / "missing.pt")
    wide = VGGTConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=16, input_size=16)
    with pytest.raises(ValueError, match="shape"):
        load_vggt_aggregator(VGGTAggregator(wide), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError):
        load_vggt_aggregator(dst, tmp_path / "nope.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="aggregator"):
        load_vggt_aggregator(dst, tmp_path / "other.pt")


def test_clip_tower_loads_from_open_clip_checkpoint(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = ClipConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2, embed_dim=16)
    full = CLIP(
        16,
        CLIPVisionCfg(image_size=16, patch_size=8, width=16, layers=1, head_width=8),
        CLIPTextCfg(context_length=8, vocab_size=50, width=16, heads=2, layers=1),
    )
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}},
        tmp_path / "clip.pt",
    )
    enc = ClipImageEncoder(cfg).eval()
    load_clip_visual(enc, tmp_path / "clip.pt")
    x = torch.rand(2, 3, 16, 16)
    tokens = enc(x)
    assert tokens.shape == (2, 4, 16)
    for k, v in full.visual.state_dict().items():
        assert torch.equal(enc.visual.state_dict()[k], v)
    other = ClipImageEncoder(
        ClipConfig(image_size=16, patch_size=8, width=32, layers=1, heads=2, embed_dim=16)
    )
    with pytest.raises(ValueError, match="shape|match"):
        load_clip_visual(other, tmp_path / "clip.pt")


def test_feature_cache_encodes_once_per_episode():
    calls = []

    def encode(ref):
        calls.append(len(ref))
        return {"x": ref.flatten(1).sum(1, keepdim=True)[:, None]}

    cache = FeatureCache(encode)
    frames = {k: torch.full((1, 3, 4, 4), float(k)) for k in range(5)}

    def ref(keys):
        return torch.stack([frames[k] for k in keys])

    a = cache.get([0, 1, 1, 2], ref)
    b = cache.get([2, 0], ref)
    cache.get([3, 0, 3], ref)
    assert calls == [3, 1]  # one batched call for the new episodes, nothing for cached ones
    assert a["x"].shape == (4, 1, 1) and b["x"][1, 0, 0] == 0 and b["x"][0, 0, 0] == 2 * 48


def test_rollout_encodes_reference_once():
    from envs.base import Camera
    from simulator_service.model import WorldModel
    from simulator_service.rollout import ImaginedRollout

    model = WorldModel(SimulatorConfig.preset("tiny")).eval()
    calls = []
    orig = model.encoders.forward
    model.encoders.forward = lambda ref: calls.append(1) or orig(ref)
    k = np.array([[16.0, 0, 7.5], [0, 16, 7.5], [0, 0, 1]])
    e = np.eye(4)
    e[2, 3] = 1
    roll = ImaginedRollout(model, Camera(k, e, 16, 16), seed=0)
    roll.reset(np.zeros((3, 16, 16, 3), np.uint8), np.zeros((3, 8), np.float32))
    for _ in range(3):
        out = roll.step(np.zeros((3, 7), np.float32), steps=1)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    assert len(calls) == 1
    with pytest.raises(ValueError, match="uint8"):
        roll.reset(np.zeros((3, 16, 16, 3), np.float32), np.zeros((3, 8)))
    with pytest.raises(ValueError, match="16, 16, 3"):
        roll.reset(np.zeros((3, 32, 32, 3), np.uint8), np.zeros((3, 8)))
