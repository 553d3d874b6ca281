"""``rehearse demo``: the whole pipeline on the embedded default, a list of resumable stages.

collect (expert demos, expert and perturbed episodes) -> SFT on 5 demos per task -> the SFT
policy's self-exploration -> world simulator training -> reflector training -> LOOP
post-training in imagination on a local Ray (learning curve, co-evolution when configured)
-> post-training in the real env with its ground-truth reward (the oracle,
``demo.real_env_loop``, its recipe in ``demo.real_env_set``) -> continued SFT on the demos alone
for the oracle's optimizer steps (the control, ``demo.sft_control``) -> real-env evaluation of
every policy on the same seeds, mean action and sampled -> a report. ``STAGES`` lists them in
order, each a function of the run (``DemoRun``) that calls the same code as the CLI command of
that step.
Each finished stage leaves ``stages/<name>.json`` in the run folder; a rerun skips it. With
``demo.side_by_side`` the reflector trains beside the world model (``BESIDE``), in a second
process, each on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import ExperimentConfig, dump_config
from core.configlib import to_dict
from core.fsutil import write_text_atomic
from policy.config import SFTConfig

# a stage: its name (the record stages/<name>.json) and its body
Stage = tuple[str, Callable[["DemoRun"], dict[str, Any]]]

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
    "pretrain.scenes=48",
    "pretrain.val_scenes=16",
    "pretrain.steps=4",
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
    "post_train.eval_every=1",
    "post_train.eval_episodes_per_task=1",
    "post_train.coevolve_every=1",
    "post_train.coevolve_episodes_per_task=1",
    "post_train.coevolve_simulator_s=5",
    "rollout.group_size=4",
    "learner.minibatch_size=4",
    "learner.micro_batch_size=4",
    "rollout.max_policy_steps=2",
    "rollout.groups_per_worker=1",
    "cluster.rollout_workers=2",
    # the oracle's recipe of configs/demo.yaml at the sizes above; the dense reward gives a
    # smoke-test policy mixed groups, so the learner (and the control after it) takes steps
    "demo.real_env_set=[post_train.real_reward=progress, rollout.explore=one_step, "
    "rollout.mixed_groups=0, "
    "learner.objective=filtered_l1, learner.anchor_weight=1, learner.lr_schedule=cosine, "
    "learner.reset_optimizer=true, post_train.train_projector=true]",
]


@dataclass
class DemoRun:
    """The run folder and what the stages share."""

    cfg: ExperimentConfig
    progress: bool
    log: Callable[[str], None]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run = Path(self.cfg.demo.run_dir.format(name=self.cfg.name))
        self.data, self.ckpt = self.run / "data", self.run / "checkpoints"
        from envs.factory import task_names

        self.tasks = task_names(self.cfg.env)

    def gather(
        self,
        name: str,
        source: str,
        per_task: int,
        *,
        seed: int,
        after: int,
        policy: str | None = None,
    ) -> dict[str, Any]:
        """Collect ``per_task`` episodes per task into ``data/<name>``."""
        from cluster.collect import collect, episode_specs

        collect_cfg = dataclasses.replace(self.cfg.collect, steps_after_success=after)
        specs = episode_specs(self.tasks, per_task, seed=seed, source=source)
        return collect(
            self.cfg.env,
            collect_cfg,
            specs,
            self.data / name,
            overwrite=True,
            progress=self.progress,
            policy_path=policy,
        )

    def fresh(self, name: str) -> Path:
        """``run/<name>``, emptied (an interrupted earlier attempt starts over)."""
        out = self.run / name
        if out.exists():
            shutil.rmtree(out)
        return out

    def fine_tune(self, start: str, sft_cfg: SFTConfig, out: Path) -> dict[str, Any]:
        """SFT on the run's demos from the checkpoint ``start`` ("" for a fresh policy) into
        ``out``; returns its metrics."""
        from policy.sft import run_sft
        from trajectories.store import EpisodeStore

        policy = (
            dataclasses.replace(self.cfg.policy, checkpoint=start) if start else self.cfg.policy
        )
        _, metrics = run_sft(
            EpisodeStore(self.data / "demos"),
            policy_cfg=policy,
            sft_cfg=sft_cfg,
            demos_per_task=self.cfg.demo.sft_demos_per_task,
            out=out,
            progress=self.progress,
            loggers=self.cfg.loggers,
            config=to_dict(self.cfg),
        )
        return metrics

    def world_data(self) -> list[str]:
        names = ("expert", "explore", "policy_explore")
        return [str(self.data / n) for n in names if (self.data / n).is_dir()]

    def record(self, name: str) -> Path:
        """Where a finished stage's summary lies (its presence means finished)."""
        return self.run / "stages" / f"{name}.json"

    def finished(self, name: str) -> bool:
        return self.record(name).is_file()

    def side_by_side(self, main: Stage, beside: Stage) -> None:
        """Run two independent stages at once: ``beside`` in a second process, ``main`` in this
        one, each on one CPU thread. On 2 cores both then train at their one-thread speed (the
        demo's world model and reflector measured so, while two threads make a run only
        1.3-1.4x faster), so each may use the time the two took one after the other. A stage
        finished earlier is skipped as usual, and one left alone runs here."""
        import multiprocessing

        import torch

        if self.finished(main[0]) or self.finished(beside[0]):
            self.stage(*main)
            self.stage(*beside)
            return
        proc = multiprocessing.get_context("spawn").Process(
            target=_stage_beside, args=(self.cfg, beside, main[0]), name=f"demo-{beside[0]}"
        )
        self.log(f"[demo] {beside[0]} beside {main[0]}, in its own process")
        proc.start()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.stage(*main)
        except BaseException:
            proc.terminate()
            raise
        finally:
            torch.set_num_threads(threads)
            proc.join()
        if proc.exitcode != 0 or not self.finished(beside[0]):
            raise RuntimeError(
                f"demo stage {beside[0]} failed in its own process (exit code {proc.exitcode}, "
                f"its error above); rerun the demo to retry it (finished stages are skipped)"
            )
        self.results[beside[0]] = json.loads(self.record(beside[0]).read_text())

    def stage(self, name: str, body: Callable[[DemoRun], dict[str, Any]]) -> dict[str, Any]:
        """Run one stage unless it finished earlier; time it and record its summary."""
        path = self.record(name)
        if path.is_file():
            self.log(f"[demo] {name}: finished earlier, skipped")
            self.results[name] = json.loads(path.read_text())
            return self.results[name]
        self.log(f"[demo] {name} ...")
        t = time.perf_counter()
        summary = body(self)
        # the stage's wall time is "seconds" (what the log says); a body's own "seconds" (e.g.
        # the training time inside it) is kept as "body_seconds"
        body_keys = {("body_seconds" if k == "seconds" else k): v for k, v in summary.items()}
        rec = {"stage": name, **body_keys, "seconds": time.perf_counter() - t}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(rec, indent=1, default=float))
        self.log(f"[demo] {name} done in {rec['seconds']:.0f} s")
        self.results[name] = rec
        return rec


def collect_data(d: DemoRun) -> dict[str, Any]:
    """Expert demos (SFT), expert and perturbed episodes (world model, reflector), and
    perturbed episodes of other seeds that only calibrate the reflector's termination rule."""
    c, s = d.cfg.demo, d.cfg.seed
    after = c.steps_after_success
    out = {
        "demos": d.gather(
            "demos", "expert", c.sft_demos_per_task + c.val_demos_per_task, seed=s, after=0
        ),
        "expert": d.gather(
            "expert", "expert", c.expert_episodes_per_task, seed=s + 1000, after=after
        ),
    }
    if c.exploration_episodes_per_task:
        out["exploration"] = d.gather(
            "explore", "exploration", c.exploration_episodes_per_task, seed=s + 2000, after=after
        )
    if c.calibration_episodes_per_task:
        out["calibration"] = d.gather(
            "calibrate", "exploration", c.calibration_episodes_per_task, seed=s + 4000, after=after
        )
    return out


def pretrain(d: DemoRun) -> dict[str, Any]:
    """Vision pretraining (``demo.pretrain_vision``): the towers the SFT starts from."""
    from cluster.pretraining import mean_cm, pretrain_policy

    if not d.cfg.demo.pretrain_vision:
        return {"skipped": True}
    m = pretrain_policy(d.cfg, d.ckpt / "pretrain", progress=d.progress)
    err, base = mean_cm(m["val_abs_error_m"]), mean_cm(m["baseline_abs_error_m"])
    d.log(f"vision pretraining: held-out localization error {err:.2f} cm ({base:.2f} by layout)")
    return {"checkpoint": str(d.ckpt / "pretrain"), "error_cm": err, "layout_error_cm": base}


def sft(d: DemoRun) -> dict[str, Any]:
    start = d.results.get("pretrain", {}).get("checkpoint", "")
    metrics = d.fine_tune(start, d.cfg.sft, d.ckpt / "sft")
    return {"checkpoint": str(d.ckpt / "sft"), "metrics": metrics}


def explore(d: DemoRun) -> dict[str, Any]:
    """The SFT policy's own Laplace samples in the real env (World-Env's self-exploration)."""
    n = d.cfg.demo.policy_episodes_per_task
    if not n:
        return {"skipped": True}
    return d.gather(
        "policy_explore",
        "exploration",
        n,
        seed=d.cfg.seed + 3000,
        after=d.cfg.demo.steps_after_success,
        policy=str(d.ckpt / "sft"),
    )


def simulator(d: DemoRun) -> dict[str, Any]:
    from simulator_service.train import train_world_model

    out = d.fresh("simulator")
    summary = train_world_model(
        d.cfg.simulator,
        d.world_data(),
        out,
        progress=d.progress,
        log=d.log,
        loggers=d.cfg.loggers,
        config=to_dict(d.cfg),
    )
    summary.pop("validation_episodes", None)
    return {"checkpoint": str(out / "checkpoint"), **summary}


def reflector(d: DemoRun) -> dict[str, Any]:
    from reflector_service.train import train_reflector

    out = d.fresh("reflector")
    calibrate = [str(d.data / "calibrate")] if (d.data / "calibrate").is_dir() else []
    summary = train_reflector(
        d.cfg.reflector.model,
        d.cfg.reflector.train,
        d.world_data(),
        out,
        progress=d.progress,
        log=d.log,
        calibration_data=calibrate,
        loggers=d.cfg.loggers,
        config=to_dict(d.cfg),
    )
    return {
        "checkpoint": str(out / "best"),
        "best": summary.get("best"),
        "steps": summary.get("steps"),
    }


def post_train_imagined(d: DemoRun) -> dict[str, Any]:
    """LOOP in imagination, the method (co-evolution refines on the world model's own data)."""
    from cluster.driver import post_train

    calibrate = d.data / "calibrate"
    pt = dataclasses.replace(
        d.cfg.post_train,
        policy=str(d.ckpt / "sft"),
        simulator=d.results["simulator"]["checkpoint"],
        reflector=d.results["reflector"]["checkpoint"],
        data=[str(d.data / "demos")],
        coevolve_data=d.world_data(),
        # imagination's own threshold, chosen on the reflector's calibration store replayed
        # through the world model (the reflector's eta is chosen on real frames)
        eta_calibration_data=[str(calibrate)] if calibrate.is_dir() else [],
        run_dir=str(d.fresh("post_train")),
    )
    return post_train(dataclasses.replace(d.cfg, post_train=pt), progress=d.progress)


def oracle_config(cfg: ExperimentConfig, demos: Path) -> ExperimentConfig:
    """The oracle row's experiment: ``demo.real_env_set`` applied on top of ``cfg``, its anchor
    (if the recipe sets one) on the SFT's demos in ``demos``.

    Raises:
        ConfigError: an override that names no key or gives a bad value (named with its source).
    """
    from core.configlib import apply_overrides, from_dict

    data = to_dict(cfg)
    # the real env: no co-evolution (an imagination feature) and no imagined evaluation
    data["post_train"].update(
        world="real", coevolve_every=0, imagined_eval_states=0, eta_calibration_data=[]
    )
    data["learner"]["anchor_data"] = [str(demos)]
    data["learner"]["anchor_demos_per_task"] = cfg.demo.sft_demos_per_task
    apply_overrides(data, list(cfg.demo.real_env_set), source="demo.real_env_set")
    return from_dict(ExperimentConfig, data, source="demo.real_env_set")


def post_train_real(d: DemoRun) -> dict[str, Any]:
    """Post-training in the real env with its ground-truth reward (the oracle), with the recipe
    of ``demo.real_env_set``."""
    from cluster.driver import post_train

    if not d.cfg.demo.real_env_loop:
        return {"skipped": True}
    cfg = oracle_config(d.cfg, d.data / "demos")
    pt = dataclasses.replace(
        cfg.post_train, policy=str(d.ckpt / "sft"), run_dir=str(d.fresh("post_train_real"))
    )
    return post_train(dataclasses.replace(cfg, post_train=pt), progress=d.progress)


def sft_control(d: DemoRun) -> dict[str, Any]:
    """Continued SFT on the demos alone, as many optimizer steps as the oracle's learner took
    (one cosine cycle per iteration): the oracle's gain over it is what the search adds."""
    from cluster.metrics import read_metrics

    if not (d.cfg.demo.sft_control and "policy" in d.results["post_train_real"]):
        return {"skipped": True}
    metrics = read_metrics(d.run / "post_train_real")
    steps = [int(m["learner/optimizer_steps"]) for m in metrics if "learner/optimizer_steps" in m]
    if sum(steps) == 0:
        return {"skipped": True, "reason": "the oracle's learner took no optimizer step"}
    sft_cfg = dataclasses.replace(
        d.cfg.sft, steps=max(1, round(sum(steps) / len(steps))), cycles=len(steps), scale_steps=0
    )
    out = d.ckpt / "sft_control"
    if out.exists():
        shutil.rmtree(out)
    d.fine_tune(str(d.ckpt / "sft"), sft_cfg, out)
    d.log(f"continued SFT: {sft_cfg.cycles} cycles of {sft_cfg.steps} steps (the oracle's)")
    return {"checkpoint": str(out), "steps": sft_cfg.steps, "cycles": sft_cfg.cycles}


def evaluate(d: DemoRun) -> dict[str, Any]:
    """Every policy on the same real seeds: mean action (env and reflector termination) and
    sampled actions."""
    from cluster.evaluate import evaluate_policy

    out = {}
    policies = [("sft", d.ckpt / "sft"), ("post_trained", Path(d.results["post_train"]["policy"]))]
    if "policy" in d.results["post_train_real"]:
        policies.append(("post_trained_real", Path(d.results["post_train_real"]["policy"])))
    if "checkpoint" in d.results["sft_control"]:
        policies.append(("sft_control", Path(d.results["sft_control"]["checkpoint"])))
    for name, path in policies:
        out[name] = evaluate_policy(
            str(path),
            d.cfg.env,
            tasks=d.tasks,
            episodes_per_task=d.cfg.demo.eval_episodes_per_task,
            seed=d.cfg.seed,
            reflector_path=d.results["reflector"]["checkpoint"],
            modes=("ground_truth", "sampled", "reflector"),
            eta=d.cfg.rollout.eta,
            execute_steps=d.cfg.rollout.execute_steps,
            max_steps=d.cfg.rollout.eval_max_steps,
            videos=d.cfg.demo.video_episodes,
            out=d.run / "eval" / name,
            progress=d.progress,
        )
    return out


def report(d: DemoRun) -> dict[str, Any]:
    from cluster.metrics import read_metrics
    from cluster.report import demo_report

    real = d.run / "post_train_real"
    out = demo_report(
        d.results,
        read_metrics(d.run / "post_train"),
        seconds=time.perf_counter() - d.started,
        real_metrics=read_metrics(real) if "policy" in d.results["post_train_real"] else None,
        run_dir=d.run,
    )
    (d.run / "report.md").write_text(out["markdown"])
    return out


def _stage_beside(cfg: ExperimentConfig, stage: Stage, beside: str) -> None:
    """A stage in its own process on one CPU thread (``DemoRun.side_by_side``); its record
    names the stage it ran beside."""
    import torch

    torch.set_num_threads(1)
    name, body = stage
    run = DemoRun(cfg, progress=False, log=lambda line: print(line, flush=True))
    run.stage(name, lambda d: {**body(d), "beside": beside})


STAGES: list[Stage] = [
    ("collect", collect_data),
    ("pretrain", pretrain),
    ("sft", sft),
    ("explore", explore),
    ("simulator", simulator),
    ("reflector", reflector),
    ("post_train", post_train_imagined),
    ("post_train_real", post_train_real),
    ("sft_control", sft_control),
    ("evaluate", evaluate),
    ("report", report),
]
# stages that may run beside an earlier one (demo.side_by_side): the reflector does not read
# the world model
BESIDE = {"reflector": "simulator"}


def run_demo(
    cfg: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) every stage of ``STAGES``; returns the report."""
    d = DemoRun(cfg, progress, log)
    d.started = time.perf_counter()
    if cfg.demo.real_env_loop:
        oracle_config(cfg, d.data / "demos")  # a bad demo.real_env_set fails before any stage
    d.run.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, d.run / "config.yaml")
    for name, body in STAGES:
        if name in d.results:  # ran beside an earlier stage
            continue
        partner = [s for s in STAGES if BESIDE.get(s[0]) == name]
        if partner and cfg.demo.side_by_side:
            d.side_by_side((name, body), partner[0])
        else:
            d.stage(name, body)
    log(d.results["report"]["markdown"])
    log(f"[demo] run folder: {d.run}")
    return d.results["report"]
