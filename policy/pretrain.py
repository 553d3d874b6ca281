"""Vision pretraining: the policy's vision towers learn to locate objects before the few-demo SFT.

OpenVLA's towers come pretrained on web images; the tiny policy's start random, and 40 demos do
not teach them where a block is within the homes layout's +-3 cm (1.7 px at 32 px): the 5-demo
SFT policy goes to where the block usually is (docs/RESULTS.md). Here the towers and a readout
MLP on their flattened patch features regress every object's (x, y) and the gripper's (x, y, z)
from frames of random scenes (``envs.tabletop_scenes``); the readout is thrown away, the towers
are kept (and frozen in the SFT that follows: ``sft.freeze_vision``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from policy.config import PretrainConfig
from policy.policy import Policy


class Readout(nn.Module):
    """(N, patches, D) vision features -> (N, targets): an MLP on the flattened patch grid, so
    a position can be read from which patch holds what."""

    def __init__(self, num_patches: int, dim: int, width: int, targets: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(num_patches * dim, width), nn.GELU(), nn.Linear(width, targets)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def pretrain_vision(
    policy: Policy,
    images: np.ndarray,
    targets: np.ndarray,
    cfg: PretrainConfig,
    *,
    progress: bool = True,
    log_every: int = 250,
) -> dict[str, Any]:
    """Train ``policy.vla.vision`` (in place) to locate what ``targets`` hold.

    Args:
        policy: the policy whose vision towers are trained (nothing else changes).
        images: (N, H, W, 3) uint8 frames; the first ``cfg.val_scenes`` are held out.
        targets: (N, T) positions in meters.
        cfg: the schedule.
        progress: show a tqdm bar.
        log_every: steps between validation passes.
    Returns:
        metrics: "history" of (step, train loss, validation mean absolute error per target in
        meters), the final "val_abs_error_m" per target, and the error of predicting the
        training mean ("baseline_abs_error_m"): what the towers learned beyond the layout.
    """
    if len(images) != len(targets) or len(images) <= cfg.val_scenes:
        raise ValueError(
            f"{len(images)} images and {len(targets)} targets: need the same number, more than "
            f"pretrain.val_scenes = {cfg.val_scenes}"
        )
    torch.manual_seed(cfg.seed)
    vision = policy.vla.vision
    x = torch.as_tensor(images)
    y = torch.as_tensor(targets, dtype=torch.float32)
    nv = cfg.val_scenes
    mean, std = y[nv:].mean(0), y[nv:].std(0) + 1e-6
    y_n = (y - mean) / std  # (N, T)
    readout = Readout(vision.num_patches, vision.out_dim, cfg.readout_width, y.shape[1])
    params = [*vision.parameters(), *readout.parameters()]
    for p in vision.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.1)
    gen = torch.Generator().manual_seed(cfg.seed)

    def predict(idx: torch.Tensor) -> torch.Tensor:
        return readout(vision(policy._pixels(x[idx], "image")))  # (B, T) normalized

    def val_error() -> list[float]:
        vision.eval()
        with torch.no_grad():
            err = torch.cat(
                [(predict(i) - y_n[i]).abs() * std for i in torch.arange(nv).split(256)]
            )
        vision.train()
        return err.mean(0).tolist()

    history = []
    vision.train()
    bar = tqdm(range(cfg.steps), desc="pretrain vision", disable=not progress)
    for step in bar:
        idx = torch.randint(nv, len(x), (cfg.batch_size,), generator=gen)
        loss = nn.functional.mse_loss(predict(idx), y_n[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            err = val_error()
            history.append((step + 1, loss.item(), err))
            bar.set_postfix(loss=f"{loss.item():.4f}", val_cm=f"{100 * np.mean(err):.2f}")
    for p in vision.parameters():
        p.requires_grad_(False)
    vision.eval()
    baseline = (y[:nv] - mean).abs().mean(0).tolist()
    return {
        "history": history,
        "val_abs_error_m": history[-1][2],
        "baseline_abs_error_m": baseline,
    }
