"""Checkpoints: rehearse folders, stock-peft adapters, OpenVLA-OFT import by key mapping."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import core.compat  # noqa: F401
from policy.checkpoint import load_policy, save_policy
from policy.oft_import import export_oft, import_oft


def _perturb_lora(policy, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_save_load_round_trip(tmp_path, make_policy, make_batch):
    policy = make_policy()
    _perturb_lora(policy)
    batch = make_batch(2)
    save_policy(policy, tmp_path / "ck")
    loaded = load_policy(tmp_path / "ck")
    with torch.no_grad():
        for a, b in zip(policy(batch), loaded(batch), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.cfg == policy.cfg
    assert not (tmp_path / "ck.tmp").exists()
    # trainable-only checkpoint on top of a base
    base_dir = tmp_path / "base"
    save_policy(make_policy(), base_dir)
    on_base = load_policy(base_dir)
    on_base.cfg.checkpoint = str(base_dir)
    _perturb_lora(on_base, seed=3)
    save_policy(on_base, tmp_path / "rl", include_base=False)
    assert (tmp_path / "rl" / "trainable.safetensors").is_file()
    again = load_policy(tmp_path / "rl")
    with torch.no_grad():
        torch.testing.assert_close(again(batch)[0], on_base(batch)[0])


def test_adapter_folder_loads_with_stock_peft(tmp_path, make_policy):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    policy = make_policy()
    _perturb_lora(policy)
    save_policy(policy, tmp_path / "ck")
    conf = json.loads((tmp_path / "ck" / "adapter" / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == "../llm"
    stock = LlamaForCausalLM.from_pretrained(str(tmp_path / "ck" / "llm"))
    ids = torch.tensor([[1, 5, 6, 7]])
    plain = stock(input_ids=ids).logits
    peft_model = PeftModel.from_pretrained(stock, str(tmp_path / "ck" / "adapter"))
    with torch.no_grad():
        ours = policy.vla.llm(input_ids=ids).logits
        theirs = peft_model(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours)
    assert not torch.allclose(plain, theirs)  # the adapter does something
    # the LLM's base weights are stored once, in the stock folder
    assert not any("base_layer" in k for k in load_file(str(tmp_path / "ck" / "model.safetensors")))


def test_export_loads_after_the_sources_are_gone(tmp_path, make_policy, make_batch):
    """A post-trained policy (trainable part on top of its SFT base) exported, copied elsewhere,
    its source and base deleted: rehearse and stock transformers + peft still load it."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from policy.checkpoint import export_policy

    batch = make_batch(2)
    save_policy(make_policy(), tmp_path / "sft")
    rl = load_policy(tmp_path / "sft")
    rl.cfg.checkpoint = str(tmp_path / "sft")
    _perturb_lora(rl, seed=5)
    save_policy(rl, tmp_path / "rl", include_base=False)
    export_policy(tmp_path / "rl", tmp_path / "exported")
    shutil.copytree(tmp_path / "exported", tmp_path / "elsewhere" / "policy")
    for gone in ("sft", "rl", "exported"):
        shutil.rmtree(tmp_path / gone)
    moved = tmp_path / "elsewhere" / "policy"
    loaded = load_policy(moved)
    assert loaded.cfg.checkpoint == ""
    with torch.no_grad():
        for a, b in zip(rl(batch), loaded(batch), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        ids = torch.tensor([[1, 5, 6, 7]])
        stock = PeftModel.from_pretrained(
            LlamaForCausalLM.from_pretrained(str(moved / "llm")), str(moved / "adapter")
        )
        torch.testing.assert_close(stock(input_ids=ids).logits, rl.vla.llm(input_ids=ids).logits)
    with pytest.raises(ValueError, match="export format must be 'rehearse' or 'oft'"):
        export_policy(moved, tmp_path / "x", fmt="onnx")
    assert not (tmp_path / "x").exists()


def test_earlier_layout_still_loads(tmp_path, make_policy, make_batch):
    """Checkpoints written before the LLM had its own folder (every weight in model.safetensors)."""
    policy = make_policy()
    _perturb_lora(policy)
    save_policy(policy, tmp_path / "ck")
    state = {k: v.contiguous() for k, v in policy.state_dict().items()}
    save_file(state, str(tmp_path / "ck" / "model.safetensors"))
    shutil.rmtree(tmp_path / "ck" / "llm")
    batch = make_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(load_policy(tmp_path / "ck")(batch)[0], policy(batch)[0])


def test_checkpoint_errors_name_the_problem(tmp_path, make_policy):
    policy = make_policy()
    save_policy(policy, tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        load_policy(tmp_path)
    path = tmp_path / "ck" / "model.safetensors"
    state = load_file(str(path))
    dropped = sorted(state)[0]
    save_file(
        {**{k: v for k, v in state.items() if k != dropped}, "extra.weight": torch.zeros(2)},
        str(path),
    )
    with pytest.raises(
        ValueError,
        match="missing keys.*"
        + dropped.replace(".", "\\.")
        + ".*unexpected keys \\[extra\\.weight\\]",
    ):
        load_policy(tmp_path / "ck")
    (tmp_path / "ck" / "dataset_statistics.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json"):
        load_policy(tmp_path / "ck")


def test_oft_import_round_trip(tmp_path, make_policy, make_batch):
    policy = make_policy()
    _perturb_lora(policy)
    batch = make_batch(2)
    export_oft(policy, tmp_path / "oft", head_dtype=torch.float32)
    names = sorted(p.name for p in (tmp_path / "oft").iterdir())
    assert {
        "config.json",
        "model.safetensors",
        "dataset_statistics.json",
        "action_head--100_checkpoint.pt",
        "proprio_projector--100_checkpoint.pt",
        "tokenizer.json",
    } <= set(names)
    keys = load_file(str(tmp_path / "oft" / "model.safetensors"))
    assert "vision_backbone.featurizer.blocks.0.attn.qkv.weight" in keys
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in keys
    assert "vision_backbone.fused_featurizer.attn_pool.kv.weight" in keys
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in keys
    head = torch.load(tmp_path / "oft" / "action_head--100_checkpoint.pt", weights_only=True)
    assert "module.model.fc1.weight" in head
    imported = import_oft(tmp_path / "oft", policy.cfg)
    imported.vla.scale_head.load_state_dict(policy.vla.scale_head.state_dict())
    with torch.no_grad():
        for a, b in zip(policy(batch), imported(batch), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the published files keep the action head in bf16: it loads, close to the original
    export_oft(policy, tmp_path / "oft16")
    with torch.no_grad():
        mu16 = import_oft(tmp_path / "oft16", policy.cfg)(batch)[0]
        assert (mu16 - policy(batch)[0]).abs().max() < 0.1


def test_oft_import_refuses_bad_checkpoints(tmp_path, make_policy):
    policy = make_policy()
    folder = export_oft(policy, tmp_path / "oft", head_dtype=torch.float32)
    path = folder / "model.safetensors"
    state = load_file(str(path))
    gone = "vision_backbone.fused_featurizer.blocks.1.mlp.fc2.bias"
    save_file(
        {
            **{k: v for k, v in state.items() if k != gone},
            "vision_backbone.featurizer.surprise": torch.zeros(1),
        },
        str(path),
    )
    with pytest.raises(
        ValueError,
        match="missing keys \\["
        + gone.replace(".", "\\.")
        + "\\].*unexpected keys \\[vision_backbone\\.featurizer\\.surprise\\]",
    ):
        import_oft(folder, policy.cfg)
    save_file(state, str(path))
    pt = folder / "action_head--100_checkpoint.pt"
    torch.save({"module.model.fc1.weight": argparse.Namespace(evil=True)}, pt)
    with pytest.raises(ValueError, match="not a plain state dict"):
        import_oft(folder, policy.cfg)
    pt.unlink()
    with pytest.raises(FileNotFoundError, match="action_head--STEP_checkpoint.pt"):
        import_oft(folder, policy.cfg)


def test_oft_mapping_matches_timm_towers(tmp_path, make_policy):
    """Weights of real timm towers (OFT's classes) give the same patch features after import."""
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    _ = timm
    policy = make_policy()
    folder = export_oft(policy, tmp_path / "oft", head_dtype=torch.float32)
    dino = VisionTransformer(
        img_size=64,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=2,
        init_values=1e-5,
        reg_tokens=4,
        no_embed_class=True,
        num_classes=0,
    ).eval()
    siglip = VisionTransformer(
        img_size=64,
        patch_size=8,
        embed_dim=48,
        depth=2,
        num_heads=4,
        mlp_ratio=2,
        class_token=False,
        global_pool="map",
        num_classes=0,
    ).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial values everywhere (layer scale, tokens, biases)
        for m in (dino, siglip):
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    state = load_file(str(folder / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("vision_backbone.")}
    for k, v in dino.state_dict().items():
        state["vision_backbone.featurizer." + k.replace(".gamma", ".scale_factor")] = v
    for k, v in siglip.state_dict().items():
        state["vision_backbone.fused_featurizer." + k] = v
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    imported = import_oft(folder, policy.cfg)
    pixels = torch.rand(2, 3, 64, 64, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        d = dino.get_intermediate_layers((pixels - mean) / std, n={0})[0]
        s = siglip.get_intermediate_layers((pixels - 0.5) / 0.5, n={0})[0]
        ours = imported.vla.vision(pixels)
    torch.testing.assert_close(ours, torch.cat([d, s], dim=-1), rtol=1e-4, atol=1e-5)
