"""The OpenVLA-OFT network: fused SigLIP + DINOv2 vision, projector, Llama, heads.

Sequence (OFT): BOS, the patches of each image, the proprio token, the prompt tokens after BOS,
chunk * A placeholder embeddings set to zero, STOP; attention is bidirectional over every
non-padding token. The action hidden states are the last hidden states at positions
[patches + proprio + prompt_len - 1, + chunk * A), i.e. starting at the last prompt token, as in
OFT's training code. Prompts are right-padded; each example's offset is gathered, so the forward
pass has no Python loop over the batch.
"""

from __future__ import annotations

import torch
from torch import nn

import core.compat  # noqa: F401  (torchvision fix before transformers)
from policy.config import Arch, PolicyConfig
from policy.heads import (
    FusedProjector,
    L1RegressionActionHead,
    LaplaceScaleHead,
    ProprioProjector,
    group_action_hidden,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionBackbone(nn.Module):
    """DINOv2 (with registers) and SigLIP patch features, concatenated on the channel axis.

    Features come from the second-to-last block of each tower, patch tokens only, without the
    final norm (Prismatic's ``get_intermediate_layers`` choice).
    """

    def __init__(self, arch: Arch):
        super().__init__()
        from transformers import (
            Dinov2WithRegistersConfig,
            Dinov2WithRegistersModel,
            SiglipVisionConfig,
            SiglipVisionModel,
        )

        self.num_registers = arch.dino_registers
        self.dino = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(
                hidden_size=arch.dino_width,
                num_hidden_layers=arch.dino_layers,
                num_attention_heads=arch.dino_heads,
                mlp_ratio=arch.dino_mlp_ratio,
                image_size=arch.image_size,
                patch_size=arch.patch_size,
                num_register_tokens=arch.dino_registers,
                layerscale_value=1e-5,
            )
        )
        self.siglip = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=arch.siglip_width,
                intermediate_size=arch.siglip_mlp,
                num_hidden_layers=arch.siglip_layers,
                num_attention_heads=arch.siglip_heads,
                image_size=arch.image_size,
                patch_size=arch.patch_size,
                vision_use_head=True,
                hidden_act="gelu",  # timm's SigLIP towers (OFT's) use exact GELU
            )
        )
        self.register_buffer(
            "dino_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "dino_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
        )
        self.out_dim = arch.dino_width + arch.siglip_width
        self.num_patches = (arch.image_size // arch.patch_size) ** 2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) floats in [0, 1] -> (N, patches, dino_width + siglip_width)."""
        dtype = self.dino.embeddings.patch_embeddings.projection.weight.dtype
        dino_in = ((pixels - self.dino_mean) / self.dino_std).to(dtype)
        siglip_in = ((pixels - 0.5) / 0.5).to(dtype)
        d = self.dino(pixel_values=dino_in, output_hidden_states=True).hidden_states[-2]
        s = self.siglip(pixel_values=siglip_in, output_hidden_states=True).hidden_states[-2]
        return torch.cat([d[:, 1 + self.num_registers :], s], dim=-1)


class VLA(nn.Module):
    """The whole network; ``forward`` gives the Laplace parameters of one action chunk."""

    def __init__(
        self, cfg: PolicyConfig, *, vocab_size: int, bos_id: int, eos_id: int, pad_id: int
    ):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        arch = cfg.arch
        self.cfg = cfg
        self.image_size = arch.image_size
        self.chunk, self.action_dim = cfg.chunk, cfg.action_dim
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.vision = VisionBackbone(arch)
        self.projector = FusedProjector(vision_dim=self.vision.out_dim, llm_dim=arch.llm_width)
        self.llm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=arch.llm_vocab or vocab_size,
                hidden_size=arch.llm_width,
                intermediate_size=arch.llm_mlp,
                num_hidden_layers=arch.llm_layers,
                num_attention_heads=arch.llm_heads,
                num_key_value_heads=arch.llm_heads,
                max_position_embeddings=4096,
                rms_norm_eps=arch.rms_norm_eps,
                bos_token_id=bos_id,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
                tie_word_embeddings=False,
                initializer_range=arch.llm_init_std,
            )
        )
        self.proprio_projector = (
            ProprioProjector(llm_dim=arch.llm_width, proprio_dim=cfg.proprio_dim)
            if cfg.use_proprio
            else None
        )
        self.action_head = L1RegressionActionHead(
            llm_dim=arch.llm_width, hidden_dim=arch.llm_width, action_dim=cfg.action_dim
        )
        self.scale_head = LaplaceScaleHead(
            llm_dim=arch.llm_width,
            hidden_dim=arch.scale_head_width,
            action_dim=cfg.action_dim,
            num_blocks=cfg.scale_head_blocks,
            bias_init=cfg.scale_bias_init,
            log_scale_min=cfg.log_scale_min,
            log_scale_max=cfg.log_scale_max,
        )

    def llm_body(self) -> nn.Module:
        """The Llama decoder (``LlamaModel``), also when LoRA wraps the LLM in peft."""
        from peft import PeftModel

        llm = self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm
        return llm.model

    def action_hidden(
        self,
        images: torch.Tensor,
        proprio: torch.Tensor | None,
        ids: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        """Last hidden states at the action positions.

        Args:
            images: (B, I, 3, S, S) floats in [0, 1], I images per example.
            proprio: (B, P) normalized proprio, or None without the proprio token.
            ids: (B, L) prompt ids with BOS first, right-padded.
            lengths: (B,) real prompt lengths (BOS included).
        Returns:
            (B, chunk * A, D) float32.
        """
        body = self.llm_body()
        b, n_img = images.shape[:2]
        k = self.chunk * self.action_dim
        patches = self.vision(images.flatten(0, 1))  # (B*I, N, F)
        patches = patches.reshape(b, n_img * patches.shape[1], patches.shape[2])
        embed = body.embed_tokens
        dtype = embed.weight.dtype
        patch_emb = self.projector(patches.to(self.projector.fc1.weight.dtype)).to(dtype)
        # text part: prompt, K zero placeholders, STOP, padding
        dev = ids.device
        lt = ids.shape[1] + k + 1
        pos = torch.arange(lt, device=dev)[None, :]  # (1, Lt)
        n = lengths.to(dev)[:, None]  # (B, 1)
        prompt = torch.full((b, lt), self.pad_id, dtype=torch.long, device=dev)
        prompt[:, : ids.shape[1]] = ids
        is_action = (pos >= n) & (pos < n + k)  # (B, Lt)
        text_ids = torch.where(pos < n, prompt, torch.where(pos == n + k, self.eos_id, self.pad_id))
        text_emb = embed(text_ids) * (~is_action)[..., None].to(dtype)  # (B, Lt, D)
        valid_text = pos <= n + k  # (B, Lt)
        parts = [text_emb[:, :1], patch_emb]
        n_extra = 1 + patch_emb.shape[1]
        if self.proprio_projector is not None:
            if proprio is None:
                raise ValueError("this policy reads proprio (policy.use_proprio): pass 'proprio'")
            w = self.proprio_projector.fc1.weight
            parts.append(self.proprio_projector(proprio.to(w.dtype)).to(dtype)[:, None])
            n_extra += 1
        parts.append(text_emb[:, 1:])
        seq = torch.cat(parts, dim=1)  # (B, T, D)
        valid = torch.cat(
            [torch.ones(b, n_extra, dtype=torch.bool, device=dev), valid_text[:, 1:]], dim=1
        )  # (B, T)
        t = seq.shape[1]
        mask = torch.zeros(b, 1, t, t, dtype=dtype, device=dev)
        mask = mask.masked_fill(~valid[:, None, None, :], torch.finfo(dtype).min)
        position_ids = torch.arange(t, device=dev)[None].expand(b, t)
        hidden = body(
            inputs_embeds=seq, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, T, D)
        start = (n_extra - 1) + lengths.to(dev) - 1  # absolute position of the last prompt token
        idx = start[:, None] + torch.arange(k, device=dev)[None, :]  # (B, K)
        out = hidden.gather(1, idx[..., None].expand(b, k, hidden.shape[-1]))
        return out.float()

    def heads(self, action_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, chunk * A, D) -> mu (B, chunk, A), log_scale (B, chunk, A)."""
        grouped = group_action_hidden(action_hidden, self.action_dim)
        return self.action_head(grouped), self.scale_head(grouped)

    def forward(
        self,
        images: torch.Tensor,
        proprio: torch.Tensor | None,
        ids: torch.Tensor,
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, log_scale (B, chunk, A) in normalized action space (see ``action_hidden``)."""
        return self.heads(self.action_hidden(images, proprio, ids, lengths))
