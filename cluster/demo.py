"""``rehearse demo``: the whole pipeline on the embedded default, stage by stage, resumable.

collect (expert demos, expert and perturbed episodes) -> SFT on 5 demos per task -> the SFT
policy's self-exploration -> world simulator training -> reflector training -> LOOP
post-training in imagination on a local Ray -> the same LOOP in the real env with its
ground-truth reward (the oracle, ``demo.real_env_loop``) -> real-env evaluation of the SFT and
post-trained policies on the same seeds -> a report. Each finished stage leaves
``stages/<name>.json`` in the run folder; a rerun skips finished stages.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.config import ExperimentConfig, dump_config
from core.fsutil import write_text_atomic

STAGES = (
    "collect",
    "sft",
    "explore",
    "simulator",
    "reflector",
    "post_train",
    "post_train_real",
    "evaluate",
    "report",
)

# --quick: the same stages at smoke-test sizes (minutes, no learning claim)
QUICK_OVERRIDES = [
    "demo.sft_demos_per_task=2",
    "demo.val_demos_per_task=1",
    "demo.expert_episodes_per_task=3",
    "demo.exploration_episodes_per_task=3",
    "demo.policy_episodes_per_task=1",
    "demo.calibration_episodes_per_task=2",
    "demo.eval_episodes_per_task=2",
    "demo.video_episodes=1",
    "sft.steps=20",
    "sft.scale_steps=5",
    "sft.val_every=10",
    "simulator.train.steps=6",
    "simulator.train.time_budget_s=60",
    "simulator.train.val_every=3",
    "simulator.train.ckpt_every=3",
    "simulator.train.batch_size=8",
    "reflector.train.max_steps=6",
    "reflector.train.time_budget_s=60",
    "reflector.train.eval_every=3",
    "post_train.iterations=2",
    "post_train.checkpoint_every=1",
    "post_train.video_every=2",
    "post_train.imagined_eval_states=2",
    "rollout.group_size=4",
    "learner.minibatch_size=4",
    "learner.micro_batch_size=4",
    "rollout.max_policy_steps=2",
    "rollout.groups_per_worker=1",
    "cluster.rollout_workers=2",
]


class Stage:
    """Bookkeeping of one stage: skip it when done, time it, record its summary."""

    def __init__(self, run_dir: Path, name: str, log: Callable[[str], None]):
        self.path = run_dir / "stages" / f"{name}.json"
        self.name = name
        self.log = log

    @property
    def done(self) -> bool:
        return self.path.is_file()

    def result(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())

    def finish(self, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"stage": self.name, "seconds": seconds, **summary}
        write_text_atomic(self.path, json.dumps(rec, indent=1, default=float))
        self.log(f"[demo] {self.name} done in {seconds:.0f} s")
        return rec


def run_demo(
    cfg: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report."""
    from cluster.collect import collect, episode_specs
    from envs.factory import task_names

    d = cfg.demo
    run = Path(d.run_dir.format(name=cfg.name))
    run.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run / "config.yaml")
    data, ckpt = run / "data", run / "checkpoints"
    tasks = task_names(cfg.env)
    results: dict[str, dict[str, Any]] = {}
    t_all = time.perf_counter()

    def stage(name: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        st = Stage(run, name, log)
        if st.done:
            log(f"[demo] {name}: finished earlier, skipped")
            results[name] = st.result()
            return results[name]
        log(f"[demo] {name} ...")
        t = time.perf_counter()
        results[name] = st.finish(body(), time.perf_counter() - t)
        return results[name]

    def gather(
        out: Path, source: str, per_task: int, *, seed: int, after: int, policy: str | None = None
    ) -> dict[str, Any]:
        collect_cfg = dataclasses.replace(cfg.collect, steps_after_success=after)
        specs = episode_specs(tasks, per_task, seed=seed, source=source)
        return collect(
            cfg.env, collect_cfg, specs, out, overwrite=True, progress=progress, policy_path=policy
        )

    def do_collect() -> dict[str, Any]:
        s = cfg.seed
        demos = gather(
            data / "demos", "expert", d.sft_demos_per_task + d.val_demos_per_task, seed=s, after=0
        )
        expert = gather(
            data / "expert",
            "expert",
            d.expert_episodes_per_task,
            seed=s + 1000,
            after=d.steps_after_success,
        )
        out = {"demos": demos, "expert": expert}
        if d.exploration_episodes_per_task:
            out["exploration"] = gather(
                data / "explore",
                "exploration",
                d.exploration_episodes_per_task,
                seed=s + 2000,
                after=d.steps_after_success,
            )
        if d.calibration_episodes_per_task:  # the reflector's termination rule only
            out["calibration"] = gather(
                data / "calibrate",
                "exploration",
                d.calibration_episodes_per_task,
                seed=s + 4000,
                after=d.steps_after_success,
            )
        return out

    def do_sft() -> dict[str, Any]:
        from policy.sft import run_sft
        from trajectories.store import EpisodeStore

        _, metrics = run_sft(
            EpisodeStore(data / "demos"),
            policy_cfg=cfg.policy,
            sft_cfg=cfg.sft,
            demos_per_task=d.sft_demos_per_task,
            out=ckpt / "sft",
            progress=progress,
        )
        return {"checkpoint": str(ckpt / "sft"), "metrics": metrics}

    def do_explore() -> dict[str, Any]:
        if not d.policy_episodes_per_task:
            return {"skipped": True}
        return gather(
            data / "policy_explore",
            "exploration",
            d.policy_episodes_per_task,
            seed=cfg.seed + 3000,
            after=d.steps_after_success,
            policy=str(ckpt / "sft"),
        )

    def world_data() -> list[str]:
        return [
            str(p)
            for p in (data / "expert", data / "explore", data / "policy_explore")
            if p.is_dir()
        ]

    def do_simulator() -> dict[str, Any]:
        import shutil

        from simulator_service.train import train_world_model

        out = run / "simulator"
        if out.exists():  # an interrupted earlier attempt: start the stage over
            shutil.rmtree(out)
        summary = train_world_model(cfg.simulator, world_data(), out, progress=progress, log=log)
        summary.pop("validation_episodes", None)
        return {"checkpoint": str(out / "checkpoint"), **summary}

    def do_reflector() -> dict[str, Any]:
        import shutil

        from reflector_service.train import train_reflector

        out = run / "reflector"
        if out.exists():
            shutil.rmtree(out)
        calibrate = [str(data / "calibrate")] if (data / "calibrate").is_dir() else []
        summary = train_reflector(
            cfg.reflector.model,
            cfg.reflector.train,
            world_data(),
            out,
            progress=progress,
            log=log,
            calibration_data=calibrate,
        )
        return {
            "checkpoint": str(out / "best"),
            "best": summary.get("best"),
            "steps": summary.get("steps"),
        }

    def do_post_train() -> dict[str, Any]:
        import shutil

        from cluster.driver import post_train

        pt_dir = run / "post_train"
        if pt_dir.exists():
            shutil.rmtree(pt_dir)
        pt = dataclasses.replace(
            cfg.post_train,
            policy=str(ckpt / "sft"),
            simulator=results["simulator"]["checkpoint"],
            reflector=results["reflector"]["checkpoint"],
            data=[str(data / "demos")],
            run_dir=str(pt_dir),
        )
        summary = post_train(dataclasses.replace(cfg, post_train=pt), progress=progress)
        return summary

    def do_post_train_real() -> dict[str, Any]:
        import shutil

        from cluster.driver import post_train

        if not d.real_env_loop:
            return {"skipped": True}
        pt_dir = run / "post_train_real"
        if pt_dir.exists():
            shutil.rmtree(pt_dir)
        pt = dataclasses.replace(
            cfg.post_train,
            world="real",
            policy=str(ckpt / "sft"),
            run_dir=str(pt_dir),
            imagined_eval_states=0,
        )
        return post_train(dataclasses.replace(cfg, post_train=pt), progress=progress)

    def do_evaluate() -> dict[str, Any]:
        from cluster.evaluate import evaluate_policy

        out = {}
        policies = [("sft", ckpt / "sft"), ("post_trained", Path(results["post_train"]["policy"]))]
        if "policy" in results["post_train_real"]:
            policies.append(("post_trained_real", Path(results["post_train_real"]["policy"])))
        for name, path in policies:
            out[name] = evaluate_policy(
                str(path),
                cfg.env,
                tasks=tasks,
                episodes_per_task=d.eval_episodes_per_task,
                seed=cfg.seed,
                reflector_path=results["reflector"]["checkpoint"],
                modes=("ground_truth", "reflector"),
                eta=cfg.rollout.eta,
                execute_steps=cfg.rollout.execute_steps,
                max_steps=cfg.rollout.eval_max_steps,
                videos=d.video_episodes,
                out=run / "eval" / name,
                progress=progress,
            )
        return out

    def do_report() -> dict[str, Any]:
        from cluster.metrics import read_metrics
        from cluster.report import demo_report

        real = (
            read_metrics(run / "post_train_real")
            if "policy" in results["post_train_real"]
            else None
        )
        report = demo_report(
            results,
            read_metrics(run / "post_train"),
            seconds=time.perf_counter() - t_all,
            real_metrics=real,
        )
        (run / "report.md").write_text(report["markdown"])
        return report

    stage("collect", do_collect)
    stage("sft", do_sft)
    stage("explore", do_explore)
    stage("simulator", do_simulator)
    stage("reflector", do_reflector)
    stage("post_train", do_post_train)
    stage("post_train_real", do_post_train_real)
    stage("evaluate", do_evaluate)
    report = stage("report", do_report)
    log(report["markdown"])
    log(f"[demo] run folder: {run}")
    return report
