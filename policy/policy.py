"""The policy interface used by rollout workers and the learner: act, log_prob, trainable state.

Actions are in the model's normalized space (pose in [-1, 1] by q01/q99, gripper in [0, 1] as
OFT); ``to_env_actions`` maps them to the env's 7-D command. The Laplace log-prob is
``policy.distribution``'s, per action dimension (``log_density``) or summed over the chunk
(``log_prob``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policy.config import PolicyConfig
from policy.distribution import laplace_log_density, laplace_sample
from policy.lora import add_lora, inject_lora, linear_modules
from policy.model import VLA
from policy.normalization import Normalizer
from policy.tokenizer import encode_prompts

HEAD_MODULES = ("vla.action_head.", "vla.scale_head.")


class Policy(nn.Module):
    """OpenVLA-OFT policy with a Laplace scale head and LoRA adapters on the LLM.

    Args:
        cfg: the policy config.
        tokenizer: HF tokenizer of the instructions (adds BOS).
        normalizer: action/proprio statistics.
        lora: add LoRA adapters now (False while importing base weights).
    """

    def __init__(self, cfg: PolicyConfig, *, tokenizer, normalizer: Normalizer, lora: bool = True):
        super().__init__()
        if normalizer.action_dim != cfg.action_dim:
            raise ValueError(
                f"action statistics have {normalizer.action_dim} dimensions, "
                f"policy.action_dim is {cfg.action_dim}"
            )
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.vla = VLA(
            cfg,
            vocab_size=len(tokenizer),
            bos_id=tokenizer.bos_token_id,
            eos_id=tokenizer.eos_token_id,
            pad_id=pad,
        )
        if cfg.dtype == "bfloat16":
            for m in (self.vla.vision, self.vla.projector, self.vla.llm):
                m.to(torch.bfloat16)
        self._prompt_cache: dict[str, tuple[torch.Tensor, int]] = {}
        if lora:
            self.add_lora()
        self.eval()

    # ----- trainable part ---------------------------------------------------------------
    def add_lora(self) -> None:
        """Wrap the LLM with LoRA (peft) and freeze everything outside the trainable part."""
        c = self.cfg
        self.vla.llm = add_lora(
            self.vla.llm,
            rank=c.lora_rank,
            alpha=c.lora_alpha,
            dropout=c.lora_dropout,
            target_modules=c.lora_target_modules,
        )
        if c.lora_scope == "vla":  # the vision towers (minus SigLIP's unused pooling head)
            for module, skip in (
                (self.vla.vision, ("siglip.head",)),
                (self.vla.projector, ()),
            ):
                inject_lora(
                    module,
                    rank=c.lora_rank,
                    alpha=c.lora_alpha,
                    dropout=c.lora_dropout,
                    targets=linear_modules(module, skip),
                )
        self.freeze_to_trainable()

    def _is_trainable(self, name: str) -> bool:
        if "lora_" in name or name.startswith(HEAD_MODULES):
            return True
        if self.cfg.train_projector and name.startswith("vla.projector."):
            return True
        return self.cfg.train_proprio_projector and name.startswith("vla.proprio_projector.")

    def freeze_to_trainable(self) -> None:
        """requires_grad only on LoRA, the heads (and the proprio projector if configured)."""
        for name, p in self.named_parameters():
            p.requires_grad_(self._is_trainable(name))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"lora": LoRA weights, "heads": action head (+ proprio projector), "scale_head":
        the Laplace scale head} (the learner may freeze the scale head, as RIPT-VLA does)."""
        groups: dict[str, list[nn.Parameter]] = {"lora": [], "heads": [], "scale_head": []}
        for name, p in self.named_parameters():
            if not self._is_trainable(name):
                continue
            if "lora_" in name:
                groups["lora"].append(p)
            elif name.startswith("vla.scale_head."):
                groups["scale_head"].append(p)
            else:
                groups["heads"].append(p)
        return groups

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable weights by name, detached (they share memory with the parameters)."""
        return {n: p.detach() for n, p in self.named_parameters() if self._is_trainable(n)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy trainable weights in place (optimizer-held parameters keep their identity).

        Raises:
            ValueError: listing missing or unexpected names, or shape mismatches; nothing is
                copied then.
        """
        params = {n: p for n, p in self.named_parameters() if self._is_trainable(n)}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        wrong = [
            f"{n} {tuple(state[n].shape)} != {tuple(p.shape)}"
            for n, p in params.items()
            if n in state and state[n].shape != p.shape
        ]
        if missing or unexpected or wrong:
            raise ValueError(
                f"trainable state does not fit this policy: missing {missing}, "
                f"unexpected {unexpected}, wrong shapes {wrong}"
            )
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])

    # ----- inputs -----------------------------------------------------------------------
    def _pixels(self, x: Any, key: str) -> torch.Tensor:
        """(B, H, W, 3) uint8 or float in [0, 1] -> (B, 3, S, S) float32 at the policy's size."""
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if t.ndim != 4 or t.shape[-1] != 3:
            raise ValueError(
                f"batch[{key!r}] must be (B, H, W, 3) images, got shape {tuple(t.shape)}"
            )
        if t.shape[1] != t.shape[2] or t.shape[1] < 8:
            raise ValueError(
                f"batch[{key!r}] images must be square and at least 8 px, got "
                f"{t.shape[1]}x{t.shape[2]}"
            )
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        t = t.permute(0, 3, 1, 2)
        size = self.vla.image_size
        if t.shape[-1] != size:
            t = F.interpolate(
                t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        return t

    def _prompts(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        new = [s for s in dict.fromkeys(instructions) if s not in self._prompt_cache]
        if new:
            ids, lengths = encode_prompts(self.tokenizer, new)
            for s, row, n in zip(new, ids, lengths.tolist(), strict=True):
                self._prompt_cache[s] = (row[:n], n)
        rows = [self._prompt_cache[s] for s in instructions]
        lengths = torch.tensor([n for _, n in rows], dtype=torch.long)
        pad = self.vla.pad_id
        ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
        for i, (row, n) in enumerate(rows):
            ids[i, :n] = row
        return ids, lengths

    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt token ids (B, L) right-padded with the pad id, and lengths (B,): what
        ``batch["input_ids"]`` / ``batch["lengths"]`` take in place of instructions."""
        return self._prompts(list(instructions))

    def prepare(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Model inputs from a batch dict (see ``forward``) on the policy's device."""
        dev = self.vla.action_head.model.fc1.weight.device
        if "image" not in batch:
            raise ValueError("batch needs 'image' (B, H, W, 3)")
        imgs = [self._pixels(batch["image"], "image")]
        if self.cfg.num_images == 2:
            if batch.get("wrist_image") is None:
                raise ValueError(
                    "this policy reads two images (policy.num_images=2): pass "
                    "'wrist_image' (B, H, W, 3)"
                )
            imgs.append(self._pixels(batch["wrist_image"], "wrist_image"))
        images = torch.stack(imgs, dim=1).to(dev)  # (B, I, 3, S, S)
        b = images.shape[0]
        proprio = None
        if self.cfg.use_proprio:
            if batch.get("proprio") is None:
                raise ValueError("batch needs 'proprio' (B, 8) (policy.use_proprio is on)")
            raw = torch.as_tensor(
                np.asarray(batch["proprio"], dtype=np.float32)
                if not isinstance(batch["proprio"], torch.Tensor)
                else batch["proprio"]
            ).float()
            if raw.shape != (b, self.cfg.proprio_dim):
                raise ValueError(
                    f"batch['proprio'] must be ({b}, {self.cfg.proprio_dim}), got "
                    f"{tuple(raw.shape)}"
                )
            proprio = self.normalizer.normalize_proprio(raw).to(dev)
        if "input_ids" in batch:
            ids, lengths = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["lengths"])
        elif "instruction" in batch:
            instr = batch["instruction"]
            instr = [instr] * b if isinstance(instr, str) else list(instr)
            if len(instr) != b:
                raise ValueError(f"batch['instruction'] has {len(instr)} entries for {b} images")
            ids, lengths = self._prompts(instr)
        else:
            raise ValueError("batch needs 'instruction' (list of str) or 'input_ids' + 'lengths'")
        return images, proprio, ids.to(dev), lengths.to(dev)

    # ----- interface --------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Laplace parameters of one action chunk.

        Args:
            batch: "image" (B, H, W, 3) uint8 or float in [0, 1], optional "wrist_image",
                "proprio" (B, 8) raw, "instruction" list[str] (or "input_ids" + "lengths").
        Returns:
            mu, log_scale: (B, chunk, A) in normalized action space.
        """
        return self.vla(*self.prepare(batch))

    @torch.no_grad()
    def act(
        self,
        batch: dict[str, Any],
        deterministic: bool = False,
        *,
        generator: torch.Generator | None = None,
        scale_factor: float = 1.0,
        noise: torch.Tensor | None = None,
    ):
        """Sample an action chunk a ~ Laplace(mu, scale_factor * b) (mu if deterministic).

        ``scale_factor`` widens the exploration (RIPT-VLA samples at 2-5x b); the returned
        log-densities are those of the policy's own Laplace(mu, b) whatever the factor, as the
        learner computes them, so a PPO ratio compares the policy before and after an update at
        the same width (RIPT-VLA's convention). ``noise``: standard Laplace noise eps (B, chunk,
        A) to use instead of drawing from ``generator`` (a = mu + scale_factor * b * eps;
        mirrored rollouts pass -eps of their partner's).

        Returns:
            actions (B, chunk, A) normalized, log_density (B, chunk, A) per action dimension
            (sum it for the chunk's log-prob), mu, log_scale (B, chunk, A).
        """
        mu, log_scale = self(batch)
        if deterministic:
            actions = mu
        else:
            wide = log_scale + math.log(scale_factor) if scale_factor != 1.0 else log_scale
            actions = laplace_sample(mu, wide, generator=generator, noise=noise)
        return actions, laplace_log_density(actions, mu, log_scale), mu, log_scale

    def log_density(
        self, batch: dict[str, Any], actions: torch.Tensor, *, scale_gradient: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension log-densities of normalized action chunks (what the learner's PPO
        ratios are built from, at the granularity it is set to).

        Args:
            batch: observations, see ``forward``.
            actions: (B, chunk, A) normalized action chunks.
            scale_gradient: False: the log-densities treat the Laplace scale as a constant (no
                gradient through it into the scale head or the trunk that feeds it).
        Returns:
            log_density (B, chunk, A) and the Laplace log_scale (B, chunk, A) (entropy).
        """
        mu, log_scale = self(batch)
        b = log_scale if scale_gradient else log_scale.detach()
        return laplace_log_density(actions.to(mu), mu, b), log_scale

    def log_prob(self, batch: dict[str, Any], actions: torch.Tensor) -> torch.Tensor:
        """Log-prob (B,) of normalized action chunks (B, chunk, A), summed over chunk and A."""
        return self.log_density(batch, actions)[0].sum(dim=(-2, -1))

    def to_env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """(..., A) normalized actions -> env actions (gripper -1 open / +1 close), float32."""
        return self.normalizer.unnormalize_actions(actions.detach().float().cpu()).numpy()
