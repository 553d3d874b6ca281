"""OpenVLA-OFT's heads: L1-regression action head, proprio projector, plus the Laplace scale head.

Module and parameter names mirror OFT's state-dict files (``model.layer_norm1``, ``model.fc1``,
``model.mlp_resnet_blocks.{i}.ffn.{0,1}``, ``model.layer_norm2``, ``model.fc2``; ``fc1``/``fc2``
for the proprio projector) so that importing them is a prefix strip.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LN -> fc1 -> ReLU -> blocks -> LN -> fc2 (OFT's action-head body)."""

    def __init__(self, *, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(
            MLPResNetBlock(hidden_dim) for _ in range(num_blocks)
        )
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


def group_action_hidden(hidden: torch.Tensor, action_dim: int) -> torch.Tensor:
    """Regroup the chunk * A action hidden states per chunk step.

    Args:
        hidden: (B, chunk * A, D) last hidden states at the action positions.
        action_dim: A.
    Returns:
        (B, chunk, A * D).
    """
    b, n, d = hidden.shape
    return hidden.reshape(b, n // action_dim, action_dim * d)


class L1RegressionActionHead(nn.Module):
    """OFT's action head: mu for a chunk from the action hidden states (2 residual blocks)."""

    def __init__(self, *, llm_dim: int, hidden_dim: int, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.model = MLPResNet(
            num_blocks=2,
            input_dim=llm_dim * action_dim,
            hidden_dim=hidden_dim,
            output_dim=action_dim,
        )

    def forward(self, grouped: torch.Tensor) -> torch.Tensor:
        """(B, chunk, A * D) -> mu (B, chunk, A)."""
        return self.model(grouped)


class LaplaceScaleHead(nn.Module):
    """Log-scale of the Laplace policy (RIPT-VLA): residual MLP -> Linear, bias init -3.

    The log-scale is clipped to [log_scale_min, log_scale_max] in the forward pass with a
    straight-through gradient: with the default bias -3 below the -2 floor, a hard clamp would
    give the head no gradient at all and it could never learn.
    """

    def __init__(
        self,
        *,
        llm_dim: int,
        hidden_dim: int,
        action_dim: int,
        num_blocks: int,
        bias_init: float,
        log_scale_min: float,
        log_scale_max: float,
    ):
        super().__init__()
        self.model = MLPResNet(
            num_blocks=num_blocks,
            input_dim=llm_dim * action_dim,
            hidden_dim=hidden_dim,
            output_dim=action_dim,
        )
        nn.init.normal_(self.model.fc2.weight, std=1e-3)
        nn.init.constant_(self.model.fc2.bias, bias_init)
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, grouped: torch.Tensor) -> torch.Tensor:
        """(B, chunk, A * D) -> log_scale (B, chunk, A), clipped."""
        raw = self.model(grouped)
        clipped = raw.clamp(self.log_scale_min, self.log_scale_max)
        return raw + (clipped - raw).detach()


class ProprioProjector(nn.Module):
    """Linear -> GELU -> Linear: the proprio state as one LLM token."""

    def __init__(self, *, llm_dim: int, proprio_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, P) normalized proprio -> (B, D)."""
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class FusedProjector(nn.Module):
    """Prismatic's fused MLP projector: fused vision width -> 4x -> LLM width -> LLM width."""

    def __init__(self, *, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.act_fn2 = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, vision_dim) -> (B, N, llm_dim)."""
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(patches)))))
