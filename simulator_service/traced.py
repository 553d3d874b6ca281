"""The world model's U-Net as a frozen TorchScript graph: a CPU serving path without Python.

On CPUs a served 16-frame U-Net call spends a sixth of its time in the Python of the diffusers
modules (hundreds of small module calls per pass); a graph traced once and frozen (weights
folded in as constants) runs the same operators without it. A trace records one path through
that Python: the U-Net's depends on the frame size and on one batch threshold (diffusers makes
the input contiguous from 64 frames on), not on the batch itself or the timesteps, so one
graph per side of the threshold serves every batch (the tests compare traced and eager passes
at several batch sizes and timesteps). The weights must not change after the first call:
served world models never train.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# diffusers' Upsample2D: ``if hidden_states.shape[0] >= 64: hidden_states.contiguous()``
_BIG_BATCH = 64


class _Positional(nn.Module):
    """The U-Net with positional inputs and a tensor output (what tracing needs)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, tokens: torch.Tensor):
        return self.unet(sample, timestep, encoder_hidden_states=tokens, return_dict=False)[0]


@dataclass
class TracedOutput:
    """What ``WorldModel.denoise`` reads of a U-Net call."""

    sample: torch.Tensor


class TracedUNet:
    """Called like the U-Net in ``WorldModel.denoise``; traced and frozen at its first call
    (and once more at the first batch of 64 or more frames).

    Args:
        unet: the trained ``UNet2DConditionModel`` (in eval mode, weights final).
    """

    def __init__(self, unet: nn.Module):
        self.unet = unet
        self._graphs: dict[bool, Any] = {}

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor, *, encoder_hidden_states: torch.Tensor
    ) -> TracedOutput:
        args = (sample, timestep.expand(sample.shape[0]), encoder_hidden_states)
        big = sample.shape[0] >= _BIG_BATCH
        graph = self._graphs.get(big)
        if graph is None:
            graph = self._graphs[big] = self._trace(args)
        return TracedOutput(sample=graph(*args))

    def _trace(self, args: tuple[torch.Tensor, ...]) -> Any:
        if self.unet.training:
            raise RuntimeError("a traced U-Net serves a model in eval mode only")
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer's notes on the branches above, and the API's deprecation notice
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(_Positional(self.unet).eval(), args, check_trace=False)
            return torch.jit.freeze(graph)


__all__ = ["TracedUNet"]
