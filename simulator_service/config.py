"""Config of the world simulator: model (U-Net, encoders, action map, sampler) and training.

Three presets: ``tiny`` (tests, seconds), ``demo`` (the CPU tabletop run, <= 20 min on 2 cores;
the third calibration of shared/ENVIRONMENT.md), ``full`` (latent space through an
``AutoencoderKL``, VGGT-1B and an OpenCLIP ViT from local weights, GPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from core.configlib import require, to_dict


@dataclass
class VGGTConfig:
    """VGGT-compatible aggregator (geometry encoder). Defaults are VGGT-1B's.

    Attributes:
        enabled: use the geometry encoder's tokens for cross-attention.
        weights: local path of a VGGT ``model.pt`` (bare state dict); empty = random (tests).
        embed_dim, depth, num_heads, mlp_ratio, num_register_tokens, patch_size: as released.
        img_size: the size ``pos_embed`` was trained at (518 for VGGT-1B).
        input_size: frames are resized to this square size (a multiple of ``patch_size``).
        layer: which aggregator layer's output to use (-1 = last).
        pool: average-pool the patch grid by this factor before projection (fewer tokens).
        rope_freq: base frequency of the 2-D rotary position embedding (as released).
    """

    enabled: bool = True
    weights: str = ""
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_size: int = 14
    img_size: int = 518
    input_size: int = 518
    layer: int = -1
    pool: int = 1
    rope_freq: float = 100.0

    def __post_init__(self) -> None:
        require(
            self.embed_dim % self.num_heads == 0,
            f"vggt.embed_dim ({self.embed_dim}) must be divisible by vggt.num_heads "
            f"({self.num_heads})",
        )
        require(
            (self.embed_dim // self.num_heads) % 4 == 0,
            "vggt head dim (embed_dim / num_heads) must be a multiple of 4 for 2-D RoPE",
        )
        require(self.depth >= 1, f"vggt.depth must be >= 1, got {self.depth}")
        require(
            self.img_size % self.patch_size == 0 and self.input_size % self.patch_size == 0,
            f"vggt.img_size ({self.img_size}) and vggt.input_size ({self.input_size}) must "
            f"be multiples of vggt.patch_size ({self.patch_size})",
        )
        require(
            -self.depth <= self.layer < self.depth,
            f"vggt.layer must be in [-{self.depth}, {self.depth}), got {self.layer}",
        )
        grid = self.input_size // self.patch_size
        require(
            self.pool >= 1 and grid % self.pool == 0,
            f"vggt.pool ({self.pool}) must divide the patch grid ({grid})",
        )


@dataclass
class ClipConfig:
    """OpenCLIP image tower (semantic encoder).

    Attributes:
        enabled: use its tokens for cross-attention.
        model_name: an open_clip architecture name (e.g. "ViT-B-16"); "custom" uses the fields
            below (tiny CPU config).
        weights: local path of an open_clip checkpoint (.pt/.bin/.safetensors); empty = random.
        image_size, patch_size, width, layers, heads, embed_dim: the custom tower.
    """

    enabled: bool = True
    model_name: str = "custom"
    weights: str = ""
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    embed_dim: int = 512

    def __post_init__(self) -> None:
        require(
            self.image_size % self.patch_size == 0,
            f"clip.image_size ({self.image_size}) must be a multiple of clip.patch_size "
            f"({self.patch_size})",
        )
        require(
            self.width % self.heads == 0,
            f"clip.width ({self.width}) must be divisible by clip.heads ({self.heads})",
        )


@dataclass
class VAEConfig:
    """diffusers ``AutoencoderKL`` for latent-space denoising (``space: latent``).

    Attributes:
        weights: local diffusers folder of a pretrained VAE; empty = random (tests).
        block_out_channels, latent_channels: architecture when built randomly.
        scaling_factor: latents are multiplied by this (0.18215 for SD's VAE).
    """

    weights: str = ""
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    latent_channels: int = 4
    scaling_factor: float = 0.18215

    def __post_init__(self) -> None:
        require(len(self.block_out_channels) >= 1, "vae.block_out_channels must not be empty")


@dataclass
class ActionMapConfig:
    """How the next end-effector pose is drawn (see ``action_map.py``).

    Attributes:
        style: "axes" (World-Env / EVAC: a disk at the EE point colored by the gripper opening
            and three short lines along the EE axes) or "gripper" (the outline of a parallel-jaw
            gripper at the next pose: two fingers at the recorded finger positions and the palm
            joining them, colored by the opening, and the same outline dropped straight down
            onto the ground plane in gray, which shows the EE's height and where its shadow
            falls).
        radius: disk radius in pixels at a 32-pixel image (scaled with the image size; "axes").
        axis_length: length of the drawn EE axes in world units (meters; "axes").
        line_width: half-width of the drawn lines in pixels at 32 px (scaled).
        gripper_max_opening: finger-position difference of a fully open gripper.
        finger_axis: the EE axis (0 = x, 1 = y, 2 = z) the fingers open along ("gripper").
        finger_extent: (3,) from a fingertip (at the EE point +- half the opening) to the
            finger's root at the palm, in the EE frame, meters ("gripper"; the default is the
            built-in tabletop's gripper: fingers 6.5 cm long above the EE point).
        palm_width: length of the palm bar along ``finger_axis``, meters ("gripper").
        ground_z: height of the ground plane the outline is dropped onto, meters ("gripper").
    """

    style: Literal["axes", "gripper"] = "axes"
    radius: float = 1.5
    axis_length: float = 0.06
    line_width: float = 0.5
    gripper_max_opening: float = 0.08
    finger_axis: int = 0
    finger_extent: tuple[float, float, float] = (0.0, 0.0, 0.065)
    palm_width: float = 0.124
    ground_z: float = 0.0

    def __post_init__(self) -> None:
        require(
            self.style in ("axes", "gripper"),
            f"action_map.style must be 'axes' or 'gripper', got {self.style!r}",
        )
        require(self.radius > 0, f"action_map.radius must be > 0, got {self.radius}")
        require(self.axis_length >= 0, "action_map.axis_length must be >= 0")
        require(self.line_width > 0, f"action_map.line_width must be > 0, got {self.line_width}")
        require(self.gripper_max_opening > 0, "action_map.gripper_max_opening must be > 0")
        require(
            self.finger_axis in (0, 1, 2),
            f"action_map.finger_axis must be 0, 1 or 2, got {self.finger_axis}",
        )
        self.finger_extent = tuple(float(x) for x in self.finger_extent)
        require(
            len(self.finger_extent) == 3,
            f"action_map.finger_extent must hold 3 numbers, got {self.finger_extent}",
        )
        require(self.palm_width >= 0, "action_map.palm_width must be >= 0")


@dataclass
class SimTrainConfig:
    """Training of the world model.

    Attributes:
        steps: optimizer steps.
        batch_size: frames per step.
        lr, weight_decay: AdamW.
        grad_clip: gradient-norm clip.
        seed: seed of initialization, batches and noise.
        exploration_fraction: share of each batch drawn from exploration episodes (the
            paper's main driver); the rest from expert episodes. Ignored if a source is absent.
        ema_decay: EMA of the weights used for evaluation and sampling.
        val_fraction: share of episodes held out for the validation loss.
        val_every, ckpt_every: in steps.
        bf16_autocast: autocast in bf16. Off by default: on CPUs without AVX512-BF16 a bf16
            convolution was measured 36x slower than fp32 (AVX2 EPYC); on for GPUs (full).
        time_budget_s: stop early (validate, checkpoint) after this many seconds of training;
            0 = no limit. The demo default (19 min) keeps the CPU run within 20 minutes.
        timesteps: which diffusion timesteps the loss draws: "all" (uniform over
            num_train_timesteps, any sampler and step count works afterwards) or "sampler"
            (only those the configured sampler visits at sample_steps: with one step the model
            trains where it is queried and nowhere else; a checkpoint is then tied to that
            sampler and step count).
        history_speckle: share of the latest history frame's pixels disturbed in training
            (each channel by up to +-0.4, clipped), so the model learns to restore pixels that
            do not belong to the scene, as its own open-loop frames leave behind; 0 = off.
        own_history: share of the training transitions past an episode's first step whose
            latest history frame o_t is the world model's own prediction of it (sampled without
            gradient from the history up to o_{t-1} and the map of s_t): the kind of frame it
            conditions on in open-loop imagination, one step deep; the target stays the real
            o_{t+1}, so the model learns to correct its own leftovers. 0 = off.
    """

    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    exploration_fraction: float = 0.5
    ema_decay: float = 0.999
    val_fraction: float = 0.1
    val_every: int = 250
    ckpt_every: int = 500
    bf16_autocast: bool = False
    grad_clip: float = 1.0
    time_budget_s: float = 1140.0
    timesteps: Literal["all", "sampler"] = "all"
    history_speckle: float = 0.0
    own_history: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(
            0.0 <= self.exploration_fraction <= 1.0,
            f"train.exploration_fraction must be in [0, 1], got {self.exploration_fraction}",
        )
        require(
            0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}"
        )
        require(
            0.0 <= self.val_fraction < 1.0,
            f"train.val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        require(
            self.val_every >= 1 and self.ckpt_every >= 1,
            "train.val_every and train.ckpt_every must be >= 1",
        )
        require(self.time_budget_s >= 0, "train.time_budget_s must be >= 0")
        require(
            0.0 <= self.history_speckle < 1.0,
            f"train.history_speckle must be in [0, 1), got {self.history_speckle}",
        )
        require(
            0.0 <= self.own_history <= 1.0,
            f"train.own_history must be in [0, 1], got {self.own_history}",
        )
        require(
            self.timesteps in ("all", "sampler"),
            f"train.timesteps must be 'all' or 'sampler', got {self.timesteps!r}",
        )


@dataclass
class SimulatorConfig:
    """The world simulator. Defaults are the ``demo`` preset (CPU tabletop, 32 x 32).

    Attributes:
        image_size: square frame side the model works at (frames of another size are refused).
        space: "pixel" (tiny / demo) or "latent" (through ``vae``).
        history: K, number of history frames sampled from the memory bank.
        num_reference_frames: frames at the start of an episode encoded once by VGGT / CLIP.
        block_out_channels: U-Net widths per resolution.
        attention_levels: which resolutions (indices into block_out_channels) get
            cross-attention; keep only low resolutions on CPU.
        layers_per_block, attention_head_dim: U-Net.
        norm_num_groups: GroupNorm groups of the U-Net (divides every block width).
        cross_attention_dim: width of the conditioning tokens.
        num_train_timesteps: diffusion timesteps of the noise schedule.
        beta_schedule: the noise schedule (a diffusers name).
        prediction_type: "epsilon" or "v_prediction".
        residual: predict (next - previous) / residual_scale instead of the frame.
        residual_scale: the divisor of the predicted residual (see residual).
        residual_deadzone: at sampling, predicted pixel changes smaller than this (in [0, 1]
            units, max over channels) are dropped, so noise does not pile up as speckle over
            open-loop steps (used with residual prediction in pixel space, ignored otherwise;
            a sampling setting, not architecture).
        changed_weight, changed_threshold: loss weight 1 + changed_weight on pixels whose
            value changes by more than changed_threshold (in [0, 1] units) between frames.
        changed_dilation: the weighted region also covers pixels within this many pixels of a
            changed one, so a change predicted next to the real motion (where the model is
            unsure) costs as much as a missed one; 0 = only the changed pixels.
        sampler: "ddim" or "dpmsolver++".
        sample_steps: denoising steps at inference.
    """

    image_size: int = 32
    space: Literal["pixel", "latent"] = "pixel"
    history: int = 2
    num_reference_frames: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: tuple[int, ...] = (2,)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    cross_attention_dim: int = 64
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    residual: bool = True
    residual_scale: float = 0.064
    residual_deadzone: float = 0.08
    changed_weight: float = 20.0
    changed_threshold: float = 0.1
    changed_dilation: int = 0
    sampler: Literal["ddim", "dpmsolver++"] = "ddim"
    sample_steps: int = 4
    action_map: ActionMapConfig = field(default_factory=ActionMapConfig)
    vggt: VGGTConfig = field(
        default_factory=lambda: VGGTConfig(
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_register_tokens=4,
            patch_size=8,
            img_size=32,
            input_size=32,
            pool=1,
        )
    )
    clip: ClipConfig = field(
        default_factory=lambda: ClipConfig(
            image_size=32, patch_size=8, width=32, layers=2, heads=2, embed_dim=32
        )
    )
    vae: VAEConfig = field(default_factory=VAEConfig)
    train: SimTrainConfig = field(default_factory=SimTrainConfig)

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        require(n >= 1, "block_out_channels must not be empty")
        require(self.history >= 1, f"history (K) must be >= 1, got {self.history}")
        require(self.num_reference_frames >= 1, "num_reference_frames must be >= 1")
        require(
            all(0 <= i < n for i in self.attention_levels),
            f"attention_levels {self.attention_levels} must index block_out_channels (0..{n - 1})",
        )
        require(
            all(c % self.norm_num_groups == 0 for c in self.block_out_channels),
            f"every block_out_channels entry must be divisible by norm_num_groups "
            f"({self.norm_num_groups})",
        )
        res = self.image_size
        if self.space == "latent":
            down = 2 ** (len(self.vae.block_out_channels) - 1)
            require(
                self.image_size % down == 0,
                f"image_size ({self.image_size}) must be divisible by the VAE's downsampling "
                f"({down})",
            )
            res = self.image_size // down
        require(
            res % (2 ** (n - 1)) == 0,
            f"the denoised resolution ({res}) must be divisible by 2^(levels-1) = {2 ** (n - 1)}; "
            "change image_size or block_out_channels",
        )
        require(self.residual_scale > 0, "residual_scale must be > 0")
        require(0 <= self.residual_deadzone < 1, "residual_deadzone must be in [0, 1)")
        require(self.changed_weight >= 0, "changed_weight must be >= 0")
        require(self.changed_dilation >= 0, "changed_dilation must be >= 0")
        require(self.sample_steps >= 1, f"sample_steps must be >= 1, got {self.sample_steps}")
        require(
            self.sample_steps <= self.num_train_timesteps,
            "sample_steps must not exceed num_train_timesteps",
        )

    def model_dict(self) -> dict[str, Any]:
        """The architecture-defining part (everything but training and weight paths): a
        checkpoint made with another one cannot load."""
        d = to_dict(self)
        d.pop("train")
        for k in ("sampler", "sample_steps", "residual_deadzone"):
            d.pop(k)
        for sub in ("vggt", "clip", "vae"):
            d[sub].pop("weights")
        return d

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SimulatorConfig:
        """One of "tiny", "demo", "full", with field overrides."""
        presets = {"tiny": _tiny, "demo": lambda: {}, "full": _full}
        if name not in presets:
            raise ValueError(f"unknown simulator preset {name!r}; choose one of {sorted(presets)}")
        kwargs = presets[name]()
        kwargs.update(overrides)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> SimulatorConfig:
        return dataclasses.replace(self, **changes)


def _tiny() -> dict[str, Any]:
    return dict(
        image_size=16,
        block_out_channels=(16, 32),
        attention_levels=(1,),
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=32,
        vggt=VGGTConfig(
            embed_dim=16, depth=2, num_heads=2, patch_size=8, img_size=16, input_size=16
        ),
        clip=ClipConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2, embed_dim=16),
        vae=VAEConfig(block_out_channels=(8, 8), latent_channels=4),
        train=SimTrainConfig(
            steps=20, batch_size=8, val_every=10, ckpt_every=10, ema_decay=0.9, time_budget_s=0.0
        ),
    )


def _full() -> dict[str, Any]:
    return dict(
        image_size=256,
        space="latent",
        history=4,
        block_out_channels=(320, 640, 1280, 1280),
        attention_levels=(1, 2, 3),
        layers_per_block=2,
        attention_head_dim=64,
        norm_num_groups=32,
        cross_attention_dim=1024,
        residual=False,
        residual_deadzone=0.0,
        changed_weight=5.0,
        sample_steps=10,
        vggt=VGGTConfig(input_size=504, pool=2),  # 36 x 36 patches -> 18 x 18 tokens per frame
        clip=ClipConfig(model_name="ViT-B-16"),
        train=SimTrainConfig(
            steps=100_000,
            batch_size=16,
            lr=1e-4,
            ema_decay=0.9999,
            val_every=2000,
            ckpt_every=5000,
            bf16_autocast=True,
            time_budget_s=0.0,
        ),
    )


__all__ = [
    "SimulatorConfig",
    "SimTrainConfig",
    "VGGTConfig",
    "ClipConfig",
    "VAEConfig",
    "ActionMapConfig",
]
