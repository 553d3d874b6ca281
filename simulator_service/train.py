"""Training loop of the world model: mixed expert / exploration batches, EMA, validation,
safetensors checkpoints and resume.

The frozen encoders' features of each episode's reference frames are computed once before the
loop (``FeatureCache``), so a training step costs one U-Net forward and backward.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.tracking import Trackers
from simulator_service.checkpoint import (
    check_compatible,
    load_optimizer,
    load_weights,
    read_config,
    read_state,
    save_world_model,
    stored_state,
)
from simulator_service.conditioning import FeatureCache, Features
from simulator_service.config import SimulatorConfig
from simulator_service.data import (
    EpisodeArrays,
    TransitionSampler,
    load_episodes,
    reference_frames,
    split_episodes,
)
from simulator_service.model import WorldModel


def encode_all(
    model: WorldModel, episodes: list[EpisodeArrays], *, batch: int = 32
) -> FeatureCache:
    """Encoder features of every episode's reference frames, computed once (batched)."""
    cache = FeatureCache(model.encode_reference)
    by_id = {e.episode_id: e for e in episodes}
    ids = [e.episode_id for e in episodes]
    device = next(model.unet.parameters()).device
    for i in range(0, len(ids), batch):
        cache.get(
            ids[i : i + batch],
            lambda keys: torch.stack(
                [reference_frames(by_id[k], model.cfg.num_reference_frames) for k in keys]
            ).to(device),
        )
    return cache


class EMA:
    """Exponential moving average of the trainable weights, with the usual warm-up
    (decay min(d, (1 + n) / (10 + n)))."""

    def __init__(
        self, model: WorldModel, decay: float, state: dict[str, torch.Tensor] | None = None
    ):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.names]
        self.shadow = (
            state if state is not None else {k: v.clone() for k, v in stored_state(model).items()}
        )
        self.shadow = {k: v.to(self.params[0].device) for k, v in self.shadow.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        shadow = [self.shadow[n] for n in self.names]
        torch._foreach_lerp_(shadow, [p.detach() for p in self.params], 1.0 - d)


def speckle(frames: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """frames (B, 3, H, W) in [0, 1] with ``share`` of their pixels disturbed: each channel
    moved by up to +-0.4, clipped to [0, 1]."""
    b, _, h, w = frames.shape
    hit = torch.rand((b, 1, h, w), generator=generator) < share
    shift = (torch.rand(frames.shape, generator=generator) - 0.5) * 0.8
    return (frames + shift * hit).clamp(0, 1)


@torch.no_grad()
def own_history(
    model: WorldModel,
    sampler: TransitionSampler,
    batch: dict[str, Any],
    *,
    share: float,
    features: Callable[[np.ndarray], Features],
    generator: torch.Generator,
) -> int:
    """Replace, in place, the latest history frame o_t of ``share`` of the batch's transitions
    with t >= 1 by the world model's own sample of it, from the history up to o_{t-1} and the
    action map of s_t (the frame open-loop imagination would condition on, one step deep).

    Args:
        model: the world model being trained (its current weights sample).
        sampler: the sampler ``batch`` came from (it gathers the previous transitions).
        batch: a batch of ``sampler`` on the model's device (history (B, K, 3, H, W)).
        share: probability that a transition with t >= 1 gets its own frame.
        features: reference features of episode indices.
        generator: CPU generator of the choice and of the sampling noise.
    Returns:
        how many transitions got the model's frame.
    """
    steps = batch["step"]
    pick = (torch.rand(len(steps), generator=generator).numpy() < share) & (steps >= 1)
    if not pick.any():
        return 0
    eps = batch["episode"][pick]
    prev = _to(sampler.gather(eps, [int(t) - 1 for t in steps[pick]]), batch["history"].device)
    noise = torch.randn(model.noise_shape(len(eps)), generator=generator)
    frames = model.predict(prev["history"], prev["action_map"], features(eps), noise=noise)
    rows = torch.from_numpy(np.flatnonzero(pick)).to(frames.device)
    batch["history"][rows, -1] = frames.to(batch["history"].dtype)
    return int(pick.sum())


def _val_batches(
    sampler: TransitionSampler, n_batches: int, batch: int, seed: int
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + 12345)
    return [sampler.sample(batch, rng) for _ in range(n_batches)]


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _features(cache: FeatureCache, episodes: list[EpisodeArrays], idx: np.ndarray) -> Features:
    def uncached(keys: list) -> torch.Tensor:
        raise KeyError(f"episodes {keys} were not encoded before training")

    return cache.get([episodes[i].episode_id for i in idx], uncached)


def train_world_model(
    cfg: SimulatorConfig,
    data: list[str | Path],
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    loggers: Sequence[str] = (),
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a world model on episode stores and write checkpoints under ``out/checkpoint``.

    Args:
        cfg: simulator config (``cfg.train`` holds the schedule).
        data: episode store folders (expert and exploration episodes, any mix).
        out: run folder; ``metrics.jsonl`` and ``checkpoint/`` go there.
        resume: continue from ``out/checkpoint`` (its config must match ``cfg``).
        progress: show a tqdm bar.
        log: where one-line summaries go.
        loggers: trackers (``core.tracking``) of the ``sim/*`` scalars, in ``out``.
        config: the experiment config as a plain dict (stored with the W&B run).
    Returns:
        summary dict: steps, final train / validation loss, seconds, s/step, data counts.
    Raises:
        FileExistsError: ``out`` holds a checkpoint and ``resume`` is false.
    """
    from tqdm import tqdm

    tc = cfg.train
    out = Path(out)
    ckpt = out / "checkpoint"
    if ckpt.exists() and not resume:
        raise FileExistsError(
            f"{ckpt} exists; pass --resume to continue it or choose another --out"
        )
    torch.manual_seed(tc.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    episodes, _camera = load_episodes(list(data), cfg, progress=progress)
    train_eps, val_eps = split_episodes(episodes, tc.val_fraction, tc.seed)
    sampler = TransitionSampler(
        train_eps, k=cfg.history, exploration_fraction=tc.exploration_fraction
    )
    model = WorldModel(cfg).to(device)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step = 0
    ema_state = None
    if resume:
        check_compatible(cfg, read_config(ckpt), str(ckpt))
        load_weights(model, ckpt / "model.safetensors")
        from safetensors.torch import load_file

        ema_state = load_file(str(ckpt / "ema.safetensors"))
        load_optimizer(ckpt, opt)
        step = int(read_state(ckpt)["step"])
        log(f"resuming from {ckpt} at step {step}")
    ema = EMA(model, tc.ema_decay, ema_state)
    out.mkdir(parents=True, exist_ok=True)
    cache = encode_all(model, episodes)
    val_sampler = (
        TransitionSampler(val_eps, k=cfg.history, exploration_fraction=tc.exploration_fraction)
        if val_eps
        else None
    )
    val_data = _val_batches(val_sampler, 2, tc.batch_size, tc.seed) if val_sampler else []
    log(
        f"world model: {sum(p.numel() for p in model.trainable_parameters()):,} trainable "
        f"parameters; episodes train {sampler.counts()} validation {len(val_eps)}"
    )

    def validate() -> float:
        if not val_data:
            return float("nan")
        model.unet.eval()
        losses = []
        with torch.no_grad():
            for j, b in enumerate(val_data):
                b = _to(b, device)
                g = torch.Generator(device=device).manual_seed(tc.seed + j)
                feats = _features(cache, val_eps, b["episode"])
                losses.append(
                    model.loss(
                        b["history"], b["action_map"], feats, b["target"], generator=g
                    ).item()
                )
        model.unet.train()
        return float(np.mean(losses))

    metrics_file = (out / "metrics.jsonl").open("a")
    trackers = Trackers(
        out, loggers, job="train_simulator", config=config, resumed_at=step if resume else None
    )
    t0 = time.time()
    start_step = step
    losses: list[float] = []
    last_val = float("nan")
    bar = tqdm(total=tc.steps, initial=step, desc="train-simulator", disable=not progress)
    model.unet.train()
    try:
        while step < tc.steps:
            rng = np.random.default_rng((tc.seed, step))
            b = sampler.sample(tc.batch_size, rng)
            if tc.history_speckle > 0:
                g = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
                b["history"][:, -1] = speckle(b["history"][:, -1], tc.history_speckle, g)
            b = _to(b, device)
            if tc.own_history > 0:
                g = torch.Generator().manual_seed(tc.seed * 1_000_033 + step)
                own_history(
                    model,
                    sampler,
                    b,
                    share=tc.own_history,
                    features=lambda idx: _features(cache, train_eps, idx),
                    generator=g,
                )
            feats = _features(cache, train_eps, b["episode"])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.bf16_autocast):
                loss = model.loss(b["history"], b["action_map"], feats, b["target"])
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at step {step}; "
                    "lower train.lr or turn off train.bf16_autocast"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), tc.grad_clip)
            opt.step()
            step += 1
            ema.update(step)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            record: dict[str, Any] = {
                "step": step,
                "sim/loss": loss.item(),
                "sim/grad_norm": float(grad_norm),
            }
            out_of_time = tc.time_budget_s > 0 and time.time() - t0 > tc.time_budget_s
            if step % tc.val_every == 0 or step == tc.steps or out_of_time:
                last_val = validate()
                record["sim/val_loss"] = last_val
            metrics_file.write(json.dumps(record) + "\n")
            trackers.log(step, {k: v for k, v in record.items() if k != "step"})
            if step % tc.ckpt_every == 0 or step == tc.steps or out_of_time:
                metrics_file.flush()
                save_world_model(
                    ckpt,
                    model=model,
                    ema=ema.shadow,
                    optimizer=opt,
                    step=step,
                    metrics={"train_loss": float(np.mean(losses[-50:])), "val_loss": last_val},
                )
            if out_of_time:
                log(f"time budget of {tc.time_budget_s:.0f} s reached at step {step}")
                break
    finally:
        bar.close()
        metrics_file.close()
        trackers.close()
    seconds = time.time() - t0
    done = step - start_step
    summary = {
        "steps": step,
        "train_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "val_loss": last_val,
        "seconds": round(seconds, 1),
        "s_per_step": round(seconds / max(done, 1), 4),
        "episodes": {"train": sampler.counts(), "validation": len(val_eps)},
        "checkpoint": str(ckpt),
        "validation_episodes": [e.episode_id for e in val_eps],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


__all__ = ["train_world_model", "encode_all", "EMA", "own_history", "speckle"]
