"""The driver behind ``rehearse post-train``: places every role and runs LOOP iterations.

One iteration: sample initial states (real frames, keyframes) -> every rollout worker runs its
RLOO groups through the simulator and reflector replicas -> the learner joins the batches (by
reference, never through the driver) and runs LOOP -> the new trainable weights are published
with a version and every worker copies them in before its next rollouts.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from actors.eval_worker import EVAL_SEED_OFFSET
from actors.real_rollout import RealStartSampler
from actors.rollout_worker import RealRolloutWorker, RolloutWorker
from cluster.backends import EnvFactory, PolicyFactory, ReflectorFactory, SimulatorFactory
from cluster.checkpoints import latest_checkpoint, load_run_checkpoint, save_run_checkpoint
from cluster.config import ExperimentConfig, dump_config
from cluster.learner_group import LearnerGroup
from cluster.metrics import MetricsLogger
from cluster.placement import check_resources, start_actor, start_replicas
from cluster.ray_session import init_ray
from core.configlib import ConfigError
from core.fsutil import staged_folder, write_text_atomic
from reflector_service.checkpoint import termination_eta
from reflector_service.service import ReflectorService
from simulator_service.service import SimulatorService
from trajectories.initial_states import InitialStateSampler
from trajectories.store import EpisodeStore


def run_dir_of(cfg: ExperimentConfig) -> Path:
    return Path(cfg.post_train.run_dir.format(name=cfg.name))


def _controller_limits(meta: dict[str, Any]) -> Any:
    from envs.kinematics import ControllerLimits

    if "controller_limits" not in meta:
        return None
    return ControllerLimits.from_dict(meta["controller_limits"])


def _service_delta(before: list[dict], after: list[dict]) -> dict[str, float]:
    """Mean batch size and compute time of the model calls made between two snapshots."""
    batches = sum(a["batches"] - b["batches"] for a, b in zip(after, before, strict=True))
    items = sum(a["items"] - b["items"] for a, b in zip(after, before, strict=True))
    compute = sum(
        a["mean_compute_ms"] * a["batches"] - b["mean_compute_ms"] * b["batches"]
        for a, b in zip(after, before, strict=True)
    )
    return {
        "mean_batch_size": items / max(1, batches),
        "calls": float(batches),
        "mean_call_ms": compute / max(1, batches),
        "queue_depth": float(sum(a["queue_depth"] for a in after)),
    }


def _save_video(frames: np.ndarray, path: Path) -> None:
    """frames: (N, S, H, W, 3) uint8 -> a GIF with the N rollouts side by side."""
    import imageio.v2 as imageio

    n, s, h, w, _ = frames.shape
    strip = frames.transpose(1, 2, 0, 3, 4).reshape(s, h, n * w, 3)
    scale = max(1, 128 // h)
    strip = strip.repeat(scale, axis=1).repeat(scale, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(strip), duration=0.15, loop=0)


def post_train(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Run LOOP post-training on a Ray cluster as the config places it.

    Returns:
        a summary: iterations run, final version, the exported policy folder, last metrics.
    """
    import ray

    pt, cc = cfg.post_train, cfg.cluster
    imagined_world = pt.world == "imagined"
    run_dir = run_dir_of(cfg)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise FileExistsError(
            f"run folder {run_dir} already holds checkpoints: pass --resume to "
            "continue it, or set post_train.run_dir / name to start another run"
        )
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    policy_w = PolicyFactory(pt.policy, cc.rollout_worker_gpus)
    policy_l = PolicyFactory(pt.policy, cc.learner_gpus)
    roles = _ImaginedRoles(cfg) if imagined_world else _RealRoles(cfg)
    rc = roles.rollout
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")

    init_ray(cc.address, num_cpus=cc.num_cpus, include_dashboard=cc.dashboard)
    check_resources(cc, services=imagined_world)
    tag = f"{cfg.name}-{int(time.time()) % 100000}"
    roles.start_services(tag)
    learners = LearnerGroup(
        policy_l,
        cfg.learner,
        num_learners=cc.learners,
        num_gpus=cc.learner_gpus,
        num_cpus=cc.learner_cpus,
        seed=cfg.seed,
        name=f"{tag}-learner",
    )
    learner = learners.lead  # rank 0 speaks for the group
    workers = [
        roles.start_worker(policy_w, i, name=f"{tag}-rollout-{i}")
        for i in range(cc.rollout_workers)
    ]
    sampler = roles.sampler
    logger = MetricsLogger(run_dir, tensorboard=pt.tensorboard)
    start = 0
    try:
        if resume:
            learner_state, driver_state = load_run_checkpoint(ckpt)
            learners.restore(learner_state)
            sampler.cursor = int(driver_state["sampler_cursor"])
            start = int(driver_state["iteration"])
        trainable_bytes = ray.get(learner.trainable_bytes.remote())
        current = learner.current.remote()
        ray.get([w.load_weights.remote(current) for w in workers])
        version = ray.get(learner.version.remote())  # 0 = the SFT weights
        imagined = _load_json(run_dir / "imagined_eval.json") if resume else {}
        if roles.eval_starts and "before" not in imagined:
            imagined["before"] = {
                "version": version,
                **_imagine(workers, roles.eval_starts, progress=progress),
            }
            _write_json(run_dir / "imagined_eval.json", imagined)
        last: dict[str, float] = {}
        bar = tqdm(
            range(start, pt.iterations),
            desc=f"post-train ({pt.world})",
            unit="it",
            disable=not progress,
            initial=start,
            total=pt.iterations,
        )
        for it in bar:
            t_it = time.perf_counter()
            g = rc.groups_per_worker
            inits = sampler.sample(len(workers) * g)
            video = pt.video_every > 0 and (it + 1) % pt.video_every == 0
            services_before = roles.service_stats()
            pairs = [
                w.rollout.options(num_returns=2).remote(
                    inits[i * g : (i + 1) * g],
                    [it * len(workers) * g + i * g + j for j in range(g)],
                    keep_frames=video and i == 0,
                )
                for i, w in enumerate(workers)
            ]
            summaries = ray.get([p[1] for p in pairs])
            t_roll = time.perf_counter() - t_it
            metrics = learners.update(*[p[0] for p in pairs])
            t_pub = time.perf_counter()
            published = learners.publish()
            versions = ray.get([w.load_weights.remote(published) for w in workers])
            broadcast_s = time.perf_counter() - t_pub
            version = versions[0]
            rewards = np.concatenate([s["rewards"] for s in summaries])
            env_steps = sum(s["env_steps"] for s in summaries)
            metrics.update(
                {
                    "rollout/reward_mean": float(rewards.mean()),
                    "rollout/success": float(
                        np.concatenate([s["terminated"] for s in summaries]).mean()
                    ),
                    "rollout/episode_policy_steps": float(
                        np.concatenate([s["lengths"] for s in summaries]).mean()
                    ),
                    "rollout/behaviour_version": float(min(min(s["versions"]) for s in summaries)),
                    "rollout/recoveries": float(sum(s["recoveries"] for s in summaries)),
                    "throughput/env_steps_per_s": env_steps / max(t_roll, 1e-9),
                    "timers/rollout_s": t_roll,
                    "timers/iteration_s": time.perf_counter() - t_it,
                    "broadcast/time_s": broadcast_s,
                    "broadcast/bytes": float(trainable_bytes),
                    "broadcast/version": float(version),
                    **roles.service_delta(services_before),
                }
            )
            logger.log(it + 1, metrics)
            last = metrics
            bar.set_postfix(
                reward=f"{metrics['rollout/reward_mean']:.3f}",
                kl=f"{metrics.get('learner/approx_kl', float('nan')):.4f}",
            )
            if video and summaries[0]["frames"] is not None:
                _save_video(
                    summaries[0]["frames"], run_dir / "videos" / f"{pt.world}_iter_{it + 1:04d}.gif"
                )
            if (it + 1) % pt.checkpoint_every == 0 or it + 1 == pt.iterations:
                save_run_checkpoint(
                    run_dir,
                    it + 1,
                    ray.get(learner.checkpoint_state.remote()),
                    {"sampler_cursor": sampler.cursor, "version": version, "seed": cfg.seed},
                )
        bar.close()
        if roles.eval_starts:
            imagined["after"] = {
                "version": version,
                **_imagine(workers, roles.eval_starts, progress=progress),
            }
            _write_json(run_dir / "imagined_eval.json", imagined)
        files = ray.get(learner.export_policy.remote(str(Path(pt.policy).resolve())))
        export = _write_files(run_dir / "policy", files)
        summary = {
            "run_dir": str(run_dir),
            "world": pt.world,
            "iterations": pt.iterations,
            "version": version,
            "policy": str(export),
            "eta": rc.eta if imagined_world else None,
            "last": last,
            "imagined_eval": imagined,
        }
        _write_json(run_dir / "summary.json", summary)
        return summary
    finally:
        logger.close()
        learners.kill()
        for a in [*workers, *roles.services]:
            ray.kill(a)


class _ImaginedRoles:
    """Rollouts in imagination: simulator and reflector replicas, initial states from real
    episodes (keyframes), the imagined evaluation's fixed starts."""

    def __init__(self, cfg: ExperimentConfig):
        pt, cc = cfg.post_train, cfg.cluster
        if not pt.data:
            raise ConfigError(
                "post_train.data is empty: name the episode stores whose real frames "
                "start the imagined rollouts (e.g. the expert demos)"
            )
        self.cfg = cfg
        self.rollout = dataclasses.replace(
            cfg.rollout, eta=termination_eta(cfg.rollout.eta, pt.reflector)
        )
        stores = [EpisodeStore(p) for p in pt.data]
        camera = stores[0].camera()
        self.limits = _controller_limits(stores[0].meta)
        self.sim_f = SimulatorFactory(
            pt.simulator,
            camera.to_dict(),
            cc.simulator.num_gpus,
            seed=cfg.seed,
            fake_latency_ms=pt.fake_latency_ms,
        )
        self.refl_f = ReflectorFactory(
            pt.reflector, cc.reflector.num_gpus, fake_latency_ms=pt.fake_latency_ms
        )
        rc = self.rollout
        self.sampler = InitialStateSampler(
            stores,
            keyframes=rc.keyframes,
            context_frames=rc.context_frames,
            seed=cfg.seed,
            sources=("expert",),
        )
        self.eval_starts = InitialStateSampler(
            stores,
            keyframes=False,
            context_frames=rc.context_frames,
            seed=cfg.seed + EVAL_SEED_OFFSET,
            sources=("expert",),
        ).sample(pt.imagined_eval_states)
        self.sims: list[Any] = []
        self.refls: list[Any] = []

    @property
    def services(self) -> list[Any]:
        return [*self.sims, *self.refls]

    def start_services(self, tag: str) -> None:
        cc = self.cfg.cluster
        self.sims = start_replicas(SimulatorService, cc.simulator, self.sim_f, name=f"{tag}-sim")
        self.refls = start_replicas(
            ReflectorService, cc.reflector, self.refl_f, name=f"{tag}-reflector"
        )

    def start_worker(self, policy_f: PolicyFactory, i: int, *, name: str) -> Any:
        cc = self.cfg.cluster
        return start_actor(
            RolloutWorker,
            policy_f,
            sim=self.sims,
            reflector=self.refls,
            rollout=self.rollout,
            worker_index=i,
            seed=self.cfg.seed,
            limits=self.limits,
            num_gpus=cc.rollout_worker_gpus,
            num_cpus=cc.rollout_worker_cpus,
            name=name,
        )

    def service_stats(self) -> tuple[list[dict], list[dict]]:
        import ray

        return ray.get([s.stats.remote() for s in self.sims]), ray.get(
            [s.stats.remote() for s in self.refls]
        )

    def service_delta(self, before: tuple[list[dict], list[dict]]) -> dict[str, float]:
        """``sim/`` and ``reflector/`` metrics of the calls made since ``before``."""
        sim_after, refl_after = self.service_stats()
        return {
            **{f"sim/{k}": v for k, v in _service_delta(before[0], sim_after).items()},
            **{f"reflector/{k}": v for k, v in _service_delta(before[1], refl_after).items()},
        }


class _RealRoles:
    """Rollouts in the real env with its ground-truth reward: no services, fresh real starts
    (task, seed) per group, no imagined evaluation."""

    services: list[Any] = []
    eval_starts: list[Any] = []

    def __init__(self, cfg: ExperimentConfig):
        from envs.factory import task_names

        self.cfg = cfg
        self.rollout = cfg.rollout
        self.env_f = EnvFactory(cfg.env)
        self.sampler = RealStartSampler(task_names(cfg.env), seed=cfg.seed)

    def start_services(self, tag: str) -> None:
        pass

    def start_worker(self, policy_f: PolicyFactory, i: int, *, name: str) -> Any:
        cc = self.cfg.cluster
        return start_actor(
            RealRolloutWorker,
            policy_f,
            env_factory=self.env_f,
            rollout=self.rollout,
            worker_index=i,
            seed=self.cfg.seed,
            num_gpus=cc.rollout_worker_gpus,
            num_cpus=cc.rollout_worker_cpus,
            name=name,
        )

    def service_stats(self) -> None:
        return None

    def service_delta(self, before: None) -> dict[str, float]:
        return {}


def _imagine(workers: list[Any], starts: list[Any], *, progress: bool) -> dict[str, Any]:
    """Imagined success of the workers' current policy on fixed starts (mean actions).

    Returns:
        success_rate and reward_mean over all rollouts, and per start (in order) its task and
        the fraction of its group that the reflector ended as a success.
    """
    import ray

    t0 = time.perf_counter()
    k = len(workers)
    ids = list(range(len(starts)))
    parts = [(w, starts[i::k], ids[i::k]) for i, w in enumerate(workers) if starts[i::k]]
    summaries = ray.get([w.imagine.remote(s, g) for w, s, g in parts])
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
    if progress:
        print(
            f"imagined evaluation: success {100 * out['success_rate']:.1f}% over {out['rollouts']} "
            f"rollouts from {len(starts)} starts ({out['seconds']:.0f} s)"
        )
    return out


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, default=float))


def _write_files(folder: Path, files: dict[str, bytes]) -> Path:
    """Write a folder of files atomically (staging folder, then rename)."""
    with staged_folder(folder) as stage:
        for rel, data in files.items():
            p = stage / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return folder
