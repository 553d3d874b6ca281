"""Policy checkpoints: a folder with safetensors weights, a stock peft adapter folder, the
tokenizer, ``dataset_statistics.json`` and the config.

Layout of ``save_policy(policy, out)``::

    out/config.yaml                the PolicyConfig
    out/model.safetensors          every weight but the LLM's base weights (include_base=True)
    out/llm/                       the LLM's base weights as a stock transformers folder
                                   (config.json + model.safetensors), or instead of both:
    out/trainable.safetensors      LoRA + heads only, on top of config.checkpoint (the base)
    out/adapter/                   adapter_config.json + adapter_model.safetensors (stock peft;
                                   base_model_name_or_path "../llm", relative to the adapter)
    out/tokenizer/                 tokenizer.json, ...
    out/dataset_statistics.json    OFT layout

A folder written with ``include_base=True`` names no other path: it loads after being copied
anywhere, with ``load_policy`` or with stock transformers + peft::

    llm = LlamaForCausalLM.from_pretrained("out/llm")
    llm = PeftModel.from_pretrained(llm, "out/adapter")

Checkpoints of the earlier layout (the LLM's base weights inside model.safetensors) still load.
Folders are written under a temporary name and moved into place, never half-written. The
contract (config.yaml, safetensors, save / load / read_config) is every checkpoint's:
``core/checkpoint.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.checkpoint import read_config as read_checkpoint_config
from core.checkpoint import write_config
from core.fsutil import staged_folder
from core.weights import compare_state_dicts
from policy.config import PolicyConfig
from policy.normalization import STATS_FILE, Normalizer, load_statistics, save_statistics
from policy.policy import Policy
from policy.tokenizer import build_word_tokenizer, load_tokenizer

MODEL_FILE = "model.safetensors"
TRAINABLE_FILE = "trainable.safetensors"
LLM_FOLDER = "llm"
LLM_PREFIX = "vla.llm.base_model.model."  # the peft-wrapped LLM's keys in the policy


def llm_base_names(keys) -> dict[str, str]:
    """{policy key: stock transformers key} of the LLM's base weights among ``keys``
    (``vla.llm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`` ->
    ``model.layers.0.self_attn.q_proj.weight``; LoRA weights are not base weights)."""
    return {
        k: k[len(LLM_PREFIX) :].replace(".base_layer.", ".")
        for k in keys
        if k.startswith(LLM_PREFIX) and "lora_" not in k
    }


def _write_llm(policy: Policy, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Move the LLM's base weights out of ``state`` into a stock transformers folder."""
    from safetensors.torch import save_file

    names = llm_base_names(state)
    folder.mkdir()
    policy.vla.llm_body().config.save_pretrained(str(folder))  # LlamaConfig -> config.json
    body = {names[k]: state.pop(k) for k in names}
    save_file(body, str(folder / MODEL_FILE), metadata={"format": "pt"})


def _adapter_names_base(adapter: Path) -> None:
    """Record the base LLM folder in the stock adapter config, relative to the adapter."""
    import json

    file = adapter / "adapter_config.json"
    conf = json.loads(file.read_text())
    conf["base_model_name_or_path"] = f"../{LLM_FOLDER}"
    file.write_text(json.dumps(conf, indent=2, sort_keys=True))


def build_policy(
    cfg: PolicyConfig, *, instructions: list[str], stats: dict[str, Any], tokenizer=None
) -> Policy:
    """A freshly initialized policy (tiny: word-level tokenizer from ``instructions``).

    Args:
        cfg: policy config.
        instructions: every task instruction (vocabulary of the tiny tokenizer).
        stats: OFT-layout statistics of one dataset (``{"action": ..., "proprio": ...}``).
        tokenizer: use this tokenizer instead of building one.
    """
    tok = tokenizer if tokenizer is not None else build_word_tokenizer(instructions)
    return Policy(cfg, tokenizer=tok, normalizer=Normalizer(stats))


def check_state_dict(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], *, what: str
) -> None:
    """Raise ValueError listing missing / unexpected keys and shape mismatches."""
    m = compare_state_dicts(expected, found)
    missing, unexpected = m.missing, m.unexpected
    wrong = [f"{k} {got} != {want}" for k, got, want in m.wrong_shapes]
    if m:

        def short(xs: list[str]) -> str:
            return ", ".join(xs[:20]) + (f" ... ({len(xs)} in all)" if len(xs) > 20 else "")

        raise ValueError(
            f"{what} does not fit the policy: missing keys [{short(missing)}], "
            f"unexpected keys [{short(unexpected)}], wrong shapes [{short(wrong)}]"
        )


def _write_folder(out: Path, fill) -> None:
    """Run ``fill(staging_folder)``, then swap the folder in at ``out`` (replacing an old one)."""
    with staged_folder(out) as tmp:
        fill(tmp)


def save_policy(policy: Policy, out: str | Path, *, include_base: bool = True) -> Path:
    """Save a policy checkpoint folder (see the module docstring).

    Args:
        policy: the policy.
        out: destination folder (replaced atomically if it exists).
        include_base: write every weight; False writes the trainable part only and records
            ``policy.cfg.checkpoint`` as the base to load first.
    Returns:
        the folder.
    """
    from safetensors.torch import save_file

    cfg = policy.cfg
    if not include_base and not cfg.checkpoint:
        raise ValueError(
            "save_policy(include_base=False) needs a base checkpoint in "
            "policy.checkpoint to load the frozen weights from"
        )

    def fill(tmp: Path) -> None:
        base = dict(checkpoint="", checkpoint_format="rehearse") if include_base else {}
        if include_base:
            state = {k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}
            _write_llm(policy, state, tmp / LLM_FOLDER)
            save_file(state, str(tmp / MODEL_FILE))
        else:
            state = {k: v.contiguous().cpu() for k, v in policy.trainable_state_dict().items()}
            save_file(state, str(tmp / TRAINABLE_FILE))
        write_config(tmp, cfg, **base)
        policy.vla.llm.save_pretrained(str(tmp / "adapter"))
        if include_base:
            _adapter_names_base(tmp / "adapter")
        policy.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        name = cfg.unnorm_key or "dataset"
        save_statistics({name: policy.normalizer.stats}, tmp)

    _write_folder(Path(out), fill)
    return Path(out)


def export_policy(source: str | Path, out: str | Path, *, fmt: str = "rehearse") -> Path:
    """Write the policy of checkpoint ``source`` as a self-contained folder ``out``.

    Args:
        source: any policy checkpoint (a post-trained one on top of its SFT base too).
        out: destination folder (replaced atomically if it exists).
        fmt: ``rehearse`` (this module's layout, every weight, the stock LLM + adapter folders)
            or ``oft`` (OpenVLA-OFT's own files, LoRA merged: ``policy.oft_import.export_oft``).
    """
    import dataclasses

    if fmt not in ("rehearse", "oft"):
        raise ValueError(f"export format must be 'rehearse' or 'oft', got {fmt!r}")
    policy = load_policy(source)
    policy.cfg = dataclasses.replace(policy.cfg, checkpoint="", checkpoint_format="rehearse")
    if fmt == "rehearse":
        return save_policy(policy, out, include_base=True)
    from policy.oft_import import export_oft

    _write_folder(Path(out), lambda tmp: export_oft(policy, tmp))
    return Path(out)


def read_config(folder: str | Path) -> PolicyConfig:
    """The PolicyConfig stored in a checkpoint folder."""
    return read_checkpoint_config(folder, PolicyConfig, what="policy")


def load_policy(folder: str | Path, *, device: str | torch.device = "cpu") -> Policy:
    """Load a checkpoint written by ``save_policy`` (strict: missing/unexpected keys raise)."""

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"policy checkpoint {folder} does not exist")
    cfg = read_config(folder)
    if (folder / MODEL_FILE).is_file():
        if not (folder / STATS_FILE).is_file():
            raise FileNotFoundError(f"{folder} lacks {STATS_FILE} (action statistics)")
        policy = Policy(
            cfg,
            tokenizer=load_tokenizer(folder / "tokenizer"),
            normalizer=Normalizer.from_file(folder, key=cfg.unnorm_key),
        )
        state = _read_weights(folder / MODEL_FILE)
        llm_file = folder / LLM_FOLDER / MODEL_FILE
        if llm_file.is_file():  # the LLM's base weights in their stock folder
            body = _read_weights(llm_file)
            for ours, stock in llm_base_names(policy.state_dict()).items():
                if stock in body:
                    state[ours] = body.pop(stock)
            state.update({f"{LLM_FOLDER}/{k}": v for k, v in body.items()})  # named as unexpected
        check_state_dict(policy.state_dict(), state, what=str(folder / MODEL_FILE))
        policy.load_state_dict(state, strict=True)
    elif (folder / TRAINABLE_FILE).is_file():
        policy = load_base(cfg, device=device)
        policy.load_trainable_state_dict(_read_weights(folder / TRAINABLE_FILE))
    else:
        raise FileNotFoundError(f"{folder} holds neither {MODEL_FILE} nor {TRAINABLE_FILE}")
    return policy.to(device)


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; ValueError naming the file when it is not readable."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as e:  # a truncated or foreign file: SafetensorError, OSError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"policy weights {file} are not a readable safetensors file: {first}"
        ) from None


def load_base(cfg: PolicyConfig, *, device: str | torch.device = "cpu") -> Policy:
    """The policy named by ``cfg.checkpoint`` in ``cfg.checkpoint_format``."""
    if not cfg.checkpoint:
        raise ValueError("policy.checkpoint is empty: nothing to load")
    if cfg.checkpoint_format == "oft":
        from policy.oft_import import import_oft

        return import_oft(cfg.checkpoint, cfg).to(device)
    return load_policy(cfg.checkpoint, device=device)


__all__ = [
    "build_policy",
    "save_policy",
    "load_policy",
    "export_policy",
    "load_base",
    "read_config",
    "check_state_dict",
    "load_statistics",
]
