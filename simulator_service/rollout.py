"""Imagined rollouts of one batch of environments in this process (evaluation, replays).

The one world-model stepping pipeline is ``simulator_service.keyed.KeyedWorldSimulator``
(memory bank, action maps, one batched U-Net call, reference features encoded once at reset),
which the simulator service runs for many groups at once; ``ImaginedRollout`` is that pipeline
for a single group, plus the kinematics that turn 7-D actions into the next proprio states
(``envs.kinematics.next_proprio``, no network) unless the caller gives them.
"""

from __future__ import annotations

import numpy as np

from envs.base import Camera
from simulator_service.keyed import KeyedWorldSimulator
from simulator_service.model import WorldModel

_KEY = "rollout"


class ImaginedRollout:
    """Steps one batch of imagined environments.

    Args:
        model: the world model (eval mode).
        camera: the camera of the real environment (action maps).
        limits: controller limits for ``next_proprio`` (None = the kinematics' defaults).
        seed: base seed of the sampling noise (deterministic rollouts).
    """

    def __init__(self, model: WorldModel, camera: Camera, *, limits=None, seed: int = 0):
        if camera is None:
            raise ValueError("an imagined rollout needs the environment's camera (action maps)")
        self.sim = KeyedWorldSimulator(model, camera, seed=seed)
        self.limits = limits
        self.proprio: np.ndarray | None = None

    def reset(self, frames: np.ndarray, proprio: np.ndarray) -> None:
        """Start from real frames (B, H, W, 3) uint8 (or (B, T0, H, W, 3) context frames, the
        first ones used as reference) and proprio states (B, 8)."""
        frames = np.asarray(frames)
        ctx = frames if frames.ndim == 5 else frames[:, None]
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.shape != (len(ctx), 8):
            raise ValueError(f"initial proprio must be ({len(ctx)}, 8), got {proprio.shape}")
        self.sim.reset(_KEY, ctx, proprio)
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
        if self.proprio is None:
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
        (frames,) = self.sim.step_batch([(_KEY, next_proprio)], steps=steps)
        self.proprio = next_proprio
        return frames


__all__ = ["ImaginedRollout"]
