"""The driver behind ``rehearse post-train``: a small runner with named, timed steps.

One iteration: **roll out** (every rollout worker runs RLOO groups from fresh starts in its
world: imagination through the simulator and reflector replicas, or the real env; with dynamic
sampling, rounds repeat until enough groups with mixed rewards are in) -> **update** (the
learner joins the batches by reference, never through the driver, and runs LOOP) -> **sync
weights** (the new trainable weights go to every worker with a version) -> **log** ->
**checkpoint** -> **evaluate** (the learning curve: real-env success of the current policy,
mean action and sampled, on fixed starts). Around the loop: **start roles** and, at the end,
the imagined evaluation and **export**. Each step's time is logged as ``timers/<step>_s``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from actors.eval_worker import EvalWorker
from actors.rollout import sum_timings
from actors.rollout_worker import RolloutWorker
from cluster.backends import EnvFactory, PolicyFactory
from cluster.checkpoints import latest_checkpoint, load_run_checkpoint, save_run_checkpoint
from cluster.coevolution import coevolution_round
from cluster.config import ExperimentConfig, dump_config
from cluster.curve import write_curve_plot
from cluster.dynamic_sampling import collect_until_mixed
from cluster.imagined_eta import imagination_eta
from cluster.learner_group import LearnerGroup
from cluster.metrics import MetricsLogger
from cluster.placement import check_resources, revive_actor, start_actor, start_replicas
from cluster.ray_session import init_ray
from cluster.run_eval import Evaluator, imagine, imagined_vs_real, learning_curve_point
from cluster.video import Caption, save_group_video, save_side_by_side
from cluster.world_setup import imagined_setup, real_setup
from core.configlib import ConfigError, to_dict
from core.fsutil import staged_folder, write_text_atomic


def run_dir_of(cfg: ExperimentConfig) -> Path:
    return Path(cfg.post_train.run_dir.format(name=cfg.name))


class Timers:
    """Seconds spent in each named step: ``with timers("update"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def pop(self) -> dict[str, float]:
        """The step times since the last pop, as ``timers/<step>_s`` metrics."""
        out = {f"timers/{k}_s": v for k, v in self.seconds.items()}
        self.seconds = {}
        return out


@dataclass
class RolloutRound:
    """What one iteration's roll-out step collected."""

    batches: list[Any]  # ObjectRefs of the learner batches (only those holding trained groups)
    summaries: list[dict[str, Any]]
    groups: list[int] | None  # group ids to train on (dynamic sampling), None: the learner's rule
    rounds: int
    mixed: int
    frames: Any = None  # (N, S, H, W, 3) of the first group, for a video
    caption: dict[str, Any] | None = None  # cluster.video.Caption's fields for that video


@dataclass
class PostTrainRun:
    """One LOOP post-training run as the config places it (see the module docstring).

    Args:
        cfg: the experiment config.
        resume: continue the run folder's latest checkpoint.
        progress: progress bar and log lines.
    """

    cfg: ExperimentConfig
    resume: bool = False
    progress: bool = True
    timers: Timers = field(default_factory=Timers)

    def __post_init__(self) -> None:
        pt = self.cfg.post_train
        self.run_dir = run_dir_of(self.cfg)
        self.ckpt = latest_checkpoint(self.run_dir)
        if self.ckpt is not None and not self.resume:
            raise FileExistsError(
                f"run folder {self.run_dir} already holds checkpoints: pass --resume to continue "
                "it, or set post_train.run_dir / name to start another run"
            )
        if self.resume and self.ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.run_dir}")
        if pt.coevolve_every and pt.simulator == "fake":
            raise ConfigError(
                "post_train.coevolve_every refines a trained world model: post_train.simulator "
                'is "fake"'
            )
        cc = self.cfg.cluster
        self.policy_w = PolicyFactory(pt.policy, cc.rollout_worker_gpus, pt.train_projector)
        self.policy_l = PolicyFactory(pt.policy, cc.learner_gpus, pt.train_projector)
        self.world = imagined_setup(self.cfg) if pt.world == "imagined" else real_setup(self.cfg)
        self.sim_path = pt.simulator
        self.learner_state, self.driver_state = (
            load_run_checkpoint(self.ckpt) if self.resume else ({}, {})
        )
        self.coevolve_rounds = int(self.driver_state.get("coevolve_rounds", 0))
        if self.driver_state.get("simulator"):  # refined by co-evolution before the stop
            self.use_simulator(self.driver_state["simulator"])
        self.handles: dict[str, list[Any]] = {}
        self.workers: list[Any] = []
        self.evaluator: Evaluator | None = None
        self.learners: LearnerGroup | None = None
        self.agreement_frames: dict[str, list[tuple[str, Any]]] = {}  # videos of agreement()
        self.next_group = 0
        self.episodes = 0
        self.capped_warned = False
        self.deaths: dict[int, int] = {}  # rollout worker index -> times it died
        self.published: Any = None
        self.version = 0  # of the published weights
        self.world_of_workers: Any = None

    def use_simulator(self, path: str) -> None:
        """Point the simulator service at another world-model checkpoint."""
        self.sim_path = path
        for s in self.world.services:
            if s.prefix == "sim":
                s.factory = dataclasses.replace(s.factory, path=path)

    def calibrate_eta(self, when: str) -> None:
        """Act with the eta chosen for the current world model's frames, where the experiment
        calibrates one (``cluster.imagined_eta.imagination_eta``; ``eta_calibration.json``)."""
        eta = imagination_eta(
            self.cfg,
            self.sim_path,
            self.run_dir / "eta_calibration.json",
            when=when,
            progress=self.progress,
            log=self.log_line,
        )
        if eta is not None:
            self.world.rollout = dataclasses.replace(self.world.rollout, eta=eta)

    def agreement(self, video: str | None = None) -> dict[str, Any]:
        """Imagined vs real success of the current policy on the curve's real starts; with
        ``video``, the first start imagined and real side by side in
        ``videos/imagined_vs_real_<video>.gif`` (and, once "before" and "after" both exist, the
        four in ``videos/imagined_vs_real.gif``)."""
        out = imagined_vs_real(
            self.workers, self.evaluator, self.cfg, self.log_line, keep_frames=bool(video)
        )
        if video:
            frames = out.pop("frames")
            who = "SFT" if video == "before" else "LOOP"
            self.agreement_frames[video] = [
                (f"{who} imagined", frames["imagined"]),
                (f"{who} real", frames["real"]),
            ]
            task = out["per_start"][0][0]
            folder = self.run_dir / "videos"
            save_side_by_side(
                self.agreement_frames[video], folder / f"imagined_vs_real_{video}.gif", title=task
            )
            if {"before", "after"} <= set(self.agreement_frames):
                both = self.agreement_frames["before"] + self.agreement_frames["after"]
                save_side_by_side(both, folder / "imagined_vs_real.gif", title=task)
        return out

    def log_line(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)

    # ----- steps ----------------------------------------------------------------------
    def start_roles(self) -> None:
        """Service replicas, the learner group, rollout workers (and the curve's evaluator)."""
        cfg, cc = self.cfg, self.cfg.cluster
        tag = f"{cfg.name}-{int(time.time()) % 100000}"
        for s in self.world.replicated:
            self.handles[s.prefix] = start_replicas(
                s.cls, s.replicas, s.factory, name=f"{tag}-{s.prefix}"
            )
        self.learners = LearnerGroup(
            self.policy_l,
            cfg.learner,
            num_learners=cc.learners,
            num_gpus=cc.learner_gpus,
            num_cpus=cc.learner_cpus,
            seed=cfg.seed,
            name=f"{tag}-learner",
            anchor_split=(cfg.sft.val_fraction, cfg.sft.seed),
        )
        world = self.world_of_workers = self.world.make_world(self.handles)
        self.workers = [
            start_actor(
                RolloutWorker,
                self.policy_w,
                world=world,
                rollout=self.world.rollout,
                worker_index=i,
                seed=cfg.seed,
                num_gpus=cc.rollout_worker_gpus,
                num_cpus=cc.rollout_worker_cpus,
                name=f"{tag}-rollout-{i}",
                max_restarts=cc.worker_restarts,
            )
            for i in range(cc.rollout_workers)
        ]
        if cfg.post_train.eval_every or cfg.post_train.coevolve_every:
            actor = start_actor(
                EvalWorker,
                self.policy_w,
                EnvFactory(cfg.env),
                num_gpus=cc.rollout_worker_gpus,
                num_cpus=cc.rollout_worker_cpus,
                name=f"{tag}-curve",
                max_restarts=cc.worker_restarts,
            )
            self.evaluator = Evaluator(actor, limit=cc.worker_restarts, log=self.log_line)

    def sync_weights(self, published: Any) -> int:
        """Every worker (and the evaluator) copies the published weights in; the version."""
        import ray
        from ray.exceptions import RayActorError

        self.published = published
        refs = [w.load_weights.remote(published) for w in self.workers]
        if self.evaluator is not None:
            self.evaluator.load_weights(published)
        versions = []
        for i, ref in enumerate(refs):
            try:
                versions.append(ray.get(ref))
            except RayActorError as e:
                versions.append(self.revive(i, e))  # gives it the new weights
        self.version = versions[0]
        return self.version

    def set_world(self, world: Any) -> None:
        """Every rollout worker acts in ``world`` from now on (and after a restart)."""
        import ray

        self.world_of_workers = world
        ray.get([w.set_world.remote(world) for w in self.workers])

    def revive(self, i: int, error: Exception) -> int:
        """Rollout worker i died: wait until Ray has restarted it, give it the current weights
        and world; its version. A worker that died more than ``cluster.worker_restarts``
        times stops the run in one line."""
        import ray

        self.deaths[i] = self.deaths.get(i, 0) + 1
        w = self.workers[i]
        revive_actor(
            w,
            name=f"rollout worker {i}",
            deaths=self.deaths[i],
            limit=self.cfg.cluster.worker_restarts,
            error=error,
            log=self.log_line,
        )
        ray.get(w.set_world.remote(self.world_of_workers))
        return ray.get(w.load_weights.remote(self.published))

    def await_rollout(self, i: int, pair: Any, resubmit: Callable[[Any], Any]) -> tuple[Any, dict]:
        """(batch ref, summary) of worker i's rollout call; if the worker died, revive it and
        run its groups again (the same starts and group ids). A worker that died between calls
        and was restarted before this one ran holds the SFT weights: its groups carry another
        version than the published one, and are run again the same way."""
        import ray
        from ray.exceptions import RayActorError

        while True:
            try:
                summary = ray.get(pair[1])
            except RayActorError as e:
                self.revive(i, e)
            else:
                if all(v == self.version for v in summary["versions"]):
                    return pair[0], summary
                self.revive(i, RuntimeError(f"restarted holding version {summary['versions'][0]}"))
            pair = resubmit(self.workers[i])

    def roll_out(self, it: int, *, video: bool) -> RolloutRound:
        """Rounds of fresh groups: one round of ``groups_per_worker`` per worker, or (dynamic
        sampling, ``rollout.mixed_groups`` = K) rounds until K groups with mixed rewards are in
        or ``rollout.max_sampling_rounds`` rounds ran, a later round as big as the missing
        groups need (up to ``rollout.round_growth`` times); then exactly (at most) K groups
        train."""

        rc = self.world.rollout

        def run_round(round_no: int, g: int) -> list[tuple[Any, dict[str, Any]]]:
            starts = self.world.sampler.sample(len(self.workers) * g)
            ids = list(range(self.next_group, self.next_group + len(starts)))
            self.next_group += len(starts)

            def submit(i: int) -> Callable[[Any], Any]:
                return lambda w: w.rollout.options(num_returns=2).remote(
                    starts[i * g : (i + 1) * g],
                    ids[i * g : (i + 1) * g],
                    keep_frames=video and round_no == 1 and i == 0,
                )

            pairs = [submit(i)(w) for i, w in enumerate(self.workers)]
            return [self.await_rollout(i, p, submit(i)) for i, p in enumerate(pairs)]

        k = rc.mixed_groups
        c = collect_until_mixed(
            run_round,
            k=k,
            max_rounds=rc.max_sampling_rounds,
            workers=len(self.workers),
            per_worker=rc.groups_per_worker,
            max_per_worker=rc.round_growth * rc.groups_per_worker,
        )
        self.episodes += sum(len(s["rewards"]) for s in c.summaries)
        if k and c.mixed < k and not self.capped_warned:
            self.capped_warned = True
            self.log_line(
                f"warning: iteration {it + 1} found {c.mixed} of rollout.mixed_groups = {k} "
                f"groups with mixed rewards in rollout.max_sampling_rounds = {c.rounds} rounds "
                "(the starts were all solved or all failed); training on those, and counting "
                "such iterations in rollout/sampling_capped"
            )
        keep = set(c.groups) if c.groups is not None else None
        batches = [
            ref
            for ref, s in zip(c.items, c.summaries, strict=True)
            if keep is None or keep & set(s["group_ids"])
        ]
        first = c.summaries[0]
        return RolloutRound(
            batches, c.summaries, c.groups, c.rounds, c.mixed, first["frames"], first["caption"]
        )

    def update(self, r: RolloutRound) -> dict[str, float]:
        assert self.learners is not None
        if r.groups == [] or not r.batches:
            return {"learner/optimizer_steps": 0.0, "learner/kept_trajectories": 0.0}
        return self.learners.update(*r.batches, groups=r.groups)

    def video_due(self, it: int) -> bool:
        """Iteration ``it`` (from 0) saves a video of its first group."""
        every = self.cfg.post_train.video_every
        return every > 0 and (it + 1) % every == 0

    def coevolve_due(self, it: int) -> bool:
        """A co-evolution round follows iteration ``it`` (never after the last)."""
        pt = self.cfg.post_train
        return (
            bool(pt.coevolve_every) and (it + 1) % pt.coevolve_every == 0 and it + 1 < pt.iterations
        )

    def sampling_state(self) -> dict[str, int]:
        """Where the stream of starts stands (a run checkpoint resumes from it)."""
        return {
            "sampler_cursor": self.world.sampler.cursor,
            "next_group": self.next_group,
            "episodes": self.episodes,
        }

    def metrics_of(self, it: int, r: RolloutRound, rollout_s: float) -> dict[str, float]:
        s = r.summaries
        rewards = np.concatenate([x["rewards"] for x in s])
        env_steps = sum(x["env_steps"] for x in s)
        return {
            **step_breakdown([x.get("timings", {}) for x in s], env_steps),
            "rollout/reward_mean": float(rewards.mean()),
            "rollout/success": float(np.concatenate([x["terminated"] for x in s]).mean()),
            "rollout/episode_policy_steps": float(np.concatenate([x["lengths"] for x in s]).mean()),
            "rollout/behaviour_version": float(min(min(x["versions"]) for x in s)),
            "rollout/recoveries": float(sum(x["recoveries"] for x in s)),
            "rollout/worker_restarts": float(sum(self.deaths.values())),
            "rollout/episodes": float(self.episodes),
            "rollout/sampling_rounds": float(r.rounds),
            "rollout/mixed_groups": float(r.mixed),
            "rollout/sampling_capped": float(
                bool(self.world.rollout.mixed_groups) and r.mixed < self.world.rollout.mixed_groups
            ),
            "throughput/env_steps_per_s": env_steps / max(rollout_s, 1e-9),
            **({"rollout/eta": float(self.world.rollout.eta)} if self.world.services else {}),
        }

    def export(self, folder: Path | None = None) -> Path:
        """The current policy as a self-contained folder (it names no other checkpoint, so it
        loads after being copied elsewhere): ``run_dir/policy`` unless another folder is named."""
        import ray

        assert self.learners is not None
        files = ray.get(self.learners.lead.export_policy.remote())
        folder = folder or self.run_dir / "policy"
        with staged_folder(folder) as stage:
            for rel, data in files.items():
                p = stage / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        return folder

    def stop_roles(self) -> None:
        import ray

        if self.learners is not None:
            self.learners.kill()
        handles = [h for hs in self.handles.values() for h in hs]
        for a in [*self.workers, *handles, *([self.evaluator.actor] if self.evaluator else [])]:
            ray.kill(a)

    def service_stats(self) -> dict[str, list[dict]]:
        import ray

        return {p: ray.get([h.stats.remote() for h in hs]) for p, hs in self.handles.items()}

    # ----- the run ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Start the roles, run the iterations, export; returns the run's summary."""
        import ray

        cfg, pt, cc = self.cfg, self.cfg.post_train, self.cfg.cluster
        t_start = time.perf_counter()
        where = cc.address or os.environ.get("RAY_ADDRESS")
        self.log_line(
            f"post-train: joining Ray at {where}" if where else "post-train: starting a private Ray"
        )
        init_ray(cc.address, num_cpus=cc.num_cpus, include_dashboard=cc.dashboard)
        self.log_line(f"post-train: Ray ready after {time.perf_counter() - t_start:.0f} s")
        check_resources(cc, services=bool(self.world.replicated))  # before the run folder exists
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.run_dir / "config.yaml")
        logger = MetricsLogger(
            self.run_dir,
            loggers=cfg.loggers,
            config=to_dict(cfg),
            resumed_at=int(self.driver_state["iteration"]) if self.resume else None,
        )
        start = 0
        # post_train.overlap: the learner's update waits in this thread while rollouts go on
        overlap_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner-update")
        try:
            roles = [f"{cc.rollout_workers} rollout workers", "the learner"] + [
                f"{s.replicas.replicas} {s.prefix} replica(s)" for s in self.world.replicated
            ]
            if self.world.colocated:
                roles[0] += " (each with its own world model and reflector)"
            self.log_line(f"post-train: starting {', '.join(roles)}; each loads its model")
            with self.timers("eta_calibration"):
                self.calibrate_eta("start")
            with self.timers("start_roles"):
                self.start_roles()
            assert self.learners is not None
            learner = self.learners.lead
            if self.resume:
                driver_state = self.driver_state
                self.learners.restore(self.learner_state)
                self.world.sampler.cursor = int(driver_state["sampler_cursor"])
                start = int(driver_state["iteration"])
                self.next_group = int(driver_state.get("next_group", 0))
                self.episodes = int(driver_state.get("episodes", 0))
            trainable_bytes = ray.get(learner.trainable_bytes.remote())
            version = self.sync_weights(learner.current.remote())  # 0 = the SFT weights
            self.log_line(f"post-train: roles ready after {time.perf_counter() - t_start:.0f} s")
            imagined = _load_json(self.run_dir / "imagined_eval.json") if self.resume else {}
            if self.world.eval_starts and "before" not in imagined:
                imagined["before"] = {
                    "version": version,
                    **imagine(self.workers, self.world.eval_starts, self.log_line),
                }
                _write_json(self.run_dir / "imagined_eval.json", imagined)
            agree = bool(self.world.services) and self.evaluator is not None
            if agree and "agreement_before" not in imagined:
                imagined["agreement_before"] = self.agreement(video="before")
                _write_json(self.run_dir / "imagined_eval.json", imagined)
            if pt.eval_every and start == 0:
                logger.log(
                    0,
                    {
                        **learning_curve_point(self.evaluator, cfg, self.log_line),
                        "rollout/episodes": 0.0,
                        "timers/wall_s": 0.0,
                    },
                )
            wall0 = time.perf_counter() - float(
                _load_json(self.run_dir / "wall.json").get("wall_s", 0.0) if self.resume else 0.0
            )
            last: dict[str, float] = {}
            bar = tqdm(
                range(start, pt.iterations),
                desc=f"post-train ({pt.world})",
                unit="it",
                disable=not self.progress,
                initial=start,
                total=pt.iterations,
            )
            prefetched: tuple[RolloutRound, float, dict[str, Any]] | None = None
            for it in bar:
                t_it = time.perf_counter()
                before = self.service_stats()
                if prefetched is None:
                    with self.timers("rollout"):
                        r = self.roll_out(it, video=self.video_due(it))
                    rollout_s = time.perf_counter() - t_it
                    rolled = self.metrics_of(it, r, rollout_s)
                else:  # rolled out during the last iteration's update
                    r, rollout_s, rolled = prefetched
                mark = self.sampling_state()  # what a checkpoint of this iteration resumes at
                prefetched = None
                if pt.overlap and it + 1 < pt.iterations and not self.coevolve_due(it):
                    # the learner trains on r while the workers roll out iteration it + 1 with
                    # the weights r came from (one version behind when it is trained on)
                    update = overlap_pool.submit(self.update, r)
                    t_next = time.perf_counter()
                    with self.timers("rollout_ahead"):
                        nxt = self.roll_out(it + 1, video=self.video_due(it + 1))
                    ahead_s = time.perf_counter() - t_next
                    prefetched = (nxt, ahead_s, self.metrics_of(it + 1, nxt, ahead_s))
                    with self.timers("update"):  # what of the update the rollouts did not hide
                        metrics = update.result()
                else:
                    with self.timers("update"):
                        metrics = self.update(r)
                with self.timers("broadcast"):
                    version = self.sync_weights(self.learners.publish())
                metrics.update(rolled)
                metrics.update(_service_delta(before, self.service_stats()))
                if pt.eval_every and (it + 1) % pt.eval_every == 0:
                    with self.timers("evaluate"):
                        metrics.update(learning_curve_point(self.evaluator, cfg, self.log_line))
                if self.coevolve_due(it):
                    with self.timers("coevolve"):
                        metrics.update(coevolution_round(self, it))
                if self.video_due(it) and r.frames is not None:
                    save_group_video(
                        r.frames,
                        self.run_dir / "videos" / f"{pt.world}_iter_{it + 1:04d}.gif",
                        caption=Caption(**r.caption) if r.caption else None,
                    )
                timers = self.timers.pop()
                metrics.update(
                    {
                        **timers,
                        "timers/rollout_s": rollout_s,
                        "timers/iteration_s": time.perf_counter() - t_it,
                        "timers/wall_s": time.perf_counter() - wall0,
                        "broadcast/time_s": timers.get("timers/broadcast_s", 0.0),
                        "broadcast/bytes": float(trainable_bytes),
                        "broadcast/version": float(version),
                    }
                )
                logger.log(it + 1, metrics)
                last = metrics
                bar.set_postfix(
                    reward=f"{metrics['rollout/reward_mean']:.3f}",
                    kl=f"{metrics.get('learner/approx_kl', float('nan')):.4f}",
                )
                if (it + 1) % pt.checkpoint_every == 0 or it + 1 == pt.iterations:
                    with self.timers("checkpoint"):
                        save_run_checkpoint(
                            self.run_dir,
                            it + 1,
                            ray.get(learner.checkpoint_state.remote()),
                            {
                                **mark,
                                "version": version,
                                "seed": cfg.seed,
                                "simulator": self.sim_path,
                                "coevolve_rounds": self.coevolve_rounds,
                            },
                        )
                        _write_json(
                            self.run_dir / "wall.json", {"wall_s": time.perf_counter() - wall0}
                        )
            bar.close()
            if self.world.eval_starts:
                imagined["after"] = {
                    "version": version,
                    **imagine(self.workers, self.world.eval_starts, self.log_line),
                }
                _write_json(self.run_dir / "imagined_eval.json", imagined)
            if agree:
                imagined["agreement_after"] = self.agreement(video="after")
                _write_json(self.run_dir / "imagined_eval.json", imagined)
            if pt.eval_every:
                write_curve_plot(self.run_dir)
            with self.timers("export"):
                export = self.export()
            summary = {
                "run_dir": str(self.run_dir),
                "world": pt.world,
                "iterations": pt.iterations,
                "version": version,
                "policy": str(export),
                "eta": self.world.rollout.eta if self.world.services else None,
                "last": last,
                "imagined_eval": imagined,
            }
            _write_json(self.run_dir / "summary.json", summary)
            return summary
        finally:
            overlap_pool.shutdown(wait=True)
            logger.close()
            self.stop_roles()


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
    return PostTrainRun(cfg, resume=resume, progress=progress).run()


def step_breakdown(timings: list[dict[str, float]], env_steps: int) -> dict[str, float]:
    """``step/*_ms``: where the rollout workers' time went, per env step (summed over workers,
    divided by the env steps they took): the policy's forward passes, the group's steps, and
    inside imagined steps the kinematics and action maps, the world-model and reflector calls
    as the workers waited on them (model compute, batching wait and transport; the services'
    own compute per call is ``sim/mean_call_ms`` and ``reflector/mean_call_ms``), and what
    else the acting loop spent (``step/other_ms``: bookkeeping between the calls)."""
    total = sum_timings(timings)
    if not total or env_steps <= 0:
        return {}
    per = 1000.0 / env_steps
    out = {"step/policy_ms": total.get("policy_s", 0.0) * per}
    out["step/env_ms"] = total.get("env_s", 0.0) * per
    if "sim_s" in total:
        inner = total["kinematics_s"] + total["sim_s"] + total["reflector_s"]
        out["step/kinematics_ms"] = total["kinematics_s"] * per
        out["step/world_model_call_ms"] = total["sim_s"] * per
        out["step/reflector_call_ms"] = total["reflector_s"] * per
        out["step/other_ms"] = max(0.0, total.get("env_s", 0.0) - inner) * per
    return out


def _service_delta(before: dict[str, list[dict]], after: dict[str, list[dict]]) -> dict[str, float]:
    """``<prefix>/`` mean batch size, calls and compute time of the model calls between two
    snapshots of every service's stats."""
    out = {}
    for prefix, a in after.items():
        b = before[prefix]
        batches = sum(x["batches"] - y["batches"] for x, y in zip(a, b, strict=True))
        items = sum(x["items"] - y["items"] for x, y in zip(a, b, strict=True))
        compute = sum(
            x["mean_compute_ms"] * x["batches"] - y["mean_compute_ms"] * y["batches"]
            for x, y in zip(a, b, strict=True)
        )
        out.update(
            {
                f"{prefix}/mean_batch_size": items / max(1, batches),
                f"{prefix}/calls": float(batches),
                f"{prefix}/mean_call_ms": compute / max(1, batches),
                f"{prefix}/queue_depth": float(sum(x["queue_depth"] for x in a)),
            }
        )
    return out


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, default=float))
