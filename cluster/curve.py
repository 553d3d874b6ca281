"""The learning curve of a post-training run: real success against episodes and wall time.

``post_train.eval_every`` iterations apart, the driver evaluates the current policy in the real
env on the curve's fixed starts (``actors.starts.CURVE_SEED_OFFSET``, never the final
evaluation's), with the mean action and with sampled actions, and logs ``eval/*`` beside
``rollout/episodes`` and ``timers/wall_s``. This module draws them from ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.fsutil import write_bytes_atomic

CURVE_FILE = "learning_curve.png"


def curve_points(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The records that hold a curve evaluation: episodes, wall seconds, both success rates."""
    return [
        {
            "episodes": r.get("rollout/episodes") or 0.0,
            "wall_s": r.get("timers/wall_s") or 0.0,
            "mean_action": r["eval/success_mean_action"],
            "sampled": r["eval/success_sampled"],
        }
        for r in records
        if r.get("eval/success_mean_action") is not None
    ]


def write_curve_plot(run_dir: str | Path, *, title: str = "") -> Path | None:
    """Draw ``run_dir/learning_curve.png`` from ``run_dir/metrics.jsonl``; None without points."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cluster.metrics import read_metrics

    pts = curve_points(read_metrics(run_dir))
    if not pts:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, x, label in (
        (axes[0], "episodes", "training episodes"),
        (axes[1], "wall_s", "wall time (s)"),
    ):
        xs = [p[x] for p in pts]
        ax.plot(xs, [100 * p["mean_action"] for p in pts], "o-", label="mean action")
        ax.plot(xs, [100 * p["sampled"] for p in pts], "s--", label="sampled")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("real success (%)")
    axes[0].legend()
    fig.suptitle(title or f"learning curve: {Path(run_dir).name}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    out = Path(run_dir) / CURVE_FILE
    write_bytes_atomic(out, buf.getvalue())
    return out
