"""Driver of ``rehearse evaluate``: real-env success rates over Ray evaluation workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from actors.eval_worker import EvalWorker
from actors.evaluation import summarize
from actors.starts import EVAL_SEED_OFFSET, EvalJob
from cluster.backends import EnvFactory, PolicyFactory, ReflectorFactory
from cluster.video import save_side_by_side
from core.fsutil import write_text_atomic
from envs.config import EnvConfig


def eval_jobs(
    tasks: list[str], episodes_per_task: int, *, seed: int, offset: int = EVAL_SEED_OFFSET
) -> list[EvalJob]:
    """Episode i of task k uses seed ``offset + seed + 100000 k + i`` (``offset``: the
    evaluation's, or the learning curve's ``CURVE_SEED_OFFSET``): the same starts for every
    policy evaluated with the same seed."""
    base = offset + seed
    return [
        EvalJob(t, base + 100_000 * k + i)
        for k, t in enumerate(tasks)
        for i in range(episodes_per_task)
    ]


def evaluate_policy(
    policy_path: str,
    env_cfg: EnvConfig,
    *,
    tasks: list[str] | None = None,
    episodes_per_task: int = 10,
    seed: int = 0,
    workers: int = 0,
    restarts: int = 3,
    reflector_path: str | None = None,
    modes: tuple[str, ...] = ("ground_truth", "sampled"),
    eta: float | None = None,
    execute_steps: int | None = None,
    max_steps: int | None = None,
    videos: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Success of a policy checkpoint in the real env, per termination mode.

    Args:
        modes: "ground_truth" (the mean action; env success ends an episode), "sampled" (the
            same with actions sampled from the policy's Laplace, what LOOP optimizes) and/or
            "reflector" (the mean action; R > eta ends an episode).
        eta: reflector termination threshold; None takes the one stored in the reflector
            checkpoint (``reflector_service.checkpoint.termination_eta``).
        workers: Ray evaluation workers (0: in this process).
        restarts: times Ray restarts a dead evaluation worker and runs its call again (the
            same jobs and seeds: the same episodes); one that dies more often stops the run.
        videos: GIFs of this many episodes per mode, written under ``out/videos``.
        out: folder for ``report.json`` and videos (None: nothing written).
    Returns:
        {mode: summary} with success rate, 95% interval, per task and how episodes ended.
    """
    from envs.factory import check_tasks, task_names
    from reflector_service.checkpoint import termination_eta

    names = task_names(env_cfg)
    tasks = tasks or names
    check_tasks(tasks, names)
    if "reflector" in modes and not reflector_path:
        raise ValueError("reflector termination needs a reflector checkpoint (--reflector)")
    jobs = eval_jobs(tasks, episodes_per_task, seed=seed)
    pf = PolicyFactory(policy_path)
    rf = ReflectorFactory(reflector_path) if reflector_path else None
    ef = EnvFactory(env_cfg)
    kw = {
        "execute_steps": execute_steps,
        "max_steps": max_steps,
        "eta": termination_eta(eta, reflector_path),
    }
    report: dict[str, Any] = {
        "policy": policy_path,
        "tasks": tasks,
        "episodes_per_task": episodes_per_task,
        "seed": seed,
    }
    unknown = sorted(set(modes) - {"ground_truth", "sampled", "reflector"})
    if unknown:
        raise ValueError(f"unknown evaluation mode(s) {unknown}: ground_truth, sampled, reflector")
    for mode in modes:
        use_refl = mode == "reflector"
        records = _run(
            pf,
            ef,
            rf,
            jobs,
            workers=workers,
            restarts=restarts,
            use_reflector=use_refl,
            videos=videos,
            progress=progress,
            desc=f"evaluate ({mode})",
            deterministic=mode != "sampled",
            seed=seed,
            **kw,
        )
        report[mode] = summarize(records)
        if out is not None and videos:
            _write_videos(records, Path(out) / "videos", prefix=mode)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(out) / "report.json", json.dumps(report, indent=1))
    return report


def _run(
    pf,
    ef,
    rf,
    jobs: list[EvalJob],
    *,
    workers: int,
    restarts: int,
    use_reflector: bool,
    videos: int,
    progress: bool,
    desc: str,
    **kw: Any,
) -> list[dict[str, Any]]:
    chunk = 16
    parts = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    bar = tqdm(total=len(jobs), desc=desc, unit="ep", disable=not progress)
    records: list[dict[str, Any]] = []
    if workers <= 0:
        worker = EvalWorker(pf, ef, rf if use_reflector else None)
        try:
            for pi, part in enumerate(parts):
                records += worker.evaluate(
                    part, use_reflector=use_reflector, keep_frames=videos if pi == 0 else 0, **kw
                )
                bar.update(len(part))
        finally:
            worker.close()
    else:
        import ray

        from cluster.ray_session import init_ray

        init_ray()
        actors = [
            ray.remote(EvalWorker)
            .options(num_cpus=1, max_restarts=restarts, max_task_retries=restarts)
            .remote(pf, ef, rf if use_reflector else None)
            for _ in range(min(workers, len(parts)))
        ]
        pending = {}
        for pi, part in enumerate(parts):
            a = actors[pi % len(actors)]
            pending[
                a.evaluate.remote(
                    part, use_reflector=use_reflector, keep_frames=videos if pi == 0 else 0, **kw
                )
            ] = pi
        results: dict[int, list] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            pi = pending.pop(ready[0])
            results[pi] = ray.get(ready[0])
            bar.update(len(results[pi]))
        for pi in sorted(results):
            records += results[pi]
        ray.get([a.close.remote() for a in actors])
        for a in actors:
            ray.kill(a)
    bar.close()
    return records


def _write_videos(records: list[dict[str, Any]], folder: Path, *, prefix: str) -> None:
    for r in records:
        if "frames" not in r:
            continue
        tag = "success" if r["success"] else "failure"
        task = str(r["task"]).replace("/", "-")  # LIBERO tasks are named "suite/index"
        save_side_by_side(
            [(f"{task}: {tag}", r["frames"])],
            folder / f"{prefix}_{task}_{r['seed']}_{tag}.gif",
            title=f"seed {r['seed']}",
        )
        r.pop("frames")
