"""Imagined rollouts of a batch of environments: memory bank + action maps + world model.

``reset`` takes the real starting frames and proprio states; ``step`` takes 7-D actions,
advances the proprio state by kinematics (``envs.kinematics.next_proprio``, no network) unless
the caller gives the next states, draws the action maps, samples the next frames in one batched
U-Net call and appends them to the memory bank. Reference features are computed once at reset.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.base import Camera
from simulator_service.action_map import render_action_maps
from simulator_service.conditioning import Features
from simulator_service.memory_bank import MemoryBank
from simulator_service.model import WorldModel


def frames_to_tensor(frames: np.ndarray, size: int, name: str) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]; ValueError naming ``name``."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
        raise ValueError(
            f"{name} must be uint8 frames (B, {size}, {size}, 3), got {frames.shape} {frames.dtype}"
        )
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


class ImaginedRollout:
    """Steps a batch of imagined environments.

    Args:
        model: the world model (eval mode).
        camera: the camera of the real environment (action maps).
        limits: controller limits for ``next_proprio`` (None = the kinematics' defaults).
        seed: base seed of the sampling noise (deterministic rollouts).
    """

    def __init__(self, model: WorldModel, camera: Camera, *, limits=None, seed: int = 0):
        if camera is None:
            raise ValueError("an imagined rollout needs the environment's camera (action maps)")
        self.model = model
        self.camera = camera
        self.limits = limits
        self.bank = MemoryBank(model.cfg.history)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = next(model.unet.parameters()).device
        self.proprio: np.ndarray | None = None
        self.features: Features | None = None

    def reset(self, frames: np.ndarray, proprio: np.ndarray) -> None:
        """Start from real frames (B, H, W, 3) uint8 (or (B, T0, H, W, 3) context frames, the
        first ones used as reference) and proprio states (B, 8)."""
        size = self.model.cfg.image_size
        frames = np.asarray(frames)
        ctx = frames if frames.ndim == 5 else frames[:, None]
        b, t0 = ctx.shape[:2]
        x = frames_to_tensor(ctx.reshape(b * t0, *ctx.shape[2:]), size, "initial frames")
        x = x.view(b, t0, 3, size, size).to(self.device)
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.shape != (b, 8):
            raise ValueError(f"initial proprio must be ({b}, 8), got {proprio.shape}")
        n_ref = self.model.cfg.num_reference_frames
        ref = x[:, np.minimum(np.arange(n_ref), t0 - 1)]
        self.features = self.model.encode_reference(ref)
        self.bank.reset(x)
        self.proprio = proprio

    def step(
        self,
        actions: np.ndarray | None = None,
        *,
        next_proprio: np.ndarray | None = None,
        steps: int | None = None,
    ) -> np.ndarray:
        """Advance every environment by one imagined step.

        Args:
            actions: (B, 7) actions (used when ``next_proprio`` is not given).
            next_proprio: (B, 8) next states, e.g. recorded ones for open-loop replay.
            steps: denoising steps (None = the config's).
        Returns:
            (B, H, W, 3) uint8 predicted frames.
        """
        if self.proprio is None or self.features is None:
            raise ValueError("call reset() before step()")
        b = len(self.proprio)
        if next_proprio is None:
            from envs.kinematics import next_proprio as kinematics

            a = np.asarray(actions, dtype=np.float32)
            if a.shape != (b, 7):
                raise ValueError(f"actions must be ({b}, 7), got {a.shape}")
            kwargs = {} if self.limits is None else {"limits": self.limits}
            next_proprio = np.asarray(kinematics(self.proprio, a, **kwargs), dtype=np.float32)
        next_proprio = np.asarray(next_proprio, dtype=np.float32)
        if next_proprio.shape != (b, 8):
            raise ValueError(f"next proprio must be ({b}, 8), got {next_proprio.shape}")
        size = self.model.cfg.image_size
        maps = render_action_maps(next_proprio, self.camera, self.model.cfg.action_map, size=size)
        amap = torch.from_numpy(maps).permute(0, 3, 1, 2).to(self.device)
        frames = self.model.predict(
            self.bank.select(), amap, self.features, steps=steps, generator=self.generator
        )
        self.bank.append(frames)
        self.proprio = next_proprio
        return (frames.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


__all__ = ["ImaginedRollout", "frames_to_tensor"]
