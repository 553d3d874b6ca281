"""Reflector metrics on scored episodes: frame accuracy, ROC AUC, termination timing, and a plot.

Termination follows the RL rollouts: an episode stops at the first frame with R > eta.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (ties counted half); None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def first_above(r: np.ndarray, eta: float) -> int | None:
    """Index of the first R > eta, or None."""
    hit = np.flatnonzero(np.asarray(r) > eta)
    return int(hit[0]) if len(hit) else None


def reflector_metrics(
    rewards: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    eta: float,
    frame_rewards: Sequence[np.ndarray] | None = None,
) -> dict[str, float | int | None]:
    """Metrics of per-frame rewards against per-frame success labels.

    Args:
        rewards: per episode, (T,) R for every prefix, as rollouts see it (after the hold rule).
        labels: per episode, (T,) bool success labels.
        eta: termination threshold.
        frame_rewards: per episode, (T,) the per-frame reward before the hold rule (hold 1);
            adds ``frame_roc_auc``. The hold rule takes the minimum of the last ``hold`` frames,
            so the first success frame of every episode scores like the failure frame before it:
            roc_auc (of R after the rule) ranks the reward rollouts receive, frame_roc_auc the
            reward model's own per-frame judgement.
    Returns:
        frame_accuracy, roc_auc, frame_roc_auc (None without frame_rewards), counts; on
        successful episodes (any success label) the
        termination timing error (first R > eta minus first success frame, in steps: mean
        absolute, median absolute, mean signed), premature_rate (stops before success) and
        missed_rate (never stops); on failed episodes early_termination_rate (stops at all);
        on all episodes false_stop_rate (stops before any real success: a failure stopped or a
        success stopped before its first success frame).
    """
    if len(rewards) != len(labels) or not rewards:
        raise ValueError(
            f"need matching non-empty rewards and labels, got {len(rewards)} and {len(labels)}"
        )
    r_all = np.concatenate([np.asarray(r, dtype=np.float64) for r in rewards])
    y_all = np.concatenate([np.asarray(y, dtype=bool) for y in labels])
    if r_all.shape != y_all.shape:
        raise ValueError("rewards and labels differ in length")
    errors, premature, missed, early = [], 0, 0, 0
    n_succ = n_fail = 0
    for r, y in zip(rewards, labels, strict=True):
        y = np.asarray(y, dtype=bool)
        stop = first_above(r, eta)
        if y.any():
            n_succ += 1
            true_first = int(np.argmax(y))
            if stop is None:
                missed += 1
            else:
                errors.append(stop - true_first)
                premature += int(stop < true_first)
        else:
            n_fail += 1
            early += int(stop is not None)
    err = np.asarray(errors, dtype=np.float64)
    return {
        "episodes": len(rewards),
        "frames": int(len(y_all)),
        "positive_frames": int(y_all.sum()),
        "frame_accuracy": float(np.mean((r_all > eta) == y_all)),
        "roc_auc": roc_auc(r_all, y_all),
        "frame_roc_auc": None
        if frame_rewards is None
        else roc_auc(
            np.concatenate([np.asarray(r, dtype=np.float64) for r in frame_rewards]), y_all
        ),
        "successful_episodes": n_succ,
        "failed_episodes": n_fail,
        "timing_error_mean_abs": float(np.abs(err).mean()) if len(err) else None,
        "timing_error_median_abs": float(np.median(np.abs(err))) if len(err) else None,
        "timing_error_mean_signed": float(err.mean()) if len(err) else None,
        "premature_rate": premature / n_succ if n_succ else None,
        "missed_rate": missed / n_succ if n_succ else None,
        "false_stop_rate": (premature + early) / len(rewards),
        "early_termination_rate": early / n_fail if n_fail else None,
    }


ETA_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5 ... 0.95
HOLD_GRID = (1, 2, 3, 4)


BOUNDS = ("early_termination", "false_stop")


def calibrate_termination(
    frame_rewards: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    max_early_termination: float,
    groups: Sequence[str] | None = None,
    holds: Sequence[int] = (1,),
    etas: Sequence[float] = ETA_GRID,
    bound: str = "early_termination",
) -> tuple[int, float, list[dict]]:
    """The termination rule (hold, eta): among the rules of ``holds`` x ``etas`` whose
    early-termination rate on the failed episodes of every group (or the rate ``bound`` names)
    is at most ``max_early_termination``, the one that misses the fewest successful episodes
    (never stops them), the smaller hold and then the smaller eta among equals; where none is
    within the limit, the rule with the lowest worst-group rate (then the same order).

    For one hold this is the smallest eta within the limit (a larger eta only misses more).
    Groups are kinds of episodes (the store each came from): a weak policy's easy failures can
    outnumber a noisy expert's near misses, and a pooled rate would then hide that the
    reflector stops the near misses. One group (``groups`` None) is the pooled rule.
    Meant for a validation or calibration split, never the episodes a report is computed on.

    Args:
        frame_rewards: per episode, (T,) per-frame reward for every prefix (before any hold rule;
            with ``holds`` (1,) any rewards, used as they are).
        labels: per episode, (T,) bool success labels; at least one episode must have none.
        max_early_termination: the largest acceptable rate ``bound`` names, in every group.
        groups: per episode, its group's name.
        holds: hold values to try (R_t = min of the last ``hold`` per-frame rewards).
        etas: thresholds to try (imagined frames, which score lower, use a grid reaching lower).
        bound: the rate the limit bounds. "early_termination": failed episodes stopped.
            "false_stop": episodes stopped before any real success, over all of a group's
            episodes (failures stopped and successes stopped before their success frame: on a
            world model's frames a success can look done before it is).
    Returns:
        hold, eta and the sweep (per rule: hold, eta, early_termination_rate, false_stop_rate,
        premature_rate and missed_rate pooled, and the bounded rate per group and its worst:
        ``<bound>_by_group``, ``worst_group_<bound>``).
    Raises:
        ValueError: no failed episode to calibrate on, ``groups`` of another length, a hold
            < 1, an eta outside (0, 1) or an unknown ``bound``.
    """
    import torch

    from reflector_service.model import hold_min

    if bound not in BOUNDS:
        raise ValueError(f"calibration bound must be one of {list(BOUNDS)}, got {bound!r}")
    failed = [not np.asarray(y, dtype=bool).any() for y in labels]
    if not any(failed):
        raise ValueError(
            "termination calibration needs failed episodes (no success label) in "
            "the validation split"
        )
    groups = list(groups) if groups is not None else [""] * len(labels)
    if len(groups) != len(labels):
        raise ValueError(f"groups has {len(groups)} entries for {len(labels)} episodes")
    if not holds or min(holds) < 1:
        raise ValueError(f"calibration holds must be >= 1, got {list(holds)}")
    if not etas or not all(0.0 < e < 1.0 for e in etas):
        raise ValueError(f"calibration etas must be in (0, 1), got {list(etas)}")
    # the groups the limit holds: with a failed episode (early termination), or all
    members: dict[str, list[int]] = {}
    for g in sorted({g for g, f in zip(groups, failed, strict=True) if f or bound != BOUNDS[0]}):
        members[g] = [i for i, gi in enumerate(groups) if gi == g]
    rate = f"{bound}_rate"
    sweep: list[dict[str, Any]] = []
    for hold in sorted(set(holds)):
        rewards = [
            hold_min(torch.from_numpy(np.asarray(r, dtype=np.float64)), hold).numpy()
            for r in frame_rewards
        ]
        for eta in etas:
            m = reflector_metrics(rewards, labels, eta=eta)
            per_group = {
                g: reflector_metrics([rewards[i] for i in idx], [labels[i] for i in idx], eta=eta)[
                    rate
                ]
                for g, idx in members.items()
            }
            keys = ("early_termination_rate", "false_stop_rate", "premature_rate", "missed_rate")
            sweep.append(
                {
                    "hold": hold,
                    "eta": eta,
                    **{k: m[k] for k in keys},
                    f"worst_group_{bound}": max(per_group.values()),
                    f"{bound}_by_group": per_group,
                }
            )

    def order(s: dict) -> tuple:
        return (s["missed_rate"] or 0.0, s["hold"], s["eta"])

    worst = f"worst_group_{bound}"
    ok = [s for s in sweep if s[worst] <= max_early_termination]
    pick = min(ok, key=order) if ok else min(sweep, key=lambda s: (s[worst], *order(s)))
    return int(pick["hold"]), float(pick["eta"]), sweep


def plot_rewards(
    path: str | Path, curves: Sequence[tuple[str, np.ndarray, np.ndarray]], *, eta: float
) -> Path:
    """PNG of R over time for a few episodes, success frames shaded, eta dashed.

    Args:
        path: output .png (written atomically).
        curves: (title, rewards (T,), labels (T,)) per episode.
        eta: termination threshold.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no episodes to plot")
    cols = min(4, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, (title, r, y) in zip(axes.flat, curves, strict=False):
        t = np.arange(len(r))
        ax.fill_between(
            t,
            0,
            1,
            where=np.asarray(y, dtype=bool),
            color="tab:green",
            alpha=0.2,
            step="mid",
            label="success label",
        )
        ax.plot(t, r, color="tab:blue", lw=1.5, label="R")
        ax.axhline(eta, color="tab:red", ls="--", lw=1, label="eta")
        stop = first_above(r, eta)
        if stop is not None:
            ax.axvline(stop, color="tab:red", lw=0.8, alpha=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
