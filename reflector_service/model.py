"""The reflector: R(o_1..t, g) = sigmoid(head(h_t)) from a frozen vision tower and a frozen LLM.

Sequence read by the causal LLM for one context (see ``context.py`` for which frames):

    [BOS, prompt with the instruction, (right padding)] [v_1 .. v_k, SUM] per context frame

where v_i are the projected, pooled patch features of one frame (k = frame_grid**2) and SUM is a
learned summary embedding. h_t is the mean of the LLM's last hidden states over the k + 1 tokens
of frame t (or, with ``pooling: flatten``, their concatenation), so it sees the instruction and
every earlier context frame through causal attention; with ``instruction_film`` (default) the
head also reads the prompt tokens' mean last hidden state, standardized over the training
instructions (``fit_instructions``), appended to h_t and scaling the head's hidden features.
Padding is masked and positions skip it, so a row's result does not depend on its batch.
Only the projector (with learned grid-cell embeddings), the summary embedding, the head (and the
optional pixel adapter) train.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reflector_service.backbones import build_llm, build_vision_tower, patch_grid_features
from reflector_service.config import ReflectorModelConfig
from reflector_service.context import Chain, anchors, chains


class PixelAdapter(nn.Module):
    """Small trainable CNN on the normalized pixels: (N, 3 or 6, S, S) -> (N, 4 C, g, g).

    Four 3x3 convolutions (two of stride 2, receptive field 15 px) give a (S/4)^2 map, max- or
    average-pooled to (2g)^2 and folded 2x2 into channels (pixel unshuffle), so each of the g^2
    tokens keeps where inside its cell things are instead of averaging them away.
    """

    def __init__(self, width: int, grid: int, *, pool: str = "max", in_channels: int = 3):
        super().__init__()
        self.grid = grid
        self.pool = F.adaptive_max_pool2d if pool == "max" else F.adaptive_avg_pool2d
        groups = 8 if width % 8 == 0 else 1
        layers: list[nn.Module] = []
        for i, s in enumerate((1, 2, 1, 2)):
            layers += [
                nn.Conv2d(in_channels if i == 0 else width, width, 3, stride=s, padding=1),
                nn.GroupNorm(groups, width),
                nn.GELU(),
            ]
        self.net = nn.Sequential(*layers)

    def forward(self, pix: torch.Tensor) -> torch.Tensor:
        fmap = self.pool(self.net(pix), 2 * self.grid)  # (N, C, 2g, 2g)
        return F.pixel_unshuffle(fmap, 2)  # (N, 4C, g, g)


@dataclass
class ReflectorState:
    """Incremental scoring state of B rollouts that advance in lockstep.

    Attributes:
        cache: the LLM's key/value cache (prompt, then the frames in ``cached``).
        prompt_len: (B,) true prompt lengths; the prompt block is right-padded to ``prompt_width``.
        prompt_mask: (B, prompt_width) 1 for real prompt tokens.
        cached: frame indices whose tokens follow the prompt in the cache, in order.
        tokens: frame index -> (B, k, D) projected tokens of frames that may be needed again.
        num_frames: frames added so far.
        recent: per-frame rewards (B,) of the last ``hold - 1`` frames (for ``hold_min``).
        last_frame: (B, H, W, 3) the newest frame so far (``motion`` reads the next one's
            difference from it).
        prompt_vec: (B, D) standardized mean last hidden state of the prompt tokens (or (B, 0)
            without ``instruction_film``).
    """

    cache: object
    prompt_len: torch.Tensor
    prompt_mask: torch.Tensor
    cached: list[int]
    tokens: dict[int, torch.Tensor]
    num_frames: int = 0
    recent: list[torch.Tensor] = field(default_factory=list)
    last_frame: torch.Tensor | None = None
    prompt_vec: torch.Tensor | None = None

    @property
    def prompt_width(self) -> int:
        return int(self.prompt_mask.shape[1])


class Reflector(nn.Module):
    """The VLM reward model. Build with a config; ``score`` and ``start``/``step`` score frames.

    Attributes:
        vision_random, llm_random: the frozen towers carry random weights (saved in checkpoints).
    """

    def __init__(self, cfg: ReflectorModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vision, self.vision_size, vision_width, self.vision_random = build_vision_tower(cfg)
        self.llm, self.tokenizer, self.llm_random = build_llm(cfg)
        # transformers 5 names the KV cache argument ``cache`` (``past_key_values`` is
        # deprecated there), earlier versions only know ``past_key_values``
        takes_cache = "cache" in inspect.signature(self.llm.forward).parameters
        self._cache_arg = "cache" if takes_cache else "past_key_values"
        width = int(self.llm.config.hidden_size)
        self.width = width
        self.adapter = (
            PixelAdapter(
                cfg.adapter_width,
                cfg.frame_grid,
                pool=cfg.adapter_pool,
                in_channels=6 if cfg.motion else 3,
            )
            if cfg.vision_adapter
            else None
        )
        in_dim = vision_width + (4 * cfg.adapter_width if cfg.vision_adapter else 0)
        emb_std = float(self.llm.get_input_embeddings().weight.std())
        self.projector = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, width)
        )
        nn.init.normal_(self.projector[-1].weight, std=2 * emb_std / width**0.5)
        nn.init.zeros_(self.projector[-1].bias)
        self.summary = nn.Parameter(torch.randn(width) * emb_std)
        self.cell_embed = nn.Parameter(torch.randn(cfg.frame_grid**2, width) * emb_std)  # (k, D)
        film = cfg.instruction_film
        pooled = width * ((cfg.tokens_per_frame if cfg.pooling == "flatten" else 1) + int(film))
        # standardization of the prompt's hidden state over the training instructions (set by
        # fit_instructions; saved with the trainable part, not trained)
        self.prompt_center = nn.Parameter(torch.zeros(width if film else 0), requires_grad=False)
        self.prompt_scale = nn.Parameter(torch.ones(width if film else 0), requires_grad=False)
        # FiLM of the head's hidden features; zero-initialized, so training starts from
        # the plain head
        self.film = nn.Linear(width, cfg.head_hidden) if film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.head = nn.Sequential(
            nn.LayerNorm(pooled),
            nn.Linear(pooled, cfg.head_hidden),
            nn.GELU(),
            nn.Linear(cfg.head_hidden, 1),
        )
        self.register_buffer(
            "pixel_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False
        )
        max_pos = int(getattr(self.llm.config, "max_position_embeddings", 0) or 0)
        longest = (
            1
            + len(self.tokenizer.encode(cfg.prompt.replace("{instruction}", "")))
            + cfg.max_instruction_tokens
            + cfg.window * cfg.tokens_per_frame
        )
        if max_pos and longest > max_pos:
            raise ValueError(
                f"reflector context of up to {longest} tokens exceeds the LLM's "
                f"{max_pos} positions; lower window, frame_grid or max_instruction_tokens"
            )

    # ------------------------------------------------------------------ parts

    def train(self, mode: bool = True) -> Reflector:
        """Train mode for the trainable parts only; the frozen towers stay in eval mode."""
        super().train(mode)
        self.vision.eval()
        self.llm.eval()
        return self

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the trainable part: projector, summary, head, adapter."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(("vision.", "llm."))]

    def frozen_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith(("vision.", "llm."))]

    @property
    def device(self) -> torch.device:
        return self.summary.device

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalized at the tower's input size."""
        x = frames.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.vision_size, self.vision_size):
            x = F.interpolate(
                x,
                size=(self.vision_size, self.vision_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return (x - self.pixel_mean) / self.pixel_std

    @torch.no_grad()
    def frozen_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Pooled frozen patch features: (N, H, W, 3) uint8 -> (N, k, Dv)."""
        feats = patch_grid_features(self.vision, self.pixels(frames), kind=self.cfg.vision_model)
        pooled = F.adaptive_avg_pool2d(feats, self.cfg.frame_grid)  # (N, Dv, g, g)
        return pooled.flatten(2).transpose(1, 2)

    def frame_tokens(
        self,
        frames: torch.Tensor,
        frozen: torch.Tensor | None = None,
        *,
        prev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Projected visual tokens: (N, H, W, 3) uint8 -> (N, k, D).

        Args:
            frozen: precomputed ``frozen_features(frames)`` (N, k, Dv), if at hand.
            prev: (N, H, W, 3) uint8, the frame before each frame in its episode (the frame
                itself for a first frame; ``previous_frames`` builds it for whole videos).
                Required with ``motion``, ignored without.
        """
        feats = self.frozen_features(frames) if frozen is None else frozen.to(self.device)
        if self.adapter is not None:
            pix = self.pixels(frames)
            if self.cfg.motion:
                if prev is None or prev.shape != frames.shape:
                    raise ValueError(
                        "reflector with motion needs prev, the frame before each "
                        f"frame, of shape {tuple(frames.shape)}"
                    )
                pix = torch.cat([pix, pix - self.pixels(prev)], dim=1)  # (N, 6, S, S)
            a = self.adapter(pix).flatten(2).transpose(1, 2)  # (N, k, C)
            feats = torch.cat([feats, a], dim=-1)
        return self.projector(feats) + self.cell_embed

    def prompt_ids(self, instruction: str) -> list[int]:
        """Token ids of BOS + prompt; an instruction over ``max_instruction_tokens`` is truncated
        (with a warning)."""
        before, after = self.cfg.prompt.split("{instruction}", 1)
        instr = self.tokenizer.encode(instruction)
        limit = self.cfg.max_instruction_tokens
        if len(instr) > limit:
            warnings.warn(
                f"reflector: instruction of {len(instr)} tokens truncated to "
                f"max_instruction_tokens={limit}: {instruction[:60]!r}...",
                stacklevel=3,
            )
            instr = instr[:limit]
        return (
            [self.tokenizer.bos_token_id]
            + self.tokenizer.encode(before)
            + instr
            + self.tokenizer.encode(after)
        )

    @torch.no_grad()
    def instruction_vector(self, instruction: str) -> torch.Tensor:
        """Mean frozen input embedding of the instruction's tokens: (D,)."""
        ids = torch.tensor(
            self.tokenizer.encode(instruction) or [self.tokenizer.bos_token_id], device=self.device
        )
        return self.llm.get_input_embeddings()(ids).mean(dim=0)

    def _prompt_block(
        self, instructions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded prompt embeddings (B, P, D), mask (B, P) and true lengths (B,)."""
        ids = [self.prompt_ids(s) for s in instructions]
        lens = torch.tensor([len(i) for i in ids], device=self.device)
        width = int(lens.max())
        pad = torch.zeros(len(ids), width, dtype=torch.long, device=self.device)
        for b, i in enumerate(ids):
            pad[b, : len(i)] = torch.tensor(i, device=self.device)
        mask = torch.arange(width, device=self.device)[None] < lens[:, None]
        emb = self.llm.get_input_embeddings()(pad)
        return emb, mask.long(), lens

    def _frame_block(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., F, k, D) frame tokens -> (..., F * (k + 1), D) with a summary token per frame."""
        summary = self.summary.expand(*tokens.shape[:-2], 1, self.width)
        return torch.cat([tokens, summary], dim=-2).flatten(-3, -2)

    def _logit(self, group: torch.Tensor, prompt_vec: torch.Tensor) -> torch.Tensor:
        """Reward logits from the last hidden states of frame t's tokens (..., k + 1, D) and the
        prompt vector (..., D) (or (..., 0) without ``instruction_film``) -> (...,)."""
        h = group.flatten(-2) if self.cfg.pooling == "flatten" else group.mean(dim=-2)
        z = self.head[2](self.head[1](self.head[0](torch.cat([h, prompt_vec], dim=-1))))
        if self.film is not None:
            z = z * (1 + self.film(prompt_vec))
        return self.head[3](z).squeeze(-1)

    @staticmethod
    def _prompt_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean last hidden state over the real prompt tokens: (B, P, D), (B, P) -> (B, D)."""
        m = mask.to(hidden.dtype)[..., None]
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)

    def _prompt_vec(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The head's view of the instruction: the standardized prompt mean (B, D), or (B, 0)
        without ``instruction_film``."""
        if not self.cfg.instruction_film:
            return hidden.new_zeros(hidden.shape[0], 0)
        return (self._prompt_mean(hidden, mask) - self.prompt_center) * self.prompt_scale

    def _run_prompt(
        self, instructions: Sequence[str], cache=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The prompts alone through the LLM (into ``cache`` if given): last hidden states
        (B, P, D), mask (B, P) and true lengths (B,)."""
        emb, mask, lens = self._prompt_block(instructions)
        pos = torch.arange(emb.shape[1], device=self.device).expand(len(instructions), -1)
        return self._llm(emb, mask, pos, cache), mask, lens

    @torch.no_grad()
    def fit_instructions(self, instructions: Sequence[str]) -> None:
        """Set the prompt standardization from the training instructions (mean and per-dimension
        spread of their prompt vectors; a single instruction keeps scale 1)."""
        if not self.cfg.instruction_film or not instructions:
            return
        hidden, mask, _ = self._run_prompt(sorted(set(instructions)))
        p = self._prompt_mean(hidden, mask)  # (I, D)
        self.prompt_center.copy_(p.mean(dim=0))
        self.prompt_scale.fill_(1.0)
        if len(p) > 1:
            self.prompt_scale.copy_(1.0 / (p.std(dim=0) + 1e-3))

    def _llm(self, embeds, mask, positions, cache=None) -> torch.Tensor:
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **{self._cache_arg: cache},
        )
        return out.last_hidden_state

    # ------------------------------------------------------------------ full scoring

    def prefix_logits(
        self,
        tokens: Sequence[torch.Tensor],
        instructions: Sequence[str],
        *,
        rows: Sequence[Sequence[Chain]] | None = None,
        rows_per_forward: int = 64,
    ) -> list[torch.Tensor]:
        """Logits of R for every prefix of every episode, from projected frame tokens.

        Args:
            tokens: per episode b, (T_b, k, D) from ``frame_tokens``.
            instructions: per episode b, its instruction.
            rows: per episode, the chains to run (default: all ``chains(T_b, window)``);
                prefixes outside them get NaN.
            rows_per_forward: LLM rows per forward pass (memory bound).
        Returns:
            per episode b, (T_b,) logits (differentiable w.r.t. the trainable parameters).
        """
        if len(tokens) != len(instructions):
            raise ValueError(f"{len(tokens)} episodes but {len(instructions)} instructions")
        k1 = self.cfg.tokens_per_frame
        p_emb, p_mask, p_len = self._prompt_block(instructions)
        pw = p_emb.shape[1]
        work = []  # (episode, chain)
        for b, tok in enumerate(tokens):
            for ch in chains(len(tok), self.cfg.window) if rows is None else rows[b]:
                work.append((b, ch))
        outs = [torch.full((len(t),), float("nan"), device=self.device) for t in tokens]
        for lo in range(0, len(work), rows_per_forward):
            part = work[lo : lo + rows_per_forward]
            nf = max(len(ch.frames) for _, ch in part)
            emb = torch.zeros(len(part), pw + nf * k1, self.width, device=self.device)
            mask = torch.zeros(len(part), pw + nf * k1, dtype=torch.long, device=self.device)
            for r, (b, ch) in enumerate(part):
                emb[r, :pw] = p_emb[b]
                mask[r, :pw] = p_mask[b]
                blk = self._frame_block(tokens[b][ch.frames])  # (F * k1, D)
                emb[r, pw : pw + len(blk)] = blk
                mask[r, pw : pw + len(blk)] = 1
            idx = torch.tensor([b for b, _ in part], device=self.device)
            positions = torch.cat(
                [
                    torch.arange(pw, device=self.device).expand(len(part), pw),
                    p_len[idx, None] + torch.arange(nf * k1, device=self.device)[None],
                ],
                dim=1,
            )
            hidden = self._llm(emb, mask, positions)  # (R, S, D)
            pvec = self._prompt_vec(hidden[:, :pw], mask[:, :pw])  # (R, D)
            for r, (b, ch) in enumerate(part):
                js = sorted(ch.outputs)
                starts = pw + torch.tensor(js, device=self.device) * k1
                grp = hidden[
                    r, starts[:, None] + torch.arange(k1, device=self.device)[None]
                ]  # (J, k1, D)
                logits = self._logit(grp, pvec[r].expand(len(js), -1))  # (J,)
                ns = torch.tensor([ch.outputs[j] - 1 for j in js], device=self.device)
                outs[b] = outs[b].index_put((ns,), logits)
        return outs

    @torch.no_grad()
    def score(self, frames, instructions: Sequence[str]) -> torch.Tensor:
        """Rewards R(o_1..t, g) for every prefix.

        Args:
            frames: (B, T, H, W, 3) uint8 array or tensor (or a list of B (T, H, W, 3) arrays
                of one shape).
            instructions: B instructions.
        Returns:
            (B, T) float32 rewards in [0, 1].
        """
        video = check_frames(frames, instructions)
        b, t = video.shape[:2]
        flat = video.reshape(b * t, *video.shape[2:])
        prev = previous_frames(video, dim=1).reshape(flat.shape)
        toks = torch.cat(
            [
                self.frame_tokens(flat[i : i + 256], prev=prev[i : i + 256])
                for i in range(0, len(flat), 256)
            ]
        )
        toks = toks.view(b, t, *toks.shape[1:])
        logits = self.prefix_logits(list(toks), list(instructions))
        return hold_min(torch.sigmoid(torch.stack(logits)).float().cpu(), self.cfg.hold)

    # ------------------------------------------------------------------ incremental scoring

    @torch.no_grad()
    def start(self, instructions: Sequence[str]) -> ReflectorState:
        """Begin incremental scoring of B rollouts: runs the prompts into a fresh KV cache."""
        from transformers import DynamicCache

        if len(instructions) == 0:
            raise ValueError("reflector start needs at least one instruction")
        cache = DynamicCache()
        hidden, mask, lens = self._run_prompt(instructions, cache)
        return ReflectorState(
            cache=cache,
            prompt_len=lens,
            prompt_mask=mask,
            cached=[],
            tokens={},
            prompt_vec=self._prompt_vec(hidden, mask),
        )

    @torch.no_grad()
    def step(self, state: ReflectorState, frames) -> torch.Tensor:
        """Add one frame per rollout and return R for the prefixes so far.

        Only the new frame's tokens run through the LLM (plus, when the window's stride
        doubles, the surviving anchor frames from their cached tokens).

        Args:
            state: from ``start`` (updated in place).
            frames: (B, H, W, 3) uint8, the newest frame of each rollout.
        Returns:
            (B,) float32 rewards in [0, 1].
        """
        frames = _as_uint8_tensor(frames, "frames")
        nb = int(state.prompt_len.shape[0])
        if frames.ndim != 4 or frames.shape[0] != nb or frames.shape[-1] != 3:
            raise ValueError(
                f"reflector step expects frames of shape ({nb}, H, W, 3), got {tuple(frames.shape)}"
            )
        k1 = self.cfg.tokens_per_frame
        cur = state.num_frames
        prev = frames if state.last_frame is None else state.last_frame
        state.tokens[cur] = self.frame_tokens(frames, prev=prev)
        state.last_frame = frames
        state.num_frames = n = cur + 1
        keep = anchors(n, self.cfg.window)
        p = 0
        while p < min(len(keep), len(state.cached)) and keep[p] == state.cached[p]:
            p += 1
        excess = (len(state.cached) - p) * k1
        if excess:
            state.cache.crop(-excess)
        new = keep[p:] + [cur]
        blk = self._frame_block(torch.stack([state.tokens[f] for f in new], dim=1))  # (B, L, D)
        past = state.prompt_width + p * k1
        mask = torch.cat(
            [
                state.prompt_mask,
                torch.ones(nb, p * k1 + blk.shape[1], dtype=torch.long, device=self.device),
            ],
            dim=1,
        )
        pos = (
            state.prompt_len[:, None]
            + p * k1
            + torch.arange(blk.shape[1], device=self.device)[None]
        )
        if state.cache.get_seq_length() != past:
            raise RuntimeError(
                f"reflector KV cache holds {state.cache.get_seq_length()} tokens, expected {past}"
            )
        hidden = self._llm(blk, mask, pos, state.cache)
        logit = self._logit(hidden[:, -k1:], state.prompt_vec)  # (B,)
        state.cached = keep + [cur]
        state.tokens = {f: v for f, v in state.tokens.items() if f in state.cached}
        r = torch.sigmoid(logit).float().cpu()  # (B,) per-frame reward
        held = torch.stack([r, *state.recent]).amin(dim=0)
        state.recent = [r, *state.recent][: self.cfg.hold - 1]
        return held


def previous_frames(frames: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The frame before each frame along the time axis ``dim``, the first frame standing for its
    own predecessor: same shape as ``frames``."""
    t = frames.shape[dim]
    return frames.index_select(dim, (torch.arange(t, device=frames.device) - 1).clamp(min=0))


def hold_min(r: torch.Tensor, hold: int) -> torch.Tensor:
    """R_t = min(r_{t-hold+1}, ..., r_t) along the last (time) axis (from r_0 while t < hold - 1).

    Args:
        r: (..., T) per-frame rewards.
        hold: frames a success must persist; 1 returns r.
    Returns:
        (..., T) rewards.
    """
    out = r.clone()
    for k in range(1, min(hold, r.shape[-1])):
        out[..., k:] = torch.minimum(out[..., k:], r[..., :-k])
    return out


def _as_uint8_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise ValueError(f"reflector {name} must be uint8 images, got dtype {x.dtype}")
        if not x.flags.writeable:  # arrays from Ray's object store are read-only
            x = x.copy()
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8:
            raise ValueError(f"reflector {name} must be uint8 images, got dtype {x.dtype}")
        return x
    raise ValueError(
        f"reflector {name} must be a uint8 numpy array or tensor, got {type(x).__name__}"
    )


def check_frames(frames, instructions: Sequence[str]) -> torch.Tensor:
    """Validate a batch of videos: (B, T, H, W, 3) uint8 with B instructions.

    Raises:
        ValueError: empty sequences, mismatched frame sizes, wrong dtype or instruction count.
    """
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("reflector score got an empty list of videos")
        shapes = {tuple(np.shape(f)) for f in frames}
        if len(shapes) != 1:
            raise ValueError(
                f"reflector score got videos of mismatched shapes {sorted(shapes)}; "
                "all must be (T, H, W, 3) of one size"
            )
        frames = np.stack([np.asarray(f) for f in frames])
    video = _as_uint8_tensor(frames, "frames")
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"reflector frames must be (B, T, H, W, 3), got {tuple(video.shape)}")
    if video.shape[0] == 0 or video.shape[1] == 0:
        raise ValueError(
            f"reflector frames must hold at least one frame per video, got {tuple(video.shape)}"
        )
    if isinstance(instructions, str) or len(instructions) != video.shape[0]:
        raise ValueError(
            f"reflector needs one instruction per video: {video.shape[0]} videos, "
            f"got {1 if isinstance(instructions, str) else len(instructions)}"
        )
    return video
