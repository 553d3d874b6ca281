"""LoRA adapters on the LLM through peft, with a clear error for target names that match nothing."""

from __future__ import annotations

import warnings

from torch import nn

import core.compat  # noqa: F401  (torchvision fix before transformers/peft)

ADAPTER_NAME = "default"


def lora_config(*, rank: int, alpha: int, dropout: float, target_modules: list[str]):
    """The peft ``LoraConfig`` (``["all-linear"]`` = every Linear of the LLM but lm_head)."""
    from peft import LoraConfig

    targets: str | list[str] = "all-linear" if target_modules == ["all-linear"] else target_modules
    return LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"
    )


def check_targets(model: nn.Module, target_modules: list[str]) -> None:
    """Raise ValueError naming every target that matches no Linear module of ``model``."""
    if target_modules == ["all-linear"]:
        return
    linear_names = {
        name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    missing = [t for t in target_modules if t not in linear_names]
    if missing:
        raise ValueError(
            f"policy.lora_target_modules {missing} match no Linear module of the LLM; "
            f"available: {sorted(linear_names)} (or ['all-linear'])"
        )


def linear_modules(module: nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Full names of the Linear modules of ``module`` (minus those under a ``skip`` prefix):
    the LoRA targets of the vision towers and the projector (``policy.lora_scope: vla``)."""
    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear) and not name.startswith(skip)
    ]


def inject_lora(module: nn.Module, *, rank: int, alpha: int, dropout: float, targets: list[str]):
    """LoRA adapters (peft, adapter "default") on the named Linear modules of ``module``, in
    place and without a wrapper; their B starts at zero, so the function is unchanged."""
    from peft import inject_adapter_in_model

    cfg = lora_config(rank=rank, alpha=alpha, dropout=dropout, target_modules=targets)
    return inject_adapter_in_model(cfg, module, adapter_name=ADAPTER_NAME)


def add_lora(
    llm: nn.Module, *, rank: int, alpha: int, dropout: float, target_modules: list[str]
) -> nn.Module:
    """Wrap ``llm`` in a peft model with LoRA adapters; base weights are frozen.

    Returns:
        the ``PeftModel`` (the adapters are injected into ``llm`` in place).
    """
    from peft import get_peft_model

    check_targets(llm, target_modules)
    cfg = lora_config(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
    with warnings.catch_warnings():  # peft reads transformers' deprecated alias; not ours to fix
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        return get_peft_model(llm, cfg, adapter_name=ADAPTER_NAME)
