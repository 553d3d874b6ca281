"""The world model behind the simulator service: per-group state, one U-Net call for many groups.

Each episode group (N environments of one rollout worker) keeps its memory bank, its reference
features (encoded once at reset) and its sampling generator (seeded from the backend's seed and
the group's key, so a group's frames do not depend on which other groups share its batch, nor on
the process that serves it). ``step_batch`` gathers the conditioning of every requested group,
runs a single ``WorldModel.predict`` over all of their environments that are still running, and
splits the frames back: the batching that makes imagined rollouts cheap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

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
    if not frames.flags.writeable:  # arrays from Ray's object store are read-only
        frames = frames.copy()
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


@dataclass
class _Group:
    bank: MemoryBank
    features: Features
    size: int
    generator: torch.Generator
    common_noise: bool = False  # one noise draw per step, shared by the group's environments


def group_seed(seed: int, key: str) -> int:
    """The sampling seed of the group named ``key`` under a backend seeded with ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63


class KeyedWorldSimulator:
    """Keyed, batched simulator backend over a trained ``WorldModel``.

    Args:
        model: the world model (put in eval mode here).
        camera: the real env's camera (action maps).
        seed: seeds the sampling noise (with each group's key: ``group_seed``).
        steps: denoising steps per frame (None: the model config's).
    """

    def __init__(
        self, model: WorldModel, camera: Camera, *, seed: int = 0, steps: int | None = None
    ):
        self.model = model.eval()
        self.camera = camera
        self.steps = steps
        self.seed = seed
        self.device = next(model.unet.parameters()).device
        self._groups: dict[str, _Group] = {}

    def reset(
        self, key: str, frames: np.ndarray, proprio: np.ndarray, *, common_noise: bool = False
    ) -> None:
        """frames: (N, T0, H, W, 3) uint8 context (first = reference, last = current).
        ``common_noise``: every step draws one noise for the whole group (common random
        numbers), so its environments given the same actions from the same start get the
        same frames: they share one imagined state until their actions differ (one-step
        exploration, ``rollout.explore: one_step``)."""
        size = self.model.cfg.image_size
        frames = np.asarray(frames)
        if frames.ndim != 5:
            raise ValueError(
                f"simulator reset needs context frames (N, T0, H, W, 3), got {frames.shape}"
            )
        n, t0 = frames.shape[:2]
        x = frames_to_tensor(frames.reshape(n * t0, *frames.shape[2:]), size, "initial frames")
        x = x.view(n, t0, 3, size, size).to(self.device)
        n_ref = self.model.cfg.num_reference_frames
        ref = x[:, np.minimum(np.arange(n_ref), t0 - 1)]
        with torch.no_grad():
            features = self.model.encode_reference(ref)
        bank = MemoryBank(self.model.cfg.history)
        bank.reset(x)
        gen = torch.Generator().manual_seed(group_seed(self.seed, key))
        self._groups[key] = _Group(
            bank=bank, features=features, size=n, generator=gen, common_noise=common_noise
        )

    def release(self, key: str) -> None:
        self._groups.pop(key, None)

    def _noise(self, g: _Group) -> torch.Tensor:
        """The group's initial noise of one step, ``noise_shape(g.size)``: one draw per
        environment, or one shared draw (``common_noise``)."""
        if g.common_noise:
            one = torch.randn(self.model.noise_shape(1), generator=g.generator)
            return one.expand(g.size, *one.shape[1:])
        return torch.randn(self.model.noise_shape(g.size), generator=g.generator)

    def step_batch(self, requests: list[tuple], *, steps: int | None = None) -> list[np.ndarray]:
        """requests: (key, next_proprio (N_i, 8)) or (key, next_proprio, active (N_i,) bool)
        -> next frames (N_i, H, W, 3) uint8 each; ``steps``: denoising steps of this call (None:
        the backend's). Environments not active (ended) are left out of the model call and
        keep their last frame; every environment's noise is drawn, so the active ones get the
        same frames as when all run."""
        groups, rows = [], []
        for key, p, *rest in requests:
            if key not in self._groups:
                raise KeyError(f"simulator has no episode group {key!r} (reset it first)")
            g = self._groups[key]
            active = np.ones(g.size, dtype=bool) if not rest else np.asarray(rest[0], dtype=bool)
            if np.asarray(p).shape != (g.size, 8) or active.shape != (g.size,):
                raise ValueError(
                    f"group {key!r} holds {g.size} environments: next proprio must be "
                    f"({g.size}, 8) and the active mask ({g.size},), got "
                    f"{np.asarray(p).shape} and {active.shape}"
                )
            groups.append(g)
            rows.append(torch.from_numpy(np.nonzero(active)[0]))
        noise = torch.cat([self._noise(g)[r] for g, r in zip(groups, rows, strict=True)])
        latest = [g.bank.latest() for g in groups]  # (N_i, 3, H, W): ended envs keep these
        live = [(g, r) for g, r in zip(groups, rows, strict=True) if len(r)]
        if live:
            proprio = np.concatenate(
                [
                    np.asarray(p, dtype=np.float32)[r.numpy()]
                    for (_, p, *_), r in zip(requests, rows, strict=True)
                ]
            )
            size = self.model.cfg.image_size
            maps = render_action_maps(proprio, self.camera, self.model.cfg.action_map, size=size)
            amap = torch.from_numpy(maps).permute(0, 3, 1, 2).to(self.device)
            history = torch.cat([g.bank.select()[r] for g, r in live])
            features = {
                k: torch.cat([g.features[k][r.to(g.features[k].device)] for g, r in live])
                for k in groups[0].features
            }
            frames = self.model.predict(
                history, amap, features, steps=steps or self.steps, noise=noise
            )
        out, start = [], 0
        for g, r, last in zip(groups, rows, latest, strict=True):
            f = last.clone()
            if len(r):
                f[r.to(f.device)] = frames[start : start + len(r)].to(f.dtype)
                start += len(r)
            g.bank.append(f)
            out.append((f.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8))
        return out
