"""A VGGT-compatible aggregator (geometry encoder), written for this project.

Same computation and parameter names as the aggregator of the released VGGT-1B checkpoint
(shared/REFERENCE.md, "VGGT-1B"), so its ``aggregator.*`` weights load from a local ``model.pt``
with ``weights_only=True``: a DINOv2 ViT with register tokens embeds each frame into patch
tokens; a camera token and register tokens (one set for the first frame, one for the others)
are prepended; then ``depth`` pairs of blocks alternate attention within each frame and across
all frames, with q/k LayerNorm and 2-D rotary position embeddings. Layer i's output is the
concatenation of the frame and global block outputs: (B, S, P, 2C).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.weights import compare_state_dicts
from simulator_service.config import VGGTConfig


class RotaryPositionEmbedding2D(nn.Module):
    """2-D RoPE: the first half of each head's features rotates with the row index, the second
    half with the column index (rotate-half convention, no parameters)."""

    def __init__(self, frequency: float = 100.0):
        super().__init__()
        self.frequency = frequency

    def _rope_1d(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        # x: (B, H, N, D), pos: (B, N) int
        d = x.shape[-1]
        inv_freq = 1.0 / (self.frequency ** (torch.arange(0, d, 2, device=x.device).float() / d))
        angles = pos.float()[..., None] * inv_freq  # (B, N, D/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, N, D)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, heads, N, D); pos: (B, N, 2) (row, col) -> (B, heads, N, D)."""
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat([self._rope_1d(rows, pos[..., 0]), self._rope_1d(cols, pos[..., 1])], -1)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool, rope: nn.Module | None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (DINOv2 / VGGT naming)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        init_values: float,
        eps: float,
        qk_norm: bool = False,
        rope: nn.Module | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)


class DinoViT(nn.Module):
    """DINOv2 ViT with register tokens; returns the normalized patch tokens (B, N, C)."""

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        c = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, c))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, init_values=1.0, eps=1e-6)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def _pos_embed(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if h * w == n and h == w:
            return self.pos_embed.to(dtype)
        m = int(math.sqrt(n))
        pos = self.pos_embed.float()
        patch = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", antialias=True)
        patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos[:, :1], patch], dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) normalized -> (B, H/p * W/p, C) patch tokens after the final norm."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)
        t = t + self._pos_embed(h, w, t.dtype)
        t = torch.cat([t[:, :1], self.register_tokens.expand(len(t), -1, -1), t[:, 1:]], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 1 + self.num_register_tokens :]


def _per_frame_tokens(token: torch.Tensor, b: int, s: int) -> torch.Tensor:
    """(1, 2, X, C) -> (B*S, X, C): index 0 for the first frame, index 1 for the others."""
    first = token[:, :1].expand(b, 1, -1, -1)
    rest = token[:, 1:].expand(b, s - 1, -1, -1)
    return torch.cat([first, rest], dim=1).reshape(b * s, *token.shape[2:])


class VGGTAggregator(nn.Module):
    """The aggregator of VGGT. Input (B, S, 3, H, W) in [0, 1]; H, W multiples of the patch."""

    _resnet_mean: torch.Tensor
    _resnet_std: torch.Tensor

    def __init__(self, cfg: VGGTConfig):
        super().__init__()
        c = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed = DinoViT(cfg)
        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq)

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(
                Block(
                    c,
                    cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    init_values=0.01,
                    eps=1e-5,
                    qk_norm=True,
                    rope=self.rope,
                )
                for _ in range(cfg.depth)
            )

        self.frame_blocks = blocks()
        self.global_blocks = blocks()
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, c) * 1e-6)
        self.patch_start_idx = 1 + cfg.num_register_tokens
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
        self.register_buffer("_resnet_mean", mean, persistent=False)
        self.register_buffer("_resnet_std", std, persistent=False)

    def _positions(self, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        rows, cols = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
        )
        patch = torch.stack([rows, cols], dim=-1).reshape(1, h * w, 2) + 1
        special = torch.zeros(1, self.patch_start_idx, 2, dtype=patch.dtype, device=device)
        return torch.cat([special, patch], dim=1).expand(n, -1, -1)  # (n, P, 2)

    def forward(self, images: torch.Tensor, *, num_layers: int | None = None) -> list[torch.Tensor]:
        """Run the aggregator.

        Args:
            images: (B, S, 3, H, W) in [0, 1].
            num_layers: run only the first blocks (outputs of later layers are not needed).
        Returns:
            list of (B, S, P, 2C) per layer run; P = 1 + registers + patches.
        """
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(
                f"VGGT aggregator needs images (B, S, 3, H, W), got {tuple(images.shape)}"
            )
        b, s, _, h, w = images.shape
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"VGGT input size {h}x{w} must be a multiple of the patch size {p}")
        x = (images - self._resnet_mean) / self._resnet_std
        patches = self.patch_embed(x.reshape(b * s, 3, h, w))  # (B*S, N, C)
        tokens = torch.cat(
            [
                _per_frame_tokens(self.camera_token, b, s),
                _per_frame_tokens(self.register_token, b, s),
                patches,
            ],
            dim=1,
        )
        n_tok, c = tokens.shape[1], tokens.shape[2]
        pos = self._positions(b * s, h // p, w // p, images.device)
        outputs = []
        for i in range(num_layers or self.cfg.depth):
            tokens = self.frame_blocks[i](tokens.reshape(b * s, n_tok, c), pos)
            frame_out = tokens.reshape(b, s, n_tok, c)
            tokens = self.global_blocks[i](
                tokens.reshape(b, s * n_tok, c), pos.reshape(b, s * n_tok, 2)
            )
            outputs.append(torch.cat([frame_out, tokens.reshape(b, s, n_tok, c)], dim=-1))
        return outputs


def load_vggt_aggregator(module: VGGTAggregator, path: str | Path) -> None:
    """Load ``aggregator.*`` from a VGGT checkpoint (bare state dict), skipping the heads.

    Args:
        module: the aggregator to fill (its config must match the checkpoint's).
        path: ``model.pt`` (loaded with ``weights_only=True``) or a ``.safetensors`` file.
    Raises:
        FileNotFoundError: no such file. ValueError: not a state dict, missing / unexpected
            aggregator keys or shape mismatches (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGGT weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refused or corrupt file
            raise ValueError(f"VGGT weights {path} cannot be read as a state dict: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"VGGT weights {path} hold a {type(state).__name__}, not a state dict")
    prefix = "aggregator."
    agg = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not agg:
        raise ValueError(
            f"VGGT weights {path} have no 'aggregator.*' keys (is this a VGGT checkpoint?)"
        )
    m = compare_state_dicts(module.state_dict(), agg)
    if m.keys_differ:
        raise ValueError(
            f"VGGT weights {path} do not match the configured aggregator: missing "
            f"{len(m.missing)} key(s) {['aggregator.' + k for k in m.missing[:5]]}, unexpected "
            f"{len(m.unexpected)} {['aggregator.' + k for k in m.unexpected[:5]]}; check "
            "vggt.depth and vggt.num_register_tokens"
        )
    if m.wrong_shapes:
        k, got, want = m.wrong_shapes[0]
        raise ValueError(
            f"VGGT weights {path}: aggregator.{k} has shape {got}, "
            f"the configured aggregator expects {want}; check "
            "vggt.embed_dim, vggt.patch_size and vggt.img_size"
        )
    module.load_state_dict(agg, strict=True)


__all__ = ["VGGTAggregator", "load_vggt_aggregator", "RotaryPositionEmbedding2D"]
