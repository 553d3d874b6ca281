"""Instruction tokenization: OFT's prompt, a word-level tokenizer for tiny, Llama's for oft-7b.

Both kinds are stored as a Hugging Face tokenizer folder and loaded with ``AutoTokenizer`` from a
local path only (never a download). The tiny one is built with the ``tokenizers`` library from
the task vocabulary (the prompt template plus every instruction).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch

import core.compat  # noqa: F401  (torchvision fix before transformers)

PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
LLAMA_EMPTY_TOKEN = 29871  # OFT appends Llama's "▁" token to the prompt when it is missing
SPECIAL = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
_WORD = re.compile(r"\w+|[^\w\s]")


def prompt_for(instruction: str) -> str:
    """OFT's prompt for one instruction (lower-cased as OFT does)."""
    return PROMPT.format(instruction=instruction.lower().strip())


def build_word_tokenizer(instructions: Iterable[str]):
    """A word-level tokenizer (``PreTrainedTokenizerFast``) over the prompt and instructions.

    Args:
        instructions: every instruction the policy must read (the task list).
    Returns:
        a tokenizer that adds BOS and maps unknown words to <unk>.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words: set[str] = set()
    for text in [PROMPT.format(instruction="")] + [prompt_for(i) for i in instructions]:
        words.update(_WORD.findall(text))
    specials = [SPECIAL["unk"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["pad"]]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos']} $A", special_tokens=[(SPECIAL["bos"], vocab[SPECIAL["bos"]])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=SPECIAL["unk"],
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        pad_token=SPECIAL["pad"],
    )


def load_tokenizer(folder: str | Path):
    """Load a tokenizer saved with ``save_pretrained`` from a local folder.

    Raises:
        FileNotFoundError: the folder has no tokenizer files.
    """
    from transformers import AutoTokenizer

    p = Path(folder)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer.model").is_file():
        raise FileNotFoundError(
            f"no tokenizer in {p} (expected tokenizer.json or tokenizer.model); a policy "
            "checkpoint stores its tokenizer beside the weights"
        )
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)


def encode_prompts(tokenizer, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize OFT prompts, right-padded.

    Args:
        tokenizer: a HF tokenizer that adds BOS.
        instructions: B instructions.
    Returns:
        ids: (B, L) int64, BOS first, padded with the pad id (or 0).
        lengths: (B,) int64 number of real tokens (BOS included).
    """
    seqs = [tokenizer(prompt_for(s), add_special_tokens=True)["input_ids"] for s in instructions]
    if tokenizer.bos_token_id is not None and any(
        not s or s[0] != tokenizer.bos_token_id for s in seqs
    ):
        seqs = [
            [tokenizer.bos_token_id] + s if (not s or s[0] != tokenizer.bos_token_id) else s
            for s in seqs
        ]
    if (
        len(tokenizer) > LLAMA_EMPTY_TOKEN
        and tokenizer.bos_token == "<s>"
        and tokenizer.convert_ids_to_tokens(LLAMA_EMPTY_TOKEN) == "▁"
    ):
        seqs = [s if s[-1] == LLAMA_EMPTY_TOKEN else s + [LLAMA_EMPTY_TOKEN] for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):  # tokenization is per string; the model itself is batched
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, lengths
