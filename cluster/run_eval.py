"""Measurements taken during a post-training run, over its Ray actors.

The learning curve (real success of the current policy, mean action and sampled, on fixed
starts of its own: ``actors.starts.CURVE_SEED_OFFSET``, never the final evaluation's), the
imagined evaluation (imagined success on fixed starts, mean actions) and imagined-vs-real
agreement (the two on the same real starts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from actors.starts import CURVE_SEED_OFFSET
from cluster.config import ExperimentConfig
from cluster.evaluate import eval_jobs


class Evaluator:
    """The driver's handle on its curve ``EvalWorker`` actor (started with ``max_restarts``):
    a call whose actor died waits for Ray's restart, gives the new process the weights the
    old one had, and runs again (the same jobs and seeds give the same episodes). An actor that
    died more than ``limit`` times stops the run in one line.

    Args:
        actor: the EvalWorker actor handle.
        limit: how many deaths are revived (``cluster.worker_restarts``).
        log: one line per revival.
    """

    def __init__(self, actor: Any, *, limit: int, log: Callable[[str], None]):
        self.actor, self.limit, self.log = actor, limit, log
        self.published: Any = None  # the weights it holds (None: the SFT weights it starts with)
        self.version: int | None = None
        self.deaths = 0

    def load_weights(self, published: Any) -> int:
        self.published = published
        self.version = self._call("load_weights", published)
        return self.version

    def evaluate(self, jobs: list[Any], **kwargs: Any) -> list[dict[str, Any]]:
        """Records of ``jobs`` by the policy of the weights loaded last (a worker restarted
        between calls holds other weights: it refuses, and is revived like a dead one)."""
        return self._call("evaluate", jobs, version=self.version, **kwargs)

    def first_observations(self, jobs: list[Any]) -> list[Any]:
        return self._call("first_observations", jobs)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray
        from ray.exceptions import RayActorError

        from actors.eval_worker import StaleWeights

        while True:
            try:
                return ray.get(getattr(self.actor, method).remote(*args, **kwargs))
            except (RayActorError, StaleWeights) as e:
                self._revive(e)

    def _revive(self, error: Exception) -> None:
        import ray

        from cluster.placement import revive_actor

        self.deaths += 1
        revive_actor(
            self.actor,
            name="the evaluation worker",
            deaths=self.deaths,
            limit=self.limit,
            error=error,
            log=self.log,
        )
        if self.published is not None:
            ray.get(self.actor.load_weights.remote(self.published))


def curve_jobs(cfg: ExperimentConfig) -> list[Any]:
    """The fixed real starts of the learning curve and the agreement."""
    from envs.factory import task_names

    return eval_jobs(
        task_names(cfg.env),
        cfg.post_train.eval_episodes_per_task,
        seed=cfg.seed,
        offset=CURVE_SEED_OFFSET,
    )


def _real(
    evaluator: Evaluator,
    cfg: ExperimentConfig,
    jobs: list[Any],
    *,
    deterministic: bool,
    keep_frames: int = 0,
) -> list[dict[str, Any]]:
    """The evaluator's records of ``jobs`` (the first ``keep_frames`` with their frames)."""
    return evaluator.evaluate(
        jobs,
        deterministic=deterministic,
        seed=cfg.seed,
        execute_steps=cfg.rollout.execute_steps,
        max_steps=cfg.rollout.eval_max_steps,
        keep_frames=keep_frames,
    )


def learning_curve_point(
    evaluator: Evaluator, cfg: ExperimentConfig, log: Callable[[str], None]
) -> dict[str, float]:
    """``eval/*`` metrics: real success of the evaluator's current weights, both ways."""
    jobs = curve_jobs(cfg)
    mean = _real(evaluator, cfg, jobs, deterministic=True)
    sampled = _real(evaluator, cfg, jobs, deterministic=False)
    out = {
        "eval/success_mean_action": float(np.mean([x["success"] for x in mean])),
        "eval/success_sampled": float(np.mean([x["success"] for x in sampled])),
        "eval/episodes": float(len(jobs)),
    }
    log(
        f"learning curve: real success {100 * out['eval/success_mean_action']:.1f}% (mean "
        f"action), {100 * out['eval/success_sampled']:.1f}% (sampled) on {len(jobs)} starts"
    )
    return out


def imagine(
    workers: list[Any], starts: list[Any], log: Callable[[str], None], *, keep_frames: bool = False
) -> dict[str, Any]:
    """Imagined success of the workers' current policy on fixed starts (mean actions).

    Returns:
        success_rate and reward_mean over all rollouts, and per start (in order) its task and
        the fraction of its group that the reflector ended as a success; with ``keep_frames``
        also "frames" (S, H, W, 3), the first start's first rollout from its start frame on.
    """
    import ray

    t0 = time.perf_counter()
    k = len(workers)
    ids = list(range(len(starts)))
    parts = [(w, starts[i::k], ids[i::k]) for i, w in enumerate(workers) if starts[i::k]]
    summaries = ray.get(
        [
            w.imagine.remote(s, g, keep_frames=keep_frames and not i)
            for i, (w, s, g) in enumerate(parts)
        ]
    )
    per_start: list[Any] = [None] * len(starts)
    rewards, success = [], []
    for (_, _, gids), s in zip(parts, summaries, strict=True):
        term = s["terminated"].reshape(len(gids), -1)  # (groups, N)
        for gid, task, row in zip(gids, s["tasks"], term, strict=True):
            per_start[gid] = [task, float(row.mean())]
        rewards.append(s["rewards"])
        success.append(s["terminated"])
    out = {
        "starts": len(starts),
        "rollouts": int(sum(len(x) for x in success)),
        "success_rate": float(np.concatenate(success).mean()),
        "reward_mean": float(np.concatenate(rewards).mean()),
        "per_start": per_start,
        "seconds": time.perf_counter() - t0,
    }
    if keep_frames:
        first = summaries[0]
        out["frames"] = first["frames"][0, first["caption"]["first_step"] - 1 :]
    log(
        f"imagined evaluation: success {100 * out['success_rate']:.1f}% over "
        f"{out['rollouts']} rollouts from {len(starts)} starts ({out['seconds']:.0f} s)"
    )
    return out


def agreement(imagined: list[float], real: list[bool]) -> dict[str, Any]:
    """Imagined vs real success on the same starts.

    Args:
        imagined: per start, the share of its imagined rollouts ended as a success.
        real: per start, the real outcome of the same policy (mean action).
    Returns:
        imagined_success, real_success, correlation (Pearson over starts; None when either
        side is constant), agree (share of starts where imagined > 0.5 matches real).
    """
    a, b = np.asarray(imagined, dtype=float), np.asarray(real, dtype=float)
    corr = None
    if len(a) > 1 and a.std() > 0 and b.std() > 0:
        r = float(np.corrcoef(a, b)[0, 1])
        corr = r if math.isfinite(r) else None
    return {
        "starts": len(a),
        "imagined_success": float(a.mean()) if len(a) else float("nan"),
        "real_success": float(b.mean()) if len(b) else float("nan"),
        "correlation": corr,
        "agree": float(((a > 0.5) == (b > 0.5)).mean()) if len(a) else float("nan"),
    }


def imagined_vs_real(
    workers: list[Any],
    evaluator: Evaluator,
    cfg: ExperimentConfig,
    log: Callable[[str], None],
    *,
    keep_frames: bool = False,
) -> dict[str, Any]:
    """Imagined vs real success of the current policy (mean actions) on the curve's real
    starts: imagination starts from each start's first real frame
    (``cluster.coevolution.agreement``). With ``keep_frames``, "frames" holds the first start's
    episode both ways: {"imagined": (S, H, W, 3), "real": (S', H, W, 3)}."""
    jobs = curve_jobs(cfg)
    starts = evaluator.first_observations(jobs)
    real = _real(evaluator, cfg, jobs, deterministic=True, keep_frames=int(keep_frames))
    imagined = imagine(workers, starts, log, keep_frames=keep_frames)
    out = agreement([x[1] for x in imagined["per_start"]], [r["success"] for r in real])
    out["per_start"] = [
        [j.task, j.seed, x[1], bool(r["success"])]
        for j, x, r in zip(jobs, imagined["per_start"], real, strict=True)
    ]
    log(
        f"imagined vs real on {out['starts']} real starts: {100 * out['imagined_success']:.1f}% "
        f"vs {100 * out['real_success']:.1f}%, correlation {out['correlation']}"
    )
    if keep_frames:
        out["frames"] = {"imagined": imagined["frames"], "real": real[0]["frames"]}
    return out
