"""Driver of ``rehearse collect``: real-env episodes, optionally fanned out over Ray workers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from actors.config import CollectConfig
from actors.exploration import (
    ActionSource,
    EpisodeSpec,
    LaplacePerturbed,
    NearMissExpert,
    PolicySampler,
    ScriptedExpert,
    run_episode,
    store_meta,
)
from envs.config import EnvConfig
from trajectories.episode import Episode
from trajectories.store import StoreBuilder


def episode_specs(
    tasks: Sequence[str], episodes_per_task: int, *, seed: int, source: str
) -> list[EpisodeSpec]:
    """Seeds are base seed + 100000 * task index + episode index: stable when tasks are added."""
    return [
        EpisodeSpec(task=t, seed=seed + 100_000 * ti + i, source=source)
        for ti, t in enumerate(tasks)
        for i in range(episodes_per_task)
    ]


def check_sources(env_name: str, source: str, policy_path: str | None) -> None:
    """Refuse what cannot run before any env is built (LIBERO scenes take tens of seconds)."""
    if env_name != "tabletop" and not policy_path:
        raise ValueError(
            f"the {env_name} env has no scripted expert: collect with --source exploration "
            "--policy CKPT (import expert demos with rehearse import-libero)"
        )
    if source in ("expert", "near_miss") and policy_path:
        raise ValueError(
            f"--policy is for --source exploration; {source} episodes come from the scripted expert"
        )


def action_source(source: str, collect_cfg: CollectConfig, policy_path: str | None) -> ActionSource:
    """expert: the scripted expert; near_miss: the expert stopping one step short of success
    (hard negatives for the reflector); exploration: the policy's own Laplace samples when a
    policy is given (World-Env's self-exploration), else Laplace noise around the scripted
    expert."""
    if source == "expert":
        return ScriptedExpert()
    if source == "near_miss":
        return NearMissExpert()
    if policy_path:
        from policy.checkpoint import load_policy

        return PolicySampler(
            load_policy(policy_path).eval(), execute_steps=collect_cfg.policy_execute_steps
        )
    return LaplacePerturbed(
        ScriptedExpert(),
        collect_cfg.exploration_scale,
        gripper_scale=collect_cfg.exploration_gripper_scale,
    )


def collect_chunk(
    env_cfg: EnvConfig,
    collect_cfg: CollectConfig,
    specs: Sequence[EpisodeSpec],
    policy_path: str | None = None,
) -> list[Episode]:
    """Collect the given episodes in one process (one env instance)."""
    import torch

    from envs.factory import make_env

    torch.set_num_threads(1)
    env = make_env(env_cfg)
    sources: dict[str, ActionSource] = {}
    out = []
    try:
        for spec in specs:
            if spec.source not in sources:
                sources[spec.source] = action_source(spec.source, collect_cfg, policy_path)
            out.append(
                run_episode(
                    env,
                    spec,
                    sources[spec.source],
                    steps_after_success=collect_cfg.steps_after_success,
                )
            )
    finally:
        env.close()
    return out


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def collect(
    env_cfg: EnvConfig,
    collect_cfg: CollectConfig,
    specs: Sequence[EpisodeSpec],
    out: str | Path,
    *,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    policy_path: str | None = None,
) -> dict[str, Any]:
    """Collect ``specs`` into a new episode store at ``out``; returns a summary.

    Args:
        workers: 0 runs in this process; N >= 1 runs N Ray tasks at a time (local Ray started
            in-process unless ``RAY_ADDRESS`` names a cluster).
        policy_path: a policy checkpoint whose samples drive ``exploration`` episodes.
    Returns:
        {"episodes", "successes", "success_rate", "steps", "per_task": {task: rate}, "out"}.
    """
    from envs.factory import check_tasks, make_env

    for source in {s.source for s in specs}:
        check_sources(env_cfg.name, source, policy_path)
    env = make_env(env_cfg)
    try:
        meta, names = store_meta(env, env_cfg), env.task_names
    finally:
        env.close()
    if policy_path:
        action_source("exploration", collect_cfg, policy_path)  # fail early on a bad checkpoint
    check_tasks((s.task for s in specs), names)
    stats: dict[str, list[bool]] = {}
    steps = 0
    bar = tqdm(
        total=len(specs),
        desc=f"collect {specs[0].source if specs else ''}",
        unit="ep",
        disable=not progress,
    )
    with StoreBuilder(out, meta, overwrite=overwrite) as builder:
        pending: list[Episode] = []

        def take(episodes: list[Episode]) -> None:
            nonlocal steps
            for ep in episodes:
                stats.setdefault(ep.task_id, []).append(ep.succeeded)
                steps += ep.num_steps
            pending.extend(episodes)
            bar.update(len(episodes))
            wins, runs = sum(map(sum, stats.values())), sum(map(len, stats.values()))
            bar.set_postfix(success=f"{wins / max(1, runs):.2f}")
            while len(pending) >= collect_cfg.episodes_per_part:
                builder.add(pending[: collect_cfg.episodes_per_part])
                del pending[: collect_cfg.episodes_per_part]

        if workers <= 0:
            for chunk in _chunks(specs, 8):
                take(collect_chunk(env_cfg, collect_cfg, chunk, policy_path))
        else:
            import ray

            from cluster.ray_session import init_ray

            init_ray()
            remote = ray.remote(num_cpus=1)(collect_chunk)
            chunk_size = max(1, min(16, len(specs) // (4 * workers) or 1))
            todo = list(_chunks(specs, chunk_size))
            running: list[Any] = []
            while todo or running:
                while todo and len(running) < workers:
                    running.append(remote.remote(env_cfg, collect_cfg, todo.pop(0), policy_path))
                ready, running = ray.wait(running, num_returns=1)
                take(ray.get(ready[0]))
        builder.add(pending)
    bar.close()
    n = sum(len(v) for v in stats.values())
    ok = sum(sum(v) for v in stats.values())
    return {
        "out": str(out),
        "episodes": n,
        "successes": ok,
        "success_rate": ok / max(1, n),
        "steps": steps,
        "per_task": {t: sum(v) / len(v) for t, v in sorted(stats.items())},
    }
