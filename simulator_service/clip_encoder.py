"""Semantic encoder: an open_clip image tower (``open_clip.transformer.VisionTransformer``).

Any open_clip architecture by name (its config ships with the package, so building needs no
network) or a tiny custom config for CPU; pretrained weights come from a local open_clip
checkpoint (``visual.*`` keys of a whole CLIP state dict, or a bare tower state dict).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import core.compat  # noqa: F401  (must precede open_clip: torchvision fix on CPU torch)
from core.weights import compare_state_dicts
from simulator_service.config import ClipConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _vision_cfg(cfg: ClipConfig) -> tuple[int, dict]:
    import open_clip

    if cfg.model_name == "custom":
        vision = dict(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.width,
            layers=cfg.layers,
            head_width=cfg.width // cfg.heads,
        )
        return cfg.embed_dim, vision
    model_cfg = open_clip.get_model_config(cfg.model_name)
    if model_cfg is None:
        raise ValueError(
            f"clip.model_name {cfg.model_name!r} is not an open_clip architecture; "
            f"choose one of open_clip.list_models() or 'custom'"
        )
    return model_cfg["embed_dim"], dict(model_cfg["vision_cfg"])


class ClipImageEncoder(nn.Module):
    """OpenCLIP image tower returning its patch tokens.

    Attributes:
        width: token width (the tower's transformer width).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        embed_dim, vision = _vision_cfg(cfg)
        if "timm_model_name" in vision and vision["timm_model_name"]:
            raise ValueError(
                f"clip.model_name {cfg.model_name!r} uses a timm tower; choose an "
                "open_clip ViT architecture (tokens are read from its transformer)"
            )
        vision["output_tokens"] = True
        self.visual = _build_vision_tower(embed_dim, CLIPVisionCfg(**vision))
        size = vision.get("image_size", 224)
        self.image_size = size if isinstance(size, int) else int(size[0])
        self.width = int(vision.get("width", 768))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [0, 1] -> tokens (B, N, width) (resized to the tower's size)."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        _, tokens = self.visual((images - self.mean) / self.std)
        return tokens


def load_clip_visual(encoder: ClipImageEncoder, path: str | Path) -> None:
    """Load an open_clip checkpoint's image tower from a local file.

    Args:
        encoder: the tower to fill.
        path: .pt / .bin (loaded with ``weights_only=True``) or .safetensors holding a CLIP
            state dict (``visual.*`` keys) or the tower's own keys.
    Raises:
        FileNotFoundError, ValueError: missing file, unreadable file, or keys / shapes that do
            not match the configured architecture (named).
    """
    from open_clip.factory import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights {path} do not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as e:
        raise ValueError(f"CLIP weights {path} cannot be read as a state dict: {e}") from None
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    m = compare_state_dicts(encoder.visual.state_dict(), state)
    if m.keys_differ:
        raise ValueError(
            f"CLIP weights {path} do not match clip.model_name="
            f"{encoder_name(encoder)}: missing {m.missing[:5]}, unexpected {m.unexpected[:5]}"
        )
    if m.wrong_shapes:
        k, got, want = m.wrong_shapes[0]
        raise ValueError(
            f"CLIP weights {path}: visual.{k} has shape {got}, the configured tower expects {want}"
        )
    encoder.visual.load_state_dict(state, strict=True)


def encoder_name(encoder: ClipImageEncoder) -> str:
    return f"(width {encoder.width}, image {encoder.image_size})"


__all__ = ["ClipImageEncoder", "load_clip_visual"]
