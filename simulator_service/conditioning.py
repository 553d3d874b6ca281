"""Reference-frame conditioning: frozen VGGT (geometry) and CLIP (semantics) tokens, projected
to the U-Net's cross-attention width.

The frozen encoders run once per episode on its reference frames (``FrozenEncoders``, results
kept by ``FeatureCache``); only the light trainable projection (``ConditioningProjector``) runs
at every step. A learned null token is always present, so the U-Net has something to attend to
when both encoders are disabled.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from simulator_service.clip_encoder import ClipImageEncoder, load_clip_visual
from simulator_service.config import SimulatorConfig
from simulator_service.vggt import VGGTAggregator, load_vggt_aggregator

Features = dict[str, torch.Tensor]


class FrozenEncoders(nn.Module):
    """VGGT aggregator and CLIP tower (each optional), frozen, in eval mode."""

    def __init__(self, cfg: SimulatorConfig):
        super().__init__()
        self.cfg = cfg
        self.vggt = VGGTAggregator(cfg.vggt) if cfg.vggt.enabled else None
        self.clip = ClipImageEncoder(cfg.clip) if cfg.clip.enabled else None
        if self.vggt is not None and cfg.vggt.weights:
            load_vggt_aggregator(self.vggt, cfg.vggt.weights)
        if self.clip is not None and cfg.clip.weights:
            load_clip_visual(self.clip, cfg.clip.weights)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenEncoders:
        return super().train(False)  # always eval: frozen pretrained encoders

    @property
    def widths(self) -> dict[str, int]:
        out = {}
        if self.vggt is not None:
            out["vggt"] = 2 * self.cfg.vggt.embed_dim
        if self.clip is not None:
            out["clip"] = self.clip.width
        return out

    @torch.no_grad()
    def forward(self, reference: torch.Tensor) -> Features:
        """Encode reference frames.

        Args:
            reference: (B, S, 3, H, W) float in [0, 1].
        Returns:
            {"vggt": (B, S * patches, 2C), "clip": (B, S * tokens, width)} for enabled encoders.
        """
        b, s = reference.shape[:2]
        out: Features = {}
        if self.vggt is not None:
            size = self.cfg.vggt.input_size
            x = reference.flatten(0, 1)
            if x.shape[-2:] != (size, size):
                x = F.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
            layer = self.cfg.vggt.layer % self.cfg.vggt.depth
            tokens = self.vggt(x.view(b, s, 3, size, size), num_layers=layer + 1)[layer]
            patches = tokens[:, :, self.vggt.patch_start_idx :]  # (B, S, g*g, 2C)
            grid = size // self.cfg.vggt.patch_size
            pool = self.cfg.vggt.pool
            if pool > 1:
                p = patches.reshape(b * s, grid, grid, -1).permute(0, 3, 1, 2)
                p = F.avg_pool2d(p, pool)
                patches = p.flatten(2).transpose(1, 2).reshape(b, s, -1, p.shape[1])
            out["vggt"] = patches.reshape(b, -1, patches.shape[-1])
        if self.clip is not None:
            tokens = self.clip(reference.flatten(0, 1))  # (B*S, N, W)
            out["clip"] = tokens.reshape(b, -1, tokens.shape[-1])
        return out


class ConditioningProjector(nn.Module):
    """Projects each encoder's tokens to ``cross_attention_dim`` and appends a null token.

    Args:
        widths: token width per encoder name.
        dim: the U-Net's cross-attention width.
    """

    def __init__(self, widths: dict[str, int], dim: int):
        super().__init__()
        self.proj = nn.ModuleDict(
            {name: nn.Sequential(nn.LayerNorm(w), nn.Linear(w, dim)) for name, w in widths.items()}
        )
        self.type_embed = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(1, 1, dim)) for name in widths}
        )
        self.null_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)

    def forward(self, features: Features, batch: int) -> torch.Tensor:
        """features from ``FrozenEncoders`` (batch B) -> (B, N, dim) cross-attention tokens."""
        missing = sorted(set(self.proj) - set(features))
        if missing:
            raise ValueError(
                f"conditioning features lack {missing} (computed with other encoders?)"
            )
        parts = []
        for name, proj in self.proj.items():
            f = features[name]
            if f.shape[0] != batch:
                raise ValueError(
                    f"conditioning '{name}' has batch {f.shape[0]}, frames have {batch}"
                )
            parts.append(proj(f.float()) + self.type_embed[name])
        parts.append(self.null_token.expand(batch, -1, -1))
        return torch.cat(parts, dim=1)


class FeatureCache:
    """Encoder features per episode key: computed on first use, then reused for every step.

    Args:
        encode: function from reference frames (B, S, 3, H, W) to ``Features``.
    """

    def __init__(self, encode: Callable[[torch.Tensor], Features]):
        self._encode = encode
        self._store: dict[Hashable, Features] = {}
        self.calls = 0

    def get(self, keys: Sequence[Hashable], reference: Callable[[list], torch.Tensor]) -> Features:
        """Features of the episodes ``keys`` (batched), encoding only the ones not cached.

        Args:
            keys: one hashable key per batch row (e.g. episode ids).
            reference: returns the reference frames (len(new), S, 3, H, W) of the given keys.
        Returns:
            Features with batch len(keys), rows in the order of ``keys``.
        """
        new = list(dict.fromkeys(k for k in keys if k not in self._store))
        if new:
            self.calls += 1
            feats = self._encode(reference(new))
            for i, k in enumerate(new):
                self._store[k] = {n: f[i] for n, f in feats.items()}
        names = self._store[keys[0]].keys() if keys else []
        return {n: torch.stack([self._store[k][n] for k in keys]) for n in names}

    def drop(self, keys: Sequence[Hashable]) -> None:
        for k in keys:
            self._store.pop(k, None)

    def __len__(self) -> int:
        return len(self._store)


__all__ = ["FrozenEncoders", "ConditioningProjector", "FeatureCache", "Features"]
