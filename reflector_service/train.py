"""BCE training of the reflector on per-frame success labels of episode stores.

Every frame of every episode (expert, exploration, failed) is a training example: the label of
prefix o_1..t is the success label of frame t. Frozen tower features are computed once; each
step runs the frozen LLM on a few context rows per episode and updates the projector, summary
embedding and head (and the optional pixel adapter). Positive frames are re-weighted by
#negatives / #positives (class balancing). Validation on held-out episodes picks the best
checkpoint; the frozen parameters are checked bit-for-bit unchanged at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from core.configlib import to_dict
from core.tracking import Trackers
from reflector_service.checkpoint import load_reflector, read_config, read_state, save_reflector
from reflector_service.config import ReflectorModelConfig, ReflectorTrainConfig
from reflector_service.context import Chain, chains
from reflector_service.episodes import LabeledEpisode, load_labeled_episodes, score_episodes
from reflector_service.metrics import HOLD_GRID, calibrate_termination, reflector_metrics
from reflector_service.mismatch import MismatchSampler, mismatch_false_success
from reflector_service.model import Reflector, hold_min


def split_episodes(
    episodes: list[LabeledEpisode], val_fraction: float, seed: int
) -> tuple[list[LabeledEpisode], list[LabeledEpisode]]:
    """Hold out ``val_fraction`` of the successful and of the failed episodes of every store
    (by episode), so each kind of failure is in the validation split in its share."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    groups: dict[tuple[str, bool], list[LabeledEpisode]] = {}
    for e in episodes:
        groups.setdefault((e.store, e.succeeded), []).append(e)
    for key in sorted(groups):
        group = groups[key]
        order = rng.permutation(len(group))
        n_val = int(round(val_fraction * len(group)))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def frozen_fingerprint(model: Reflector) -> dict[str, str]:
    """sha1 of every frozen parameter's bytes (to prove training left them unchanged)."""
    return {
        n: hashlib.sha1(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for n, p in model.frozen_named_parameters()
    }


def _precompute(
    model: Reflector, episodes: Sequence[LabeledEpisode], progress: bool
) -> list[torch.Tensor]:
    feats = []
    for e in tqdm(episodes, desc="frozen vision features", disable=not progress):
        feats.append(
            torch.cat(
                [model.frozen_features(e.images[i : i + 256]) for i in range(0, len(e.images), 256)]
            )
        )
    return feats


def sample_rows(
    rows: list[Chain],
    num_frames: int,
    k: int,
    rng: np.random.Generator,
    *,
    focus: Sequence[int] = (),
) -> tuple[list[Chain], torch.Tensor]:
    """Pick ``k`` context rows of an episode for one step, with importance weights per prefix.

    The last row (it holds the final frames) and the rows that read a prefix ending at a
    ``focus`` frame (0-based; training puts the frames around the first success there, where
    the labels switch) are always taken, with weight 1; up to k - #those more are drawn
    uniformly without replacement from the rest and weighted by (#rest) / (#drawn), so the
    weighted loss is an unbiased estimate of the full-episode loss.

    Returns:
        the rows in order, and (T,) weights (0 for prefixes not in the rows).
    """
    w = torch.zeros(num_frames)
    if k == 0 or len(rows) <= k:
        picked = [(j, 1.0) for j in range(len(rows))]
    else:
        want = {n + 1 for n in focus}
        fixed = [j for j, c in enumerate(rows) if want & set(c.outputs.values())]
        fixed = sorted(set(fixed[: k - 1]) | {len(rows) - 1})
        rest = [j for j in range(len(rows)) if j not in fixed]
        n_draw = k - len(fixed)
        picked = [(j, 1.0) for j in fixed]
        if n_draw > 0 and rest:
            scale = len(rest) / n_draw
            picked += [(rest[j], scale) for j in rng.choice(len(rest), n_draw, replace=False)]
        picked.sort()
    for j, weight in picked:
        for n in rows[j].outputs.values():
            w[n - 1] = weight
    return [rows[j] for j, _ in picked], w


class FrameProbe(torch.nn.Module):
    """Training-only auxiliary classifier: the success label of a single frame from its k
    projected tokens and the instruction's mean embedding. Its loss gives the pixel adapter and
    projector a dense per-frame signal (every frame a step touches, not only the prefixes read
    out); it is not part of the reflector and is not saved."""

    def __init__(self, k: int, width: int, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.LayerNorm((k + 1) * width),
            torch.nn.Linear((k + 1) * width, hidden),
            torch.nn.GELU(),
            torch.nn.Linear(hidden, 1),
        )

    @staticmethod
    def inputs(tokens: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """(F, k, D) frame tokens and (D,) instruction vector -> (F, (k + 1) * D)."""
        return torch.cat([tokens.flatten(1), instruction.expand(len(tokens), -1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # (F,) logits


class BatchSampler:
    """Episode indices per step: ``round(success_fraction * batch)`` from the successful episodes
    and the rest from the failed ones, each group cycled through in shuffled epochs; with
    ``success_fraction`` 0 (or only one group present) all episodes are cycled together."""

    def __init__(
        self,
        episodes: Sequence[LabeledEpisode],
        batch: int,
        success_fraction: float,
        rng: np.random.Generator,
    ):
        succ = [i for i, e in enumerate(episodes) if e.succeeded]
        fail = [i for i, e in enumerate(episodes) if not e.succeeded]
        n_succ = int(round(success_fraction * batch))
        if success_fraction == 0 or not succ or not fail:
            self.groups = [(list(range(len(episodes))), batch)]
        else:
            n_succ = min(max(n_succ, 1), batch - 1)
            self.groups = [(succ, n_succ), (fail, batch - n_succ)]
        self.queues: list[list[int]] = [[] for _ in self.groups]
        self.rng = rng

    def __call__(self) -> list[int]:
        out = []
        for (members, n), queue in zip(self.groups, self.queues, strict=True):
            while len(queue) < n:
                queue += [members[j] for j in self.rng.permutation(len(members))]
            out += queue[:n]
            del queue[:n]
        return out


def train_reflector(
    model_cfg: ReflectorModelConfig,
    train_cfg: ReflectorTrainConfig,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    calibration_data: Sequence[str | Path] = (),
    loggers: Sequence[str] = (),
    config: dict[str, Any] | None = None,
) -> dict:
    """Train a reflector and write checkpoints ``out/best`` and ``out/last`` plus
    ``out/summary.json``.

    Args:
        model_cfg: the model (frozen towers, projector, head).
        train_cfg: optimizer, budget, validation.
        data: episode store folders (expert, exploration, ... together).
        out: output folder.
        calibration_data: episode stores used only to choose the termination rule (with the
            validation split), never trained on: more failed episodes make the early-termination
            limit mean something (the validation split holds a few of each store).
        progress: show tqdm bars.
        log: where one-line progress messages go.
        loggers: trackers (``core.tracking``) of ``reflector/loss`` per step and the
            validation metrics (``reflector/val_*``), in ``out``.
        config: the experiment config as a plain dict (stored with the W&B run).
    Returns:
        The summary: steps, seconds, pos_weight, best validation metrics, paths.
    """
    out = Path(out)
    t_start = time.monotonic()
    torch.manual_seed(train_cfg.seed)
    episodes = load_labeled_episodes(data, progress=progress)
    calib_eps = (
        load_labeled_episodes(calibration_data, progress=progress) if calibration_data else []
    )
    train_eps, val_eps = split_episodes(episodes, train_cfg.val_fraction, train_cfg.seed)
    n_pos = int(sum(e.labels.sum() for e in train_eps))
    n_all = int(sum(len(e.labels) for e in train_eps))
    if n_pos == 0 or n_pos == n_all:
        raise ValueError(
            f"the training episodes hold {n_pos} success frames out of {n_all}; "
            "BCE training needs both successful and unsuccessful frames"
        )
    pos_weight = train_cfg.pos_weight or (n_all - n_pos) / n_pos
    log(
        f"reflector: {len(train_eps)} train / {len(val_eps)} val episodes, {n_all} train frames "
        f"({n_pos} success), pos_weight {pos_weight:.2f}"
    )

    model = Reflector(model_cfg)
    model.fit_instructions([e.instruction for e in train_eps])
    before = frozen_fingerprint(model)
    feats = _precompute(model, train_eps, progress)
    params = [p for _, p in model.trainable_named_parameters()]
    probe = None
    if train_cfg.frame_probe_weight > 0:
        probe = FrameProbe(model_cfg.frame_grid**2, model.width)
        params += list(probe.parameters())
        instr_vec = {s: model.instruction_vector(s) for s in {e.instruction for e in train_eps}}
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    pw = torch.tensor(pos_weight)
    rng = np.random.default_rng(train_cfg.seed)
    all_rows = [chains(len(e.labels), model_cfg.window) for e in train_eps]
    focus = [_switch_frames(e.labels, train_cfg.focus_margin) for e in train_eps]
    mismatch = MismatchSampler(train_eps, train_cfg.mismatched_episodes, rng)
    if train_cfg.mismatched_episodes and not mismatch.pool:
        log(
            "reflector: no successful expert episodes of two or more tasks; training without "
            "mismatched instructions"
        )

    def validate(step: int) -> dict:
        probe = val_eps or train_eps[: max(1, len(train_eps) // 5)]
        frame = score_episodes(model, probe, hold=1)
        rewards = [hold_min(torch.from_numpy(r), model_cfg.hold).numpy() for r in frame]
        labels = [e.labels for e in probe]
        r = torch.from_numpy(np.concatenate(rewards)).clamp(1e-6, 1 - 1e-6)
        y = torch.from_numpy(np.concatenate(labels)).float()
        m = reflector_metrics(rewards, labels, eta=model_cfg.eta, frame_rewards=frame)
        m["loss"] = float(F.binary_cross_entropy(r.double(), y.double()))
        m["step"] = step
        m["on"] = "val" if val_eps else "train subset (val_fraction is 0)"
        mm = mismatch_false_success(model, probe, rewards, eta=model_cfg.eta, per_episode=1)
        m["mismatch_false_success"] = None if mm is None else mm["rate"]
        m["instruction_auc"] = None if mm is None else mm["instruction_auc"]
        return m

    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best: dict | None = None
    t0 = time.monotonic()
    draw = BatchSampler(train_eps, train_cfg.batch_episodes, train_cfg.success_fraction, rng)
    step = 0
    bar = tqdm(total=train_cfg.max_steps, desc="train reflector", disable=not progress)
    trackers = Trackers(out, loggers, job="train_reflector", config=config)

    def evaluate_and_save(best: dict | None) -> dict | None:
        m = validate(step)
        trackers.log(step, {f"reflector/val_{k}": v for k, v in m.items() if k != "step"})
        return _evaluate_and_save(model, m, history, best, out, t0, log)

    while step < train_cfg.max_steps:
        if train_cfg.time_budget_s and time.monotonic() - t0 > train_cfg.time_budget_s:
            log(f"reflector: time budget {train_cfg.time_budget_s:.0f} s reached at step {step}")
            break
        batch = draw()
        items = [(i, train_eps[i].instruction, None) for i in batch] + mismatch(batch)
        model.train()
        toks, rows, instr, ys, ws = [], [], [], [], []
        aux_in, aux_y = [], []
        for i, instruction, only in items:
            e = train_eps[i]
            ch, w = sample_rows(
                all_rows[i], len(e.labels), train_cfg.rows_per_episode, rng, focus=focus[i]
            )
            need = sorted({f for c in ch for f in c.frames})
            idx = torch.tensor(need)
            tok = model.frame_tokens(
                e.images[idx], feats[i][idx], prev=e.images[(idx - 1).clamp(min=0)]
            )  # (F, k, D)
            toks.append(torch.zeros(len(e.labels), *tok.shape[1:]).index_put((idx,), tok))
            if probe is not None and only is None:
                aux_in.append(probe.inputs(tok, instr_vec[e.instruction]))
                aux_y.append(torch.from_numpy(e.labels[need]).float())
            rows.append(ch)
            instr.append(instruction)
            if only is None:
                ys.append(torch.from_numpy(e.labels).float())
                ws.append(w)
            else:  # another task's instruction: its success frames are failures, the rest unknown
                ys.append(torch.zeros(len(e.labels)))
                ws.append(w * torch.from_numpy(only).float())
        logits = model.prefix_logits(toks, instr, rows=rows)
        lg, y, w = torch.cat(logits), torch.cat(ys), torch.cat(ws)
        keep = w > 0
        loss = F.binary_cross_entropy_with_logits(
            lg[keep], y[keep], weight=w[keep], pos_weight=pw, reduction="sum"
        ) / len(w)
        if probe is not None:
            loss = loss + train_cfg.frame_probe_weight * F.binary_cross_entropy_with_logits(
                probe(torch.cat(aux_in)), torch.cat(aux_y), pos_weight=pw
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip))
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", gn=f"{grad_norm:.2f}")
        trackers.log(step, {"reflector/loss": loss.item(), "reflector/grad_norm": grad_norm})
        if step % train_cfg.eval_every == 0 or step == train_cfg.max_steps:
            best = evaluate_and_save(best)
    bar.close()
    if not history or history[-1]["step"] != step:
        best = evaluate_and_save(best)
    trackers.close()
    changed = [n for n, h in frozen_fingerprint(model).items() if before[n] != h]
    if changed:
        raise RuntimeError(f"reflector training changed frozen parameters: {changed[:5]}")
    calibration = None
    if train_cfg.calibrate_eta:
        calibration = _calibrate_best(out / "best", val_eps + calib_eps, train_cfg, log)
    summary = {
        "steps": step,
        "seconds": time.monotonic() - t0,
        "total_seconds": time.monotonic() - t_start,
        "pos_weight": pos_weight,
        "train_episodes": len(train_eps),
        "val_episodes": len(val_eps),
        "val_episode_ids": [e.episode_id for e in val_eps],
        "frozen_unchanged": True,
        "best": best,
        "history": history,
        "eta_calibration": calibration,
        "data": [str(p) for p in data],
        "calibration_data": [str(p) for p in calibration_data],
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "checkpoints": {"best": str(out / "best"), "last": str(out / "last")},
    }
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "summary.json")
    return summary


def _calibrate_best(
    ckpt: Path,
    episodes: Sequence[LabeledEpisode],
    train_cfg: ReflectorTrainConfig,
    log: Callable[[str], None],
) -> dict | None:
    """Choose the termination rule on held-out episodes (``metrics.calibrate_termination``) and
    store it in the checkpoint's config, so rollouts and evaluations that take the checkpoint's
    eta and hold use it."""
    failed = sum(not e.succeeded for e in episodes)
    if not failed:
        log(
            "reflector: no failed episode in the validation split; eta stays "
            f"{read_config(ckpt).eta} (add exploration episodes to calibrate it)"
        )
        return None
    model = load_reflector(ckpt)
    holds = HOLD_GRID if train_cfg.calibrate_hold else (model.cfg.hold,)
    max_early = train_cfg.max_early_termination
    hold, eta, sweep = calibrate_termination(
        score_episodes(model, episodes, hold=1),
        [e.labels for e in episodes],
        max_early_termination=max_early,
        groups=[e.store for e in episodes],
        holds=holds,
    )
    chosen = next(s for s in sweep if s["eta"] == eta and s["hold"] == hold)
    calibration = {
        "eta": eta,
        "hold": hold,
        "max_early_termination": max_early,
        "failed_episodes": failed,
        "successful_episodes": len(episodes) - failed,
        "stores": sorted({e.store for e in episodes}),
        "sweep": sweep,
    }
    model.cfg = dataclasses.replace(model.cfg, eta=eta, hold=hold)
    save_reflector(model, ckpt, state={**read_state(ckpt), "eta_calibration": calibration})
    log(
        f"reflector: hold {hold}, eta {eta} chosen on {len(episodes)} held-out episodes ({failed} "
        f"failed): early termination {chosen['early_termination_rate']:.3f}, worst store "
        f"{chosen['worst_group_early_termination']:.3f} (limit {max_early}), "
        f"premature {chosen['premature_rate']}, missed {chosen['missed_rate']}"
    )
    return calibration


def _switch_frames(labels: np.ndarray, margin: int) -> list[int]:
    """Frames within ``margin`` steps of a label switch (0 -> 1 or 1 -> 0)."""
    switches = np.flatnonzero(np.diff(labels.astype(np.int8))) + 1
    near = {int(f) for s in switches for f in range(s - margin, s + margin)}
    return sorted(f for f in near if 0 <= f < len(labels))


def _selection_score(m: dict) -> float:
    """The best checkpoint has the highest lower of the two AUCs: success vs not (roc_auc) and
    this task vs another task's instruction on the same success frames (instruction_auc)."""
    aucs = [m[k] for k in ("roc_auc", "instruction_auc") if m.get(k) is not None]
    return min(aucs) if aucs else -1.0


def _evaluate_and_save(
    model: Reflector,
    m: dict,
    history: list[dict],
    best: dict | None,
    out: Path,
    t0: float,
    log: Callable[[str], None],
) -> dict | None:
    m["seconds"] = time.monotonic() - t0
    history.append(m)
    auc = m["roc_auc"] if m["roc_auc"] is not None else -1.0
    log(
        f"reflector step {m['step']}: {m['on']} loss {m['loss']:.4f} auc {auc:.4f} "
        f"(per frame {m.get('frame_roc_auc')}) "
        f"acc {m['frame_accuracy']:.4f} early_term {m['early_termination_rate']} "
        f"timing {m['timing_error_mean_abs']} instruction auc {m.get('instruction_auc')} "
        f"wrong-instruction success {m.get('mismatch_false_success')}"
    )
    meta = {"step": m["step"], "metrics": m}
    save_reflector(model, out / "last", state=meta)
    if best is None or (_selection_score(m), -m["loss"]) > (_selection_score(best), -best["loss"]):
        save_reflector(model, out / "best", state=meta)
        return m
    return best
