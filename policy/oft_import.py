"""Import (and export) OpenVLA-OFT checkpoints in Prismatic naming by an explicit key mapping.

An OFT folder holds ``config.json`` + ``*.safetensors`` of the HF Prismatic model
(``vision_backbone.featurizer.*`` = timm DINOv2-reg, ``vision_backbone.fused_featurizer.*`` =
timm SigLIP, ``projector.*``, ``language_model.*``), the tokenizer, ``dataset_statistics.json``
and the head files ``action_head--{step}_checkpoint.pt`` / ``proprio_projector--{step}_...pt``
(keys prefixed ``module.``), which are read with ``torch.load(weights_only=True)`` only.

Differences handled by the mapping: timm's fused ``attn.qkv`` is split into q/k/v; timm's DINOv2
``pos_embed`` covers patches only, so the class token's position embedding is zero here;
SigLIP's attention pool ``q`` + ``kv`` form the ``in_proj`` of HF's pooling head; DINOv2's
``mask_token`` does not exist in timm (unused at inference, left at zero). The Laplace scale
head is not part of OFT and keeps its initialization.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from policy.config import PolicyConfig
from policy.normalization import STATS_FILE, Normalizer, save_statistics
from policy.policy import Policy
from policy.tokenizer import load_tokenizer

DINO = "vision_backbone.featurizer."
SIGLIP = "vision_backbone.fused_featurizer."
# ours (un-LoRA'd VLA names) -> sources in Prismatic naming and how to combine them
Rule = tuple[list[str], Callable[[list[torch.Tensor]], torch.Tensor]]
NOT_IN_OFT = ("vision.dino.embeddings.mask_token",)  # timm has no mask token
OWN_MODULES = ("scale_head.",)  # ours only (Laplace scale head)


def _same(xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0]


def _split(i: int) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    return lambda xs: xs[0].chunk(3, dim=0)[i]


def _cat(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(xs, dim=0)


def _dino_pos(xs: list[torch.Tensor]) -> torch.Tensor:
    pe = xs[0]  # (1, N, D) patches only
    return torch.cat([torch.zeros_like(pe[:, :1]), pe], dim=1)


def key_mapping(our_keys: list[str]) -> dict[str, Rule]:
    """Prismatic sources of every VLA key (names of the VLA without LoRA)."""
    rules: dict[str, Rule] = {}
    qkv = {"q": 0, "k": 1, "v": 2}
    for k in our_keys:
        parts = k.split(".")
        if k.startswith("vision.dino."):
            r = k[len("vision.dino.") :]
            simple = {
                "embeddings.cls_token": "cls_token",
                "embeddings.register_tokens": "reg_token",
                "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
                "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
                "layernorm.weight": "norm.weight",
                "layernorm.bias": "norm.bias",
            }
            if r in simple:
                rules[k] = ([DINO + simple[r]], _same)
            elif r == "embeddings.position_embeddings":
                rules[k] = ([DINO + "pos_embed"], _dino_pos)
            elif r.startswith("encoder.layer."):
                i, rest = parts[4], ".".join(parts[5:])
                blk = f"{DINO}blocks.{i}."
                proj = parts[6] if len(parts) > 6 else ""
                if parts[5] == "attention" and proj in ("q_proj", "k_proj", "v_proj"):
                    rules[k] = ([blk + "attn.qkv." + parts[-1]], _split(qkv[proj[0]]))
                else:
                    name = {
                        "attention.o_proj.weight": "attn.proj.weight",
                        "attention.o_proj.bias": "attn.proj.bias",
                        "layer_scale1.lambda1": "ls1.scale_factor",
                        "layer_scale2.lambda1": "ls2.scale_factor",
                    }.get(rest, rest)
                    rules[k] = ([blk + name], _same)
        elif k.startswith("vision.siglip."):
            r = k[len("vision.siglip.") :]
            r = r[len("vision_model.") :] if r.startswith("vision_model.") else r
            rp = r.split(".")
            if r.startswith("embeddings.patch_embedding."):
                rules[k] = ([SIGLIP + "patch_embed.proj." + rp[-1]], _same)
            elif r == "embeddings.position_embedding.weight":
                rules[k] = ([SIGLIP + "pos_embed"], lambda xs: xs[0][0])
            elif r.startswith("post_layernorm."):
                rules[k] = ([SIGLIP + "norm." + rp[-1]], _same)
            elif r.startswith("encoder.layers."):
                blk = f"{SIGLIP}blocks.{rp[2]}."
                if rp[3] == "self_attn" and rp[4] in ("q_proj", "k_proj", "v_proj"):
                    rules[k] = ([blk + "attn.qkv." + rp[-1]], _split(qkv[rp[4][0]]))
                else:
                    name = {
                        "self_attn.out_proj": "attn.proj",
                        "layer_norm1": "norm1",
                        "layer_norm2": "norm2",
                    }.get(".".join(rp[3:-1]), ".".join(rp[3:-1]))
                    rules[k] = ([blk + name + "." + rp[-1]], _same)
            elif r == "head.probe":
                rules[k] = ([SIGLIP + "attn_pool.latent"], _same)
            elif r in ("head.attention.in_proj_weight", "head.attention.in_proj_bias"):
                s = "weight" if r.endswith("weight") else "bias"
                rules[k] = ([SIGLIP + f"attn_pool.q.{s}", SIGLIP + f"attn_pool.kv.{s}"], _cat)
            elif r.startswith("head."):
                name = {"attention.out_proj": "proj", "layernorm": "norm"}.get(
                    ".".join(rp[1:-1]), ".".join(rp[1:-1])
                )
                rules[k] = ([SIGLIP + "attn_pool." + name + "." + rp[-1]], _same)
        elif k.startswith("projector."):
            rules[k] = ([k], _same)
        elif k.startswith("llm."):
            rules[k] = (["language_model." + k[len("llm.") :]], _same)
        elif k.startswith("action_head.") or k.startswith("proprio_projector."):
            rules[k] = ([k], _same)  # from the head files: "module." + the rest
    return rules


def _load_pt(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob(f"{prefix}--*_checkpoint.pt"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{folder} must hold exactly one {prefix}--STEP_checkpoint.pt, "
            f"found {[f.name for f in files]}"
        )
    try:
        sd = torch.load(files[0], map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code: a clear error, not a load
        raise ValueError(f"{files[0]} is not a plain state dict ({e})") from None
    return {k.removeprefix("module."): v for k, v in sd.items()}


def read_oft_folder(folder: str | Path, *, use_proprio: bool) -> dict[str, torch.Tensor]:
    """Every tensor of an OFT folder, head files under ``action_head.`` / ``proprio_projector.``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not an OpenVLA-OFT folder: no config.json")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{folder} has no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in shards:
        state.update(load_file(str(f)))
    state.update({"action_head." + k: v for k, v in _load_pt(folder, "action_head").items()})
    if use_proprio:
        state.update(
            {"proprio_projector." + k: v for k, v in _load_pt(folder, "proprio_projector").items()}
        )
    return state


def import_oft(folder: str | Path, cfg: PolicyConfig) -> Policy:
    """Build a policy of ``cfg``'s architecture from an OpenVLA-OFT checkpoint folder.

    Raises:
        FileNotFoundError: a file of the layout is missing.
        ValueError: the checkpoint's keys or shapes do not fit (all listed), or its config
            disagrees with ``cfg`` (image size).
    """
    from policy.checkpoint import check_state_dict

    folder = Path(folder)
    state = read_oft_folder(folder, use_proprio=cfg.use_proprio)
    hf = json.loads((folder / "config.json").read_text())
    sizes = hf.get("image_sizes")
    if sizes and int(sizes[0]) != cfg.arch.image_size:
        raise ValueError(
            f"{folder}/config.json has image size {sizes[0]}, preset "
            f"{cfg.preset!r} uses {cfg.arch.image_size}"
        )
    if not (folder / STATS_FILE).is_file():
        raise FileNotFoundError(f"{folder} lacks {STATS_FILE} (action statistics)")
    policy = Policy(
        cfg,
        tokenizer=load_tokenizer(folder),
        normalizer=Normalizer.from_file(folder, key=cfg.unnorm_key),
        lora=False,
    )
    eps = hf.get("text_config", {}).get("rms_norm_eps")
    if eps is not None:
        for m in policy.vla.llm.modules():
            if hasattr(m, "variance_epsilon"):
                m.variance_epsilon = float(eps)
    ours = {
        k: v
        for k, v in policy.vla.state_dict().items()
        if k not in NOT_IN_OFT and not k.startswith(OWN_MODULES)
    }
    rules = key_mapping(list(ours))
    unmapped = sorted(set(ours) - set(rules))
    if unmapped:
        raise ValueError(f"no OFT key mapping for {unmapped}")
    needed = {s for srcs, _ in rules.values() for s in srcs}
    check_state_dict(
        {s: torch.empty(0) for s in needed},
        {s: torch.empty(0) for s in state},
        what=f"OpenVLA-OFT checkpoint {folder}",
    )
    mapped = {k: fn([state[s] for s in srcs]) for k, (srcs, fn) in rules.items()}
    check_state_dict(ours, mapped, what=f"OpenVLA-OFT checkpoint {folder}")
    policy.vla.load_state_dict(mapped, strict=False)
    policy.add_lora()
    return policy


def base_state_dict(policy: Policy) -> dict[str, torch.Tensor]:
    """VLA weights under un-LoRA'd names with the LoRA deltas merged in."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.Tensor] = {}
    for k, v in policy.vla.state_dict().items():
        if "lora_" in k:
            continue
        out[k.replace("base_model.model.", "").replace(".base_layer.", ".")] = v.detach().clone()
    for name, m in policy.vla.named_modules():
        if isinstance(m, LoraLayer) and m.active_adapters:
            key = name.replace("base_model.model.", "") + ".weight"
            for a in m.active_adapters:
                out[key] = out[key] + m.get_delta_weight(a).to(out[key])
    return out


def export_oft(
    policy: Policy,
    folder: str | Path,
    *,
    step: int = 100,
    dataset_name: str = "dataset",
    head_dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write ``policy`` as an OpenVLA-OFT folder (inverse of ``import_oft``; LoRA merged).

    The action head is stored in ``head_dtype`` (bf16 as in the published files).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ours = base_state_dict(policy)
    rules = key_mapping(list(ours))
    prism: dict[str, torch.Tensor] = {}
    for k, (srcs, _) in rules.items():
        v = ours[k]
        if len(srcs) == 2:  # q + kv of the attention pool
            d = v.shape[0] // 3
            prism[srcs[0]], prism[srcs[1]] = v[:d], v[d:]
        elif k.endswith("position_embeddings") and srcs[0].endswith("featurizer.pos_embed"):
            prism[srcs[0]] = v[:, 1:]
        elif srcs[0].endswith("fused_featurizer.pos_embed"):
            prism[srcs[0]] = v[None]
        elif ".qkv." in srcs[0]:
            prism.setdefault(srcs[0], [])  # type: ignore[arg-type]
            prism[srcs[0]].append((k, v))  # type: ignore[union-attr]
        else:
            prism[srcs[0]] = v
    for s, val in list(prism.items()):
        if isinstance(val, list):
            order = sorted(val, key=lambda kv: {"q": 0, "k": 1, "v": 2}[kv[0].split(".")[-2][0]])
            prism[s] = torch.cat([t for _, t in order], dim=0)
    heads = {
        p: {k[len(p) + 1 :]: v for k, v in prism.items() if k.startswith(p + ".")}
        for p in ("action_head", "proprio_projector")
    }
    body = {
        k: v.contiguous()
        for k, v in prism.items()
        if not k.startswith(("action_head.", "proprio_projector."))
    }
    save_file(body, str(folder / "model.safetensors"))
    torch.save(
        {"module." + k: v.to(head_dtype) for k, v in heads["action_head"].items()},
        folder / f"action_head--{step}_checkpoint.pt",
    )
    if heads["proprio_projector"]:
        torch.save(
            {"module." + k: v for k, v in heads["proprio_projector"].items()},
            folder / f"proprio_projector--{step}_checkpoint.pt",
        )
    llm_cfg = policy.vla.llm_body().config
    cfg = {
        "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "image_sizes": [policy.vla.image_size] * 2,
        "use_fused_vision_backbone": True,
        "text_config": llm_cfg.to_dict(),
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    policy.tokenizer.save_pretrained(str(folder))
    save_statistics({dataset_name: policy.normalizer.stats}, folder)
    return folder
