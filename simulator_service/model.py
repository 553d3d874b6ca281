"""The world model: an action-conditioned diffusion U-Net (World-Env's simulator).

Input channels of the diffusers ``UNet2DConditionModel``: the noisy target, the K history frames
from the memory bank and the action map. Reference-frame tokens (VGGT + CLIP, projected) enter
by cross-attention at the configured (low) resolutions. Pixel space for the CPU configs; latent
space through a frozen ``AutoencoderKL`` for the full config. Optionally the target is the change
from the latest history frame, scaled by ``residual_scale`` ("copy" is then the starting point),
and the loss is weighted toward pixels that really change.

Frames at the public boundary are float tensors in [0, 1], batch first, channels first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

import core.compat  # noqa: F401  (before diffusers: torchvision fix on CPU torch)
from simulator_service.conditioning import ConditioningProjector, Features, FrozenEncoders
from simulator_service.config import SimulatorConfig

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel

# diffusers is imported inside functions, after core.compat has run (its U-Net import
# pulls in transformers and torchvision, which fail on CPU torch without the fix).


def build_unet(
    cfg: SimulatorConfig, *, in_channels: int, out_channels: int, sample_size: int
) -> UNet2DConditionModel:
    """The denoiser; cross-attention only at ``cfg.attention_levels`` (and the mid block)."""
    from diffusers import UNet2DConditionModel

    levels = range(len(cfg.block_out_channels))
    down = tuple(
        "CrossAttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels
    )
    up = tuple(
        "CrossAttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels)
    )
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
    )


def build_vae(cfg: SimulatorConfig) -> AutoencoderKL:
    """Frozen ``AutoencoderKL`` from a local diffusers folder, or random from the config."""
    from diffusers import AutoencoderKL

    if cfg.vae.weights:
        from pathlib import Path

        if not Path(cfg.vae.weights).is_dir():
            raise FileNotFoundError(f"vae.weights {cfg.vae.weights} is not a diffusers folder")
        vae = AutoencoderKL.from_pretrained(cfg.vae.weights, local_files_only=True)
    else:
        n = len(cfg.vae.block_out_channels)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(cfg.vae.block_out_channels),
            latent_channels=cfg.vae.latent_channels,
            norm_num_groups=min(32, min(cfg.vae.block_out_channels)),
        )
    vae.requires_grad_(False)
    return vae.eval()


class WorldModel(nn.Module):
    """Predicts the next frame from history frames, an action map and reference features.

    Args:
        cfg: the simulator config (architecture, target, sampler).
    """

    def __init__(self, cfg: SimulatorConfig):
        from diffusers import DDPMScheduler

        super().__init__()
        self.cfg = cfg
        self.encoders = FrozenEncoders(cfg)
        self.projector = ConditioningProjector(self.encoders.widths, cfg.cross_attention_dim)
        self.vae = build_vae(cfg) if cfg.space == "latent" else None
        if self.vae is not None:
            down = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.channels, self.res = self.vae.config.latent_channels, cfg.image_size // down
        else:
            self.channels, self.res = 3, cfg.image_size
        self.unet = build_unet(
            cfg,
            in_channels=self.channels * (1 + cfg.history) + 3,
            out_channels=self.channels,
            sample_size=self.res,
        )
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type,
            clip_sample=False,
        )
        # train.timesteps = "sampler": the only timesteps the loss draws and sampling may visit
        self.trained_timesteps = (
            self.make_sampler().timesteps if cfg.train.timesteps == "sampler" else None
        )
        self.sample_bf16 = False  # serving options: ``use_fast_path``
        self.channels_last = False
        self._compiled: dict[str, Any] = {}  # a dict: a compiled U-Net is no submodule
        self._samplers: dict[tuple[str, int], Any] = {}  # ``predict``'s, per (sampler, steps)

    def use_fast_path(
        self,
        *,
        bf16: bool = False,
        compile: bool = False,
        trace: bool = False,
        channels_last: bool = False,
    ) -> None:
        """How ``predict`` runs the U-Net (``cluster.simulator.bf16`` / ``.compile`` /
        ``.trace``): in bf16 autocast (the scheduler's arithmetic stays fp32), through
        ``torch.compile``, as a frozen TorchScript graph (``simulator_service.traced``; a
        served model's weights must not change afterwards), and with its weights in
        channels-last memory layout (the served models: ~15-20% faster convolutions on CPU at
        batch 16, the same values up to float rounding; its inputs are then made channels-last
        too, so every activation stays in that layout: another ~9% per 16-frame call). Only
        sampling changes; the checkpoint sees the plain module."""
        if compile and trace:
            raise ValueError("the U-Net is either compiled or traced, not both")
        self.sample_bf16 = bf16
        self.channels_last = channels_last
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self._compiled = {}
        if compile:
            self._compiled["unet"] = torch.compile(self.unet)
        elif trace:
            from simulator_service.traced import TracedUNet

            self._compiled["unet"] = TracedUNet(self.unet)

    # ---- spaces -------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.unet, self.projector) for p in m.parameters()]

    def check_frames(self, frames: torch.Tensor, name: str, ndim: int) -> None:
        """Raise ValueError naming ``name`` unless frames are float (..., 3, S, S) in the
        model's image size S."""
        s = self.cfg.image_size
        if frames.ndim != ndim or frames.shape[-3:] != (3, s, s):
            raise ValueError(
                f"{name} must be float frames of shape ({'B, ' * (ndim - 3)}3, {s}, {s}) "
                f"for this simulator (image_size {s}), got {tuple(frames.shape)}"
            )
        if not frames.is_floating_point():
            raise ValueError(
                f"{name} must be float in [0, 1], got dtype {frames.dtype} "
                "(convert uint8 frames with frames.float() / 255)"
            )

    @torch.no_grad()
    def to_space(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> the denoising space: [-1, 1] pixels or scaled latents."""
        x = frames * 2 - 1
        if self.vae is None:
            return x
        return self.vae.encode(x).latent_dist.mode() * self.cfg.vae.scaling_factor

    @torch.no_grad()
    def from_space(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of ``to_space``: -> (N, 3, H, W) in [0, 1]."""
        if self.vae is not None:
            x = self.vae.decode(x / self.cfg.vae.scaling_factor).sample
        return ((x + 1) / 2).clamp(0, 1)

    def _action_input(self, action_map: torch.Tensor) -> torch.Tensor:
        if action_map.shape[-1] != self.res:
            return F.interpolate(action_map, size=(self.res, self.res), mode="area")
        return action_map

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        history: torch.Tensor,
        action_map: torch.Tensor,
        tokens: torch.Tensor,
        *,
        net: Any = None,
    ) -> torch.Tensor:
        """One U-Net pass (through ``net``, another handle of the U-Net, when given). x_t
        (B, c, r, r); history (B, K, c, r, r) in model space; action_map (B, 3, H, W) in
        [0, 1]; tokens (B, N, D) -> prediction (B, c, r, r)."""
        inp = torch.cat([x_t, history.flatten(1, 2), self._action_input(action_map)], dim=1)
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return (self.unet if net is None else net)(inp, t, encoder_hidden_states=tokens).sample

    # ---- encoders -----------------------------------------------------------------------
    def encode_reference(self, reference: torch.Tensor) -> Features:
        """Frozen encoder features of an episode's reference frames (compute once, cache).

        Args:
            reference: (B, S, 3, H, W) float in [0, 1], S = num_reference_frames.
        Returns:
            Features for ``predict`` / ``loss``.
        """
        self.check_frames(reference, "reference frames", 5)
        return self.encoders(reference)

    # ---- training -----------------------------------------------------------------------
    def loss(
        self,
        history: torch.Tensor,
        action_map: torch.Tensor,
        features: Features,
        target: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Weighted denoising loss on one batch.

        Args:
            history: (B, K, 3, H, W) in [0, 1], oldest first (the last is the previous frame).
            action_map: (B, 3, H, W) in [0, 1], the next EE pose drawn.
            features: reference features (batch B).
            target: (B, 3, H, W) in [0, 1], the real next frame.
        Returns:
            scalar loss.
        """
        b, k = history.shape[:2]
        hist = self.to_space(history.flatten(0, 1)).unflatten(0, (b, k))
        nxt = self.to_space(target)
        prev = hist[:, -1]
        x0 = (nxt - prev) / self.cfg.residual_scale if self.cfg.residual else nxt
        gdev = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(x0.device)
        t = self.train_timesteps(b, generator=generator, device=gdev).to(x0.device)
        x_t = self.noise_scheduler.add_noise(x0, noise, t)
        if self.cfg.prediction_type == "epsilon":
            tgt = noise
        else:
            tgt = self.noise_scheduler.get_velocity(x0, noise, t)
        tokens = self.projector(features, b)
        pred = self.denoise(x_t, t, hist, action_map, tokens)
        weight = self.change_weight(history[:, -1], target)
        if weight.shape[-1] != self.res:
            weight = F.adaptive_max_pool2d(weight, self.res)
        return (weight * (pred.float() - tgt.float()) ** 2).mean()

    def train_timesteps(
        self, b: int, *, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """(b,) timesteps for the loss: uniform over all of them, or (train.timesteps =
        "sampler") drawn from those the configured sampler visits."""
        if self.trained_timesteps is not None:
            visited = self.trained_timesteps.to(device=device, dtype=torch.long)  # (S,)
            pick = torch.randint(0, len(visited), (b,), generator=generator, device=device)
            return visited[pick]
        return torch.randint(
            0, self.cfg.num_train_timesteps, (b,), generator=generator, device=device
        )

    def change_weight(self, previous: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel loss weight: 1 + changed_weight where the frame changes by more than
        changed_threshold (max over channels), grown by changed_dilation pixels.

        Args:
            previous, target: (B, 3, H, W) in [0, 1].
        Returns:
            (B, 1, H, W) weights.
        """
        changed = (target - previous).abs().amax(dim=1, keepdim=True)  # (B, 1, H, W)
        mask = (changed > self.cfg.changed_threshold).float()
        if self.cfg.changed_dilation:
            d = self.cfg.changed_dilation
            mask = F.max_pool2d(mask, kernel_size=2 * d + 1, stride=1, padding=d)
        return 1.0 + self.cfg.changed_weight * mask

    # ---- sampling -----------------------------------------------------------------------
    def make_sampler(self, sampler: str | None = None, steps: int | None = None):
        """A fresh diffusers scheduler with its timesteps set ("ddim" or "dpmsolver++")."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        sampler = sampler or self.cfg.sampler
        steps = steps or self.cfg.sample_steps
        common = dict(
            num_train_timesteps=self.cfg.num_train_timesteps,
            beta_schedule=self.cfg.beta_schedule,
            prediction_type=self.cfg.prediction_type,
            timestep_spacing="trailing",
        )
        if sampler == "ddim":
            sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
        elif sampler == "dpmsolver++":
            sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **common)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose 'ddim' or 'dpmsolver++'")
        if not 1 <= steps <= self.cfg.num_train_timesteps:
            raise ValueError(
                f"sampling steps must be in [1, {self.cfg.num_train_timesteps}], got {steps}"
            )
        sched.set_timesteps(steps)
        return sched

    def _sampler(self, sampler: str | None, steps: int | None):
        """The scheduler ``predict`` uses: built once per (sampler, steps) (building one costs
        ~5 ms, as much as a tenth of a served 16-frame call), its timesteps set again at each
        use, which also clears a multistep solver's history."""
        key = (sampler or self.cfg.sampler, steps or self.cfg.sample_steps)
        sched = self._samplers.get(key)
        if sched is None:
            sched = self._samplers[key] = self.make_sampler(*key)
        else:
            sched.set_timesteps(key[1])
        return sched

    @torch.no_grad()
    def noise_shape(self, b: int) -> tuple[int, int, int, int]:
        """Shape of the initial noise of ``b`` sampled frames (pixel or latent space)."""
        return (b, self.channels, self.res, self.res)

    def predict(
        self,
        history: torch.Tensor,
        action_map: torch.Tensor,
        conditioning: Features,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample the next frames.

        Args:
            history: (B, K, 3, H, W) float in [0, 1], from the memory bank, oldest first.
            action_map: (B, 3, H, W) float in [0, 1].
            conditioning: reference features from ``encode_reference`` (batch B), cached per
                episode by the caller.
            steps, sampler: override the config's denoising steps / sampler.
            generator: seeds the initial noise (deterministic sampling).
            noise: the initial noise itself, ``noise_shape(B)`` (None: drawn with
                ``generator``); a caller that draws it per environment makes each frame
                independent of the batch it is sampled in.
        Returns:
            (B, 3, H, W) float in [0, 1], the predicted next frames.
        """
        self.check_frames(history, "history", 5)
        self.check_frames(action_map, "action_map", 4)
        b, k = history.shape[:2]
        if k != self.cfg.history:
            raise ValueError(f"history must hold K={self.cfg.history} frames, got {k}")
        if len(action_map) != b:
            raise ValueError(f"action_map batch {len(action_map)} != history batch {b}")
        hist = self.to_space(history.flatten(0, 1)).unflatten(0, (b, k))
        tokens = self.projector(conditioning, b)
        sched = self._sampler(sampler, steps)
        if self.trained_timesteps is not None and not torch.equal(
            sched.timesteps, self.trained_timesteps
        ):
            raise ValueError(
                f"this world model trained only at the timesteps of {self.cfg.sampler} with "
                f"{self.cfg.sample_steps} step(s) (simulator.train.timesteps = 'sampler'); "
                f"sample with those, or retrain with train.timesteps = 'all'"
            )
        if noise is None:
            gdev = generator.device if generator is not None else hist.device
            noise = torch.randn(self.noise_shape(b), generator=generator, device=gdev)
        elif tuple(noise.shape) != self.noise_shape(b):
            raise ValueError(f"noise must be {self.noise_shape(b)}, got {tuple(noise.shape)}")
        x = noise.to(hist.device)
        x = x * sched.init_noise_sigma
        autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.sample_bf16)
        unet = self._compiled.get("unet")  # None: the plain U-Net
        for t in sched.timesteps:
            model_in = sched.scale_model_input(x, t)
            tt = torch.full((b,), int(t), device=x.device, dtype=torch.long)
            with autocast:
                pred = self.denoise(model_in, tt, hist, action_map, tokens, net=unet)
            x = sched.step(pred.float(), t, x).prev_sample
        if self.cfg.residual:
            delta = self.cfg.residual_scale * x  # (B, c, r, r) change in [-1, 1] pixel units
            if self.cfg.residual_deadzone > 0 and self.vae is None:
                # a pixel whose predicted change is below the deadzone (in [0, 1] units) keeps
                # its value: sampling noise there would pile up as speckle over open-loop steps
                moved = delta.abs().amax(dim=1, keepdim=True) >= 2 * self.cfg.residual_deadzone
                delta = delta * moved
            x = hist[:, -1] + delta
        return self.from_space(x)


__all__ = ["WorldModel", "build_unet", "build_vae"]
