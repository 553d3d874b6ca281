"""Supervised fine-tuning on few demos: L1 on action chunks, then the scale head by Laplace NLL.

Stage 1 trains mu (the action head, LoRA, the proprio projector, and with
``SFTConfig.train_backbone`` every weight of the network) with the masked L1 loss on normalized
action chunks a[t : t + chunk] of consecutive steps (steps past the episode's end are masked).
Stage 2 holds mu fixed and fits the scale head by the Laplace negative log-likelihood, so the
policy starts RL with a calibrated exploration scale.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.tracking import Trackers
from policy.checkpoint import build_policy, load_base, save_policy
from policy.config import PolicyConfig, SFTConfig
from policy.distribution import laplace_log_prob
from policy.heads import group_action_hidden
from policy.normalization import Normalizer, statistics_from_store
from policy.policy import Policy

EVAL_BATCH = 64  # samples per forward pass of the validation loss (no gradients)


@dataclass
class ChunkData:
    """Training samples, one per (episode, step) with a real action.

    images: (N, H, W, 3) uint8; wrist: same or None; proprio: (N, P) raw;
    instructions: N strings; chunks: (N, chunk, A) normalized targets; mask: (N, chunk) bool.
    """

    images: torch.Tensor
    wrist: torch.Tensor | None
    proprio: torch.Tensor
    instructions: list[str]
    chunks: torch.Tensor
    mask: torch.Tensor
    first: torch.Tensor  # (N,) bool, and switch: (N,) bool, see ``decision_steps``
    switch: torch.Tensor

    def __len__(self) -> int:
        return len(self.instructions)

    def batch(self, idx: torch.Tensor, *, shift: int = 0, generator=None) -> dict[str, Any]:
        images = self.images[idx]
        wrist = None if self.wrist is None else self.wrist[idx]
        if shift:
            images = random_shift(images, shift, generator)
            wrist = None if wrist is None else random_shift(wrist, shift, generator)
        return {
            "image": images,
            "wrist_image": wrist,
            "proprio": self.proprio[idx],
            "instruction": [self.instructions[i] for i in idx.tolist()],
        }


def random_shift(images: torch.Tensor, shift: int, generator=None) -> torch.Tensor:
    """Shift each image by up to ``shift`` px (edge padding): (B, H, W, 3) -> same."""
    b, h, w, _ = images.shape
    padded = torch.nn.functional.pad(
        images.permute(0, 3, 1, 2).float(), (shift, shift, shift, shift), mode="replicate"
    )
    dx, dy = torch.randint(0, 2 * shift + 1, (2, b), generator=generator)
    rows = dy[:, None] + torch.arange(h)[None]  # (B, H)
    cols = dx[:, None] + torch.arange(w)[None]  # (B, W)
    bi = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    return out.to(images.dtype)


def chunk_targets(actions: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Action chunks of consecutive steps of one episode.

    Args:
        actions: (T, A) the episode's real actions (terminal row removed).
        chunk: K.
    Returns:
        chunks (T, K, A) with a[t + k] (zeros past the end), mask (T, K) true where real.
    """
    t, a = actions.shape
    idx = np.arange(t)[:, None] + np.arange(chunk)[None, :]  # (T, K)
    mask = idx < t
    chunks = np.where(mask[..., None], actions[np.minimum(idx, t - 1)], 0.0)
    return chunks.astype(np.float32), mask


def make_data(
    store, episode_ids: list[str], normalizer: Normalizer, *, chunk: int, wrist: bool
) -> ChunkData:
    """Stack the samples of the given episodes."""
    imgs, wr, prop, instr, chunks, masks, firsts, switches = [], [], [], [], [], [], [], []
    for eid in episode_ids:
        ep = store.load_episode(eid)
        t = ep.num_steps
        if wrist and ep.wrist_images is None:
            raise ValueError(f"episode {eid!r} has no wrist images but policy.num_images=2")
        c, m = chunk_targets(ep.actions[:t], chunk)
        imgs.append(ep.images[:t])
        if wrist:
            wr.append(ep.wrist_images[:t])
        prop.append(ep.proprio[:t])
        instr += [ep.instruction] * t
        chunks.append(normalizer.normalize_actions(torch.from_numpy(c)))
        masks.append(torch.from_numpy(m))
        first, switch = decision_steps(ep.actions[:t])
        firsts.append(torch.from_numpy(first))
        switches.append(torch.from_numpy(switch))
    return ChunkData(
        torch.from_numpy(np.concatenate(imgs)),
        torch.from_numpy(np.concatenate(wr)) if wrist else None,
        torch.from_numpy(np.concatenate(prop)),
        instr,
        torch.cat(chunks),
        torch.cat(masks),
        torch.cat(firsts),
        torch.cat(switches),
    )


def split_demos(
    store, *, demos_per_task: int, val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Train on the first ``demos_per_task`` expert demos of each task; validate on the next
    ones when the store has more, else hold out ``val_fraction`` of them (>= 1 if >= 2)."""
    by_task: dict[str, list[str]] = {}
    for e in store.episode_info:
        if e["source"] == "expert" and e["length"] > 0:
            by_task.setdefault(e["task_id"], []).append(e["episode_id"])
    if not by_task:
        raise ValueError(f"episode store {store.path} has no expert demos")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for _, ids in sorted(by_task.items()):
        ids = sorted(ids)
        if len(ids) > demos_per_task:
            train += ids[:demos_per_task]
            val += ids[demos_per_task : demos_per_task + 2]
            continue
        if len(ids) < demos_per_task:
            raise ValueError(
                f"task {_!r} has {len(ids)} expert demos in {store.path}, "
                f"--demos-per-task asks for {demos_per_task}"
            )
        n_val = max(1, round(val_fraction * len(ids))) if val_fraction > 0 and len(ids) > 1 else 0
        perm = rng.permutation(len(ids))
        val += [ids[i] for i in perm[:n_val]]
        train += [ids[i] for i in perm[n_val:]]
    return train, val


def decision_steps(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The steps of one episode where the instruction decides what comes next.

    Args:
        actions: (T, A) the episode's real actions, gripper command last (OFT's layout).
    Returns:
        first (T,) bool, true at step 0 (nothing in the scene or proprio tells the task yet);
        switch (T,) bool, true where the gripper command changes sign (a grasp or a release
        starts the next phase: where to carry, what to do next).
    """
    t = len(actions)
    first = np.arange(t) == 0
    g = np.sign(actions[:, -1])
    switch = np.concatenate([[False], g[1:] != g[:-1]]) if t else np.zeros(0, bool)
    return first, switch


class DecisionSampler:
    """Batches of sample indices with fixed shares from the demos' decision steps.

    A demo has few steps where the instruction alone decides the action chunk (its first step,
    and the grasps and releases that start the next phase); elsewhere a policy can read the
    task off proprio and the scene. A random tiny LLM learns to read the instruction only when
    those samples weigh about half the loss (measured in issue 3: 0 / 40 successes at a quarter
    from first steps, 5 / 40 at a half).
    """

    def __init__(
        self, data: ChunkData, batch_size: int, *, start_fraction: float, switch_fraction: float
    ):
        self.n, self.batch_size = len(data), batch_size
        self.first = torch.nonzero(data.first).flatten()  # (S,)
        self.switch = torch.nonzero(data.switch).flatten()  # (W,)
        self.n_first = round(start_fraction * batch_size) if len(self.first) else 0
        self.n_switch = round(switch_fraction * batch_size) if len(self.switch) else 0

    def __call__(self, generator: torch.Generator) -> torch.Tensor:
        """(batch_size,) int64 indices: first steps, gripper switches, then uniform."""
        n_rest = self.batch_size - self.n_first - self.n_switch
        first = self.first[torch.randint(0, len(self.first), (self.n_first,), generator=generator)]
        switch = self.switch[
            torch.randint(0, len(self.switch), (self.n_switch,), generator=generator)
        ]
        rest = torch.randint(0, self.n, (n_rest,), generator=generator)
        return torch.cat([first, switch, rest])


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, K, A) or (B, K), mask (B, K) -> mean over real steps (and dims)."""
    m = mask.to(x)
    if x.ndim == 3:
        return (x * m[..., None]).sum() / (m.sum() * x.shape[-1]).clamp_min(1)
    return (x * m).sum() / m.sum().clamp_min(1)


class InstructionProbe:
    """Which instruction a sample has, read from the action positions' hidden states.

    A fixed random linear readout (not trained, not saved): logits = scale * mean_t(h_t) W with
    W ~ N(0, 1 / D) over the demos' distinct instructions. Its cross-entropy, added to the L1
    loss, makes the hidden states the action head reads tell every instruction apart, the
    target word included.
    """

    def __init__(self, instructions: Sequence[str], *, seed: int, scale: float = 10.0):
        self.names = sorted(set(instructions))
        self.seed = seed
        self.scale = scale
        self._index = {s: i for i, s in enumerate(self.names)}
        self._readout: torch.Tensor | None = None  # (D, I), drawn at the first call

    def loss(self, hidden: torch.Tensor, instructions: Sequence[str]) -> torch.Tensor:
        """Cross-entropy of the instructions (B) from hidden states (B, K, D)."""
        if self._readout is None:
            width = hidden.shape[-1]
            gen = torch.Generator().manual_seed(self.seed)
            self._readout = torch.randn(width, len(self.names), generator=gen) / width**0.5
        labels = torch.tensor([self._index[s] for s in instructions], device=hidden.device)
        logits = self.scale * hidden.mean(dim=1) @ self._readout.to(hidden)  # (B, I)
        return torch.nn.functional.cross_entropy(logits, labels)


def l1_loss(
    policy: Policy,
    data: ChunkData,
    idx: torch.Tensor,
    *,
    shift: int = 0,
    generator=None,
    probe: InstructionProbe | None = None,
    probe_weight: float = 0.0,
) -> torch.Tensor:
    """Masked L1 between mu and the normalized target chunks of samples ``idx``, plus
    ``probe_weight`` times the probe's instruction cross-entropy when a probe is given."""
    batch = data.batch(idx, shift=shift, generator=generator)
    hidden = policy.vla.action_hidden(*policy.prepare(batch))  # (B, chunk * A, D)
    mu, _ = policy.vla.heads(hidden)  # (B, chunk, A)
    loss = _masked_mean((mu - data.chunks[idx].to(mu)).abs(), data.mask[idx].to(mu.device))
    if probe is not None and probe_weight:
        loss = loss + probe_weight * probe.loss(hidden, batch["instruction"])
    return loss


def nll_loss(policy: Policy, data: ChunkData, idx: torch.Tensor) -> torch.Tensor:
    """Masked Laplace NLL per action step with mu held fixed (grad to the scale head only)."""
    with torch.no_grad():
        hidden = policy.vla.action_hidden(*policy.prepare(data.batch(idx)))
    grouped = group_action_hidden(hidden, policy.cfg.action_dim)  # (B, chunk, A * D)
    with torch.no_grad():
        mu = policy.vla.action_head(grouped)
    log_scale = policy.vla.scale_head(grouped)
    lp = laplace_log_prob(data.chunks[idx].to(mu), mu, log_scale)  # (B, K)
    return -_masked_mean(lp, data.mask[idx].to(mu.device))


def set_scale_range(policy: Policy, low: float, high: float) -> None:
    """Give a loaded policy the experiment's clip range of the Laplace log-scale.

    Every other field of a loaded policy's config is the checkpoint's (its architecture); the
    scale's range is what the SFT's second stage fits the scale head within, so it is the
    experiment's (``policy.log_scale_min`` / ``log_scale_max``), and the saved checkpoint
    carries it on to post-training and evaluation.
    """
    if (policy.cfg.log_scale_min, policy.cfg.log_scale_max) == (low, high):
        return
    policy.cfg = policy.vla.cfg = replace(policy.cfg, log_scale_min=low, log_scale_max=high)
    policy.vla.scale_head.log_scale_min = low
    policy.vla.scale_head.log_scale_max = high


@torch.no_grad()
def init_scale_bias(policy: Policy, data: ChunkData, idx: torch.Tensor) -> None:
    """Start the scale fit at the maximum-likelihood constant scale: the last bias of the scale
    head becomes log(mean |a - mu|) per action dimension on samples ``idx`` (within the clip
    range). From the construction bias (-3, below the -2 floor) the clipped NLL would first
    have to climb out of the floor before its value moved."""
    hidden = policy.vla.action_hidden(*policy.prepare(data.batch(idx)))
    mu = policy.vla.action_head(group_action_hidden(hidden, policy.cfg.action_dim))
    m = data.mask[idx].to(mu.device)[..., None].to(mu)  # (B, K, 1)
    resid = ((mu - data.chunks[idx].to(mu)).abs() * m).sum((0, 1)) / m.sum().clamp_min(1)
    fc2 = policy.vla.scale_head.model.fc2
    fc2.bias.copy_(
        resid.clamp_min(1e-6).log().clamp(policy.cfg.log_scale_min, policy.cfg.log_scale_max)
    )


@torch.no_grad()
def evaluate_loss(policy: Policy, data: ChunkData, *, batch_size: int, nll: bool = False) -> float:
    """Mean L1 (or NLL) over all samples of ``data``."""
    if len(data) == 0:
        return float("nan")
    total, n = 0.0, 0
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        loss = nll_loss(policy, data, idx) if nll else l1_loss(policy, data, idx)
        total += float(loss) * len(idx)
        n += len(idx)
    return total / n


def run_sft(
    store,
    *,
    policy_cfg: PolicyConfig,
    sft_cfg: SFTConfig,
    demos_per_task: int,
    out: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
    loggers: Sequence[str] = (),
    config: dict[str, Any] | None = None,
) -> tuple[Policy, dict[str, Any]]:
    """Fine-tune a policy on few expert demos and save the checkpoint to ``out``.

    Args:
        store: an ``EpisodeStore`` with expert demos.
        policy_cfg: the policy (``checkpoint`` set: start from it; else a fresh tiny policy).
        sft_cfg: the SFT schedule.
        demos_per_task: expert demos per task to train on.
        out: checkpoint folder (written atomically; metrics in ``out/sft_metrics.json``).
        device: where to train ("cpu", "cuda").
        progress: show tqdm bars.
        loggers: trackers (``core.tracking``: "tensorboard", "wandb") of ``sft/l1``,
            ``sft/val_l1`` and ``sft/nll`` per step, stored in ``out`` beside the checkpoint.
        config: the experiment config as a plain dict (stored with the W&B run).
    Returns:
        the policy and the metrics (train/val L1 history, val NLL, sample counts).
    """
    logs = Path(out).parent / f".{Path(out).name}.logs"  # out itself is written at the end
    try:
        with Trackers(logs, loggers, job="sft", config=config) as trackers:
            policy, metrics = _fine_tune(
                store,
                policy_cfg=policy_cfg,
                sft_cfg=sft_cfg,
                demos_per_task=demos_per_task,
                out=out,
                device=device,
                progress=progress,
                trackers=trackers,
            )
        for sub in logs.iterdir():
            shutil.move(str(sub), str(Path(out) / sub.name))
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return policy, metrics


def _fine_tune(
    store,
    *,
    policy_cfg: PolicyConfig,
    sft_cfg: SFTConfig,
    demos_per_task: int,
    out: str | Path,
    device: str | torch.device,
    progress: bool,
    trackers: Trackers,
) -> tuple[Policy, dict[str, Any]]:
    torch.manual_seed(sft_cfg.seed)
    train_ids, val_ids = split_demos(
        store, demos_per_task=demos_per_task, val_fraction=sft_cfg.val_fraction, seed=sft_cfg.seed
    )
    name = policy_cfg.unnorm_key or str(store.meta.get("env", "dataset"))
    stats = statistics_from_store(store, dataset_name=name, episode_ids=train_ids)[name]
    if policy_cfg.checkpoint:
        policy = load_base(policy_cfg)
        policy.normalizer = Normalizer(stats, name=name)
        set_scale_range(policy, policy_cfg.log_scale_min, policy_cfg.log_scale_max)
    else:
        instructions = sorted(
            {e["instruction"] for e in store.episode_info}
            | set(store.meta.get("tasks", {}).values())
        )
        policy = build_policy(policy_cfg, instructions=instructions, stats=stats)
    policy.to(device)
    norm = policy.normalizer
    wrist = policy.cfg.num_images == 2
    train = make_data(store, train_ids, norm, chunk=policy.cfg.chunk, wrist=wrist)
    val = make_data(store, val_ids, norm, chunk=policy.cfg.chunk, wrist=wrist) if val_ids else None
    gen = torch.Generator().manual_seed(sft_cfg.seed)
    metrics: dict[str, Any] = {
        "train_episodes": len(train_ids),
        "val_episodes": len(val_ids),
        "train_samples": len(train),
        "l1": [],
        "val_l1": [],
    }

    # stage 1: mu by L1
    policy.train()
    for n, p in policy.named_parameters():
        p.requires_grad_(
            (
                sft_cfg.train_backbone
                or policy._is_trainable(n)
                or n.startswith("vla.proprio_projector.")
            )
            and not n.startswith("vla.scale_head.")
            and not (sft_cfg.freeze_vision and n.startswith("vla.vision."))
        )
    params = [p for p in policy.parameters() if p.requires_grad]
    total = sft_cfg.cycles * sft_cfg.steps
    metrics["lr"] = []
    bar = tqdm(range(total), desc="sft l1", disable=not progress)
    draw = DecisionSampler(
        train,
        sft_cfg.batch_size,
        start_fraction=sft_cfg.start_fraction,
        switch_fraction=sft_cfg.switch_fraction,
    )
    probe = (
        InstructionProbe(train.instructions, seed=sft_cfg.seed)
        if sft_cfg.instruction_weight
        else None
    )
    for step in bar:
        if step % sft_cfg.steps == 0:  # a cycle starts: a fresh optimizer and cosine
            opt = torch.optim.AdamW(params, lr=sft_cfg.lr, weight_decay=sft_cfg.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=sft_cfg.steps, eta_min=sft_cfg.lr * 0.1
            )
        metrics["lr"].append(sched.get_last_lr()[0])
        idx = draw(gen)
        loss = l1_loss(
            policy,
            train,
            idx,
            shift=sft_cfg.augment_shift,
            generator=gen,
            probe=probe,
            probe_weight=sft_cfg.instruction_weight,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        metrics["l1"].append(loss.item())
        trackers.log(step + 1, {"sft/l1": metrics["l1"][-1]})
        if val is not None and ((step + 1) % sft_cfg.val_every == 0 or step + 1 == total):
            policy.eval()
            v = evaluate_loss(policy, val, batch_size=EVAL_BATCH)
            policy.train()
            metrics["val_l1"].append((step + 1, v))
            trackers.log(step + 1, {"sft/val_l1": v})
            bar.set_postfix(l1=f"{metrics['l1'][-1]:.4f}", val_l1=f"{v:.4f}")
        elif step % 10 == 0:
            bar.set_postfix(l1=f"{metrics['l1'][-1]:.4f}")

    # stage 2: scale head by Laplace NLL, mu fixed
    policy.eval()  # no dropout while fitting the scale: mu must be the one used at act time
    for n, p in policy.named_parameters():
        p.requires_grad_(n.startswith("vla.scale_head."))
    probe = torch.randperm(len(train), generator=gen)[: 2 * sft_cfg.batch_size]
    metrics["nll"] = []
    if sft_cfg.scale_steps:
        with torch.no_grad():
            metrics["nll_before"] = float(nll_loss(policy, train, probe))
        init_scale_bias(policy, train, probe)
        opt = torch.optim.AdamW(list(policy.vla.scale_head.parameters()), lr=sft_cfg.scale_lr)
    for i in tqdm(range(sft_cfg.scale_steps), desc="sft scale", disable=not progress):
        idx = torch.randint(0, len(train), (sft_cfg.batch_size,), generator=gen)
        loss = nll_loss(policy, train, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        metrics["nll"].append(loss.item())
        trackers.log(total + i + 1, {"sft/nll": metrics["nll"][-1]})
    if sft_cfg.scale_steps:
        with torch.no_grad():
            metrics["nll_after"] = float(nll_loss(policy, train, probe))
        if val is not None:
            metrics["val_nll"] = evaluate_loss(policy, val, batch_size=EVAL_BATCH, nll=True)
    policy.freeze_to_trainable()
    save_policy(policy, out)
    path = Path(out) / "sft_metrics.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metrics))
    os.replace(tmp, path)
    return policy, metrics
