"""Config of the OpenVLA-OFT-compatible policy and of its supervised fine-tuning (SFT).

``PolicyConfig.preset`` picks the architecture sizes (``PRESETS``): ``tiny`` runs on a CPU in
tests and the demo, ``oft-7b`` has the published OpenVLA-OFT sizes (SigLIP so400m/14 + DINOv2
ViT-L/14 with registers at 224 px, Llama-2 7B). Fields set to 0 take the preset's value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from core.configlib import require


@dataclass(frozen=True)
class Arch:
    """Resolved architecture sizes of one preset (not a config section: derived)."""

    image_size: int
    patch_size: int
    dino_width: int
    dino_layers: int
    dino_heads: int
    dino_mlp_ratio: int
    dino_registers: int
    siglip_width: int
    siglip_layers: int
    siglip_heads: int
    siglip_mlp: int
    llm_width: int
    llm_layers: int
    llm_heads: int
    llm_mlp: int
    llm_vocab: int  # 0: the tokenizer's size (tiny word-level tokenizer)
    rms_norm_eps: float
    scale_head_width: int
    llm_init_std: float  # std of the random LLM's initial weights (a loaded LLM brings its own)


PRESETS: dict[str, Arch] = {
    "tiny": Arch(
        image_size=64,
        patch_size=8,
        dino_width=64,
        dino_layers=2,
        dino_heads=4,
        dino_mlp_ratio=2,
        dino_registers=4,
        siglip_width=48,
        siglip_layers=2,
        siglip_heads=4,
        siglip_mlp=96,
        llm_width=64,
        llm_layers=2,
        llm_heads=4,
        llm_mlp=128,
        llm_vocab=0,
        rms_norm_eps=1e-6,
        scale_head_width=64,
        # 1 / sqrt(width): with Llama's 0.02 the tiny LLM's attention starts uniform and takes
        # longer to route the instruction to the action positions (measured in SFT)
        llm_init_std=0.125,
    ),
    "oft-7b": Arch(
        image_size=224,
        patch_size=14,
        dino_width=1024,
        dino_layers=24,
        dino_heads=16,
        dino_mlp_ratio=4,
        dino_registers=4,
        siglip_width=1152,
        siglip_layers=27,
        siglip_heads=16,
        siglip_mlp=4304,
        llm_width=4096,
        llm_layers=32,
        llm_heads=32,
        llm_mlp=11008,
        llm_vocab=32064,
        rms_norm_eps=1e-5,
        scale_head_width=1024,
        llm_init_std=0.02,
    ),
}


@dataclass
class PolicyConfig:
    """The VLA policy.

    Attributes:
        preset: architecture sizes, "tiny" or "oft-7b".
        checkpoint: folder to load ("" = random init; the tiny tokenizer is then built from the
            task vocabulary). A loaded policy keeps the checkpoint's own config, except that SFT
            fits its scale head within this config's log_scale_min / log_scale_max.
        checkpoint_format: "rehearse" (``policy.checkpoint.save_policy``) or "oft" (an
            OpenVLA-OFT folder: HF Prismatic model + action_head/proprio_projector .pt files).
        num_images: 1 (third-person) or 2 (+ wrist image), as OFT's LIBERO setting.
        use_proprio: append the proprio token (OFT's proprio projector).
        chunk: actions per chunk (parallel decoding).
        action_dim: dimensions per action.
        proprio_dim: dimensions of the proprio input.
        lora_rank, lora_alpha, lora_dropout: LoRA on the LLM (peft).
        lora_target_modules: module names (suffixes) of the LLM, or ["all-linear"].
        lora_scope: "llm" (LoRA on the LLM only) or "vla" (also on every Linear of the vision
            towers and the projector, as OpenVLA / OpenVLA-OFT fine-tune the whole VLA with
            LoRA): what RL can adapt beside the heads. The vision adapters live in the
            policy's trainable weights; the stock-peft ``adapter/`` export holds the LLM's.
        train_proprio_projector: include the proprio projector in the trainable part.
        train_projector: include the projector (vision features -> LLM tokens) in the
            trainable part, without LoRA on it: what post-training updates, publishes and
            checkpoints (83,520 weights in the demo's policy; a 9x-demos SFT gained most of its
            points there, docs/RESULTS.md session 19).
        scale_head_width: hidden width of the Laplace scale head (0 = preset).
        image_size: input image side of the vision towers (0 = preset); camera images are
            resized to it. A tiny policy on 32 px frames gains nothing from 64 px input and
            runs about twice as fast at 32 (a multiple of the patch size).
        patch_size: patch side of the vision towers (0 = preset); smaller patches give more
            tokens per image (finer positions, a longer LLM sequence).
        scale_head_blocks: residual blocks of the scale head.
        scale_bias_init: initial bias of the scale head's last layer (small initial scale).
        log_scale_min, log_scale_max: clip range of the Laplace log-scale.
        unnorm_key: dataset key in dataset_statistics.json ("" = the only one).
        dtype: dtype of the frozen backbone ("bfloat16" on GPUs); trainable heads stay float32.
    """

    preset: Literal["tiny", "oft-7b"] = "tiny"
    checkpoint: str = ""
    checkpoint_format: Literal["rehearse", "oft"] = "rehearse"
    num_images: int = 1
    use_proprio: bool = True
    chunk: int = 8
    action_dim: int = 7
    proprio_dim: int = 8
    lora_rank: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    lora_scope: Literal["llm", "vla"] = "llm"
    train_proprio_projector: bool = False
    train_projector: bool = False
    scale_head_width: int = 0
    image_size: int = 0
    patch_size: int = 0
    scale_head_blocks: int = 2
    scale_bias_init: float = -3.0
    log_scale_min: float = -2.0
    log_scale_max: float = 0.5
    unnorm_key: str = ""
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        require(
            self.num_images in (1, 2), f"policy.num_images must be 1 or 2, got {self.num_images}"
        )
        require(self.chunk >= 1, f"policy.chunk must be >= 1, got {self.chunk}")
        require(
            self.action_dim >= 2,
            f"policy.action_dim must be >= 2 (pose + gripper), got {self.action_dim}",
        )
        require(self.proprio_dim >= 1, f"policy.proprio_dim must be >= 1, got {self.proprio_dim}")
        require(self.lora_rank >= 1, f"policy.lora_rank must be >= 1, got {self.lora_rank}")
        require(self.lora_alpha > 0, f"policy.lora_alpha must be > 0, got {self.lora_alpha}")
        require(
            0.0 <= self.lora_dropout < 1.0,
            f"policy.lora_dropout must be in [0, 1), got {self.lora_dropout}",
        )
        require(
            len(self.lora_target_modules) > 0,
            "policy.lora_target_modules must name at least one module, e.g. ['all-linear']",
        )
        require(
            self.scale_head_width >= 0,
            f"policy.scale_head_width must be >= 0 (0 = preset), got {self.scale_head_width}",
        )
        require(self.patch_size >= 0, f"policy.patch_size must be >= 0, got {self.patch_size}")
        patch = self.patch_size or PRESETS[self.preset].patch_size
        require(
            self.image_size == 0 or (self.image_size >= patch and self.image_size % patch == 0),
            f"policy.image_size must be 0 (preset) or a multiple of the patch size {patch}, "
            f"got {self.image_size}",
        )
        require(
            self.scale_head_blocks >= 0,
            f"policy.scale_head_blocks must be >= 0, got {self.scale_head_blocks}",
        )
        require(
            self.log_scale_min < self.log_scale_max,
            f"policy.log_scale_min ({self.log_scale_min}) must be below log_scale_max "
            f"({self.log_scale_max})",
        )
        require(
            self.checkpoint_format == "rehearse" or self.checkpoint != "",
            "policy.checkpoint_format 'oft' needs policy.checkpoint (the OFT folder)",
        )

    @property
    def arch(self) -> Arch:
        """The preset's sizes with this config's overrides applied."""
        overrides = {
            "scale_head_width": self.scale_head_width,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
        }
        return dataclasses.replace(
            PRESETS[self.preset], **{k: v for k, v in overrides.items() if v}
        )


@dataclass
class SFTConfig:
    """Supervised fine-tuning on few demos: L1 on action chunks, then the scale head by NLL.

    Attributes:
        steps: optimizer steps of one cosine cycle of the L1 stage.
        cycles: cosine cycles of the L1 stage (warm restarts): each cycle starts a fresh AdamW
            at ``lr`` from the weights the last one ended with, as a second SFT run from the
            first one's checkpoint would; the stage takes ``cycles`` x ``steps`` steps. Measured
            on the demo's 40 demos: 1,200 steps left the validation L1 falling, and a second
            run of 1,200 steps from the first one's checkpoint raised real success by 13-28
            points in four SFT runs (docs/RESULTS.md, session 14).
        scale_steps: optimizer steps of the scale-head stage (mu held fixed).
        batch_size: windows per step.
        lr: AdamW learning rate of the L1 stage.
        scale_lr: AdamW learning rate of the scale stage.
        weight_decay: AdamW weight decay.
        train_backbone: also train the vision towers, projector and LLM base weights in the L1
            stage (the tiny policy has no pretrained weights); False trains LoRA + heads +
            proprio projector as OFT's LoRA fine-tuning does.
        freeze_vision: keep the vision towers as the starting checkpoint has them (after
            ``rehearse pretrain``: 40 demos would otherwise wash out what pretraining taught).
        val_fraction: fraction of the demos of each task held out for validation (>= 1 demo
            per task when a task has at least 2).
        val_every: steps between validation passes.
        augment_shift: random image shift in pixels (0 = off), a cheap augmentation.
        start_fraction: share of each batch drawn from the first step of each demo, where
            only the instruction tells the tasks of one scene apart (0 = uniform; a random tiny
            LLM needs about 0.5 to learn to read its instruction, see ``sft.DecisionSampler``).
        switch_fraction: share drawn from the steps where the gripper command changes sign
            (grasp, release: the instruction decides the next phase); 0 = none.
        instruction_weight: weight of an auxiliary loss of the L1 stage: which of the demos'
            instructions a sample has, read from the mean of the action positions' hidden
            states through a fixed random linear readout (``sft.InstructionProbe``). It makes
            every word of the instruction shape what the action head reads; 5-demo policies
            otherwise learned to read the block word and not the target (docs/RESULTS.md).
            0 = off.
        seed: seed of initialization, splits and batches.
    """

    steps: int = 2000
    cycles: int = 1
    scale_steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4
    scale_lr: float = 1e-3
    weight_decay: float = 0.0
    train_backbone: bool = True
    freeze_vision: bool = False
    val_fraction: float = 0.2
    val_every: int = 200
    augment_shift: int = 2
    start_fraction: float = 0.0
    switch_fraction: float = 0.0
    instruction_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"sft.steps must be >= 1, got {self.steps}")
        require(self.cycles >= 1, f"sft.cycles must be >= 1 (1: one cosine), got {self.cycles}")
        require(
            self.instruction_weight >= 0,
            f"sft.instruction_weight must be >= 0 (0: off), got {self.instruction_weight}",
        )
        require(self.scale_steps >= 0, f"sft.scale_steps must be >= 0, got {self.scale_steps}")
        require(self.batch_size >= 1, f"sft.batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0 and self.scale_lr > 0, "sft.lr and sft.scale_lr must be > 0")
        require(
            0.0 <= self.val_fraction < 1.0,
            f"sft.val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        require(self.val_every >= 1, f"sft.val_every must be >= 1, got {self.val_every}")
        require(
            self.augment_shift >= 0, f"sft.augment_shift must be >= 0, got {self.augment_shift}"
        )
        require(
            0.0 <= self.start_fraction < 1.0,
            f"sft.start_fraction must be in [0, 1), got {self.start_fraction}",
        )
        require(
            0.0 <= self.switch_fraction < 1.0 and self.start_fraction + self.switch_fraction < 1.0,
            f"sft.switch_fraction must be in [0, 1) with start_fraction + "
            f"switch_fraction < 1, got {self.switch_fraction} + {self.start_fraction}",
        )


@dataclass
class PretrainConfig:
    """Vision pretraining (``rehearse pretrain``), the tiny policy's analog of the web-scale
    pretraining of OpenVLA's SigLIP and DINOv2 towers: the towers and a throwaway readout learn
    to locate every object and the gripper in frames of many random scenes (``uniform`` layout,
    seeds of their own), before the few-demo SFT on the task layout.

    Attributes:
        scenes: labelled scenes generated (``envs.tabletop_scenes``).
        val_scenes: of those, held out to measure the localization error.
        layout: the scenes' object layout (the tasks' own ``homes`` would leak the task
            distribution into pretraining).
        max_random_steps: random arm actions before each scene's frame.
        steps: optimizer steps.
        batch_size: scenes per step.
        lr: AdamW learning rate (cosine to a tenth).
        weight_decay: AdamW weight decay.
        readout_width: hidden width of the readout MLP on the flattened patch features.
        seed: seed of initialization and batches (scenes use their own seed offset).
    """

    scenes: int = 12000
    val_scenes: int = 1000
    layout: str = "uniform"
    max_random_steps: int = 25
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    readout_width: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            1 <= self.val_scenes < self.scenes,
            f"pretrain.val_scenes must be in [1, pretrain.scenes), got {self.val_scenes} of "
            f"{self.scenes}",
        )
        require(self.layout in ("uniform", "homes"), "pretrain.layout must be uniform or homes")
        require(self.max_random_steps >= 0, "pretrain.max_random_steps must be >= 0")
        require(self.steps >= 1, f"pretrain.steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"pretrain.batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"pretrain.lr must be > 0, got {self.lr}")
        require(self.readout_width >= 1, "pretrain.readout_width must be >= 1")
