"""The experiment config: every component's config nested into one, loaded from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actors.config import IMAGINED_REWARDS, REAL_REWARDS, CollectConfig, RolloutConfig
from core.configlib import (
    ConfigError,
    apply_overrides,
    from_dict,
    require,
    to_dict,
    yaml_problem,
)
from core.tracking import check_loggers
from envs.config import EnvConfig
from learner.config import LearnerConfig
from policy.config import PolicyConfig, PretrainConfig, SFTConfig
from reflector_service.config import ReflectorConfig
from simulator_service.config import SimulatorConfig


@dataclass
class ReplicaConfig:
    """A replicated model service (world simulator or reflector).

    Attributes:
        replicas: number of actor replicas.
        num_gpus: GPUs per replica (a fraction shares a GPU; 0 on CPU).
        num_cpus: CPUs reserved per replica.
        max_batch_size: environments per model call at most (dynamic batching).
        max_wait_ms: how long a request may wait for others to fill a batch.
        max_restarts: times Ray restarts a dead replica.
        bf16: run the model's forward passes in bf16 autocast (a GPU setting: on CPUs without
            AVX512-BF16, bf16 convolutions are ~36x slower than fp32).
        compile: ``torch.compile`` the world model's U-Net for sampling (simulator only; the
            first calls compile, seconds to minutes).
        trace: run the world model's U-Net as a frozen TorchScript graph, traced at its first
            call in well under a second (simulator only; a CPU path: 1.2-1.3x per sampling
            call of the demo's world model on one core, docs/RESULTS.md; not with bf16 or
            compile).
    """

    replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_restarts: int = 3
    bf16: bool = False
    compile: bool = False
    trace: bool = False

    def __post_init__(self) -> None:
        require(
            not (self.trace and (self.bf16 or self.compile)),
            "trace is the fp32 CPU path of the U-Net: not with bf16 or compile",
        )
        require(self.replicas >= 1, f"replicas must be >= 1, got {self.replicas}")
        require(self.num_gpus >= 0 and self.num_cpus >= 0, "num_gpus and num_cpus must be >= 0")
        require(self.max_batch_size >= 1, "max_batch_size must be >= 1")
        require(self.max_wait_ms >= 0, "max_wait_ms must be >= 0")
        require(self.max_restarts >= 0, "max_restarts must be >= 0")


PLACEMENTS = ("services", "colocated")


@dataclass
class ClusterConfig:
    """Where every role runs. Roles never pick devices themselves: this section places them.

    Attributes:
        address: Ray cluster to join ("auto", "ray://...", an IP:port); None starts a local
            Ray in-process unless RAY_ADDRESS is set.
        num_cpus: CPUs of a local in-process Ray (None: all).
        dashboard: start the dashboard with a local Ray (127.0.0.1:8265).
        rollout_workers: number of rollout workers.
        rollout_worker_gpus / rollout_worker_cpus: resources per rollout worker (policy copy).
        learners: learner workers (data parallel: each takes a share of every minibatch and
            gradients are all-reduced through torch.distributed, gloo on CPU, NCCL on GPU).
        learner_gpus / learner_cpus: resources per learner worker.
        worker_restarts: times Ray restarts a dead rollout or evaluation worker; the driver
            then gives it the current weights and world and runs its calls again (the same
            starts and seeds), so a run loses no iteration, trajectory or curve point; a worker
            that dies more often stops the run with one line naming it. A worker restarted
            between calls is noticed by the weights version it reports.
        placement: where the world model and the reflector run in imagination. "services":
            replicas shared by every rollout worker (``simulator`` / ``reflector`` below), each
            step a Ray call that the replicas batch across workers (GPU clusters: one replica
            per GPU); "colocated": each rollout worker holds its own copy of both models
            beside the policy (its resources are ``rollout_worker_*``) and steps all its groups
            in one model call each, with no Ray call per step (one machine, or a worker per
            GPU). The same seeds give the same trajectories in either.
        simulator / reflector: the replicated model services (``placement: services``; their
            ``bf16`` / ``compile`` / ``trace`` apply to the colocated copies too).
    """

    address: str | None = None
    num_cpus: int | None = None
    dashboard: bool = False
    rollout_workers: int = 2
    rollout_worker_gpus: float = 0.0
    rollout_worker_cpus: float = 1.0
    learners: int = 1
    learner_gpus: float = 0.0
    learner_cpus: float = 1.0
    worker_restarts: int = 3
    placement: str = "services"
    simulator: ReplicaConfig = field(default_factory=ReplicaConfig)
    reflector: ReplicaConfig = field(default_factory=ReplicaConfig)

    def __post_init__(self) -> None:
        require(
            self.rollout_workers >= 1, f"rollout_workers must be >= 1, got {self.rollout_workers}"
        )
        require(self.num_cpus is None or self.num_cpus >= 1, "num_cpus must be >= 1")
        require(self.learners >= 1, f"learners must be >= 1, got {self.learners}")
        require(self.worker_restarts >= 0, "cluster.worker_restarts must be >= 0")
        require(
            self.placement in PLACEMENTS,
            f"cluster.placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}",
        )
        for name in ("rollout_worker_gpus", "rollout_worker_cpus", "learner_gpus", "learner_cpus"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0")
        require(
            not self.reflector.compile,
            "cluster.reflector.compile is not supported (the reflector's LLM grows a key/value "
            "cache every step); use cluster.reflector.bf16",
        )
        require(
            not self.reflector.trace,
            "cluster.reflector.trace is not supported (only the world model's U-Net is traced)",
        )

    def gpus_needed(self, *, services: bool = True) -> float:
        """GPUs the placement asks for in total (``services``: the simulator and reflector
        replicas too; a real-env run or the colocated placement starts none)."""
        need = self.rollout_workers * self.rollout_worker_gpus + self.learners * self.learner_gpus
        if services:
            need += (
                self.simulator.replicas * self.simulator.num_gpus
                + self.reflector.replicas * self.reflector.num_gpus
            )
        return need

    def cpus_needed(self, *, services: bool = True) -> float:
        """CPUs the placement reserves in total (``services`` as for ``gpus_needed``)."""
        need = self.rollout_workers * self.rollout_worker_cpus + self.learners * self.learner_cpus
        if services:
            need += (
                self.simulator.replicas * self.simulator.num_cpus
                + self.reflector.replicas * self.reflector.num_cpus
            )
        return need


WORLDS = ("imagined", "real")


@dataclass
class PostTrainConfig:
    """The LOOP post-training run (``rehearse post-train``).

    Attributes:
        policy: SFT policy checkpoint folder to start from.
        simulator: world simulator checkpoint folder, or "fake" (a deterministic stand-in for
            orchestration tests, only when written); required in imagination.
        reflector: reflector checkpoint folder, or "fake"; required in imagination.
        data: episode stores whose real frames give the initial states.
        iterations: LOOP iterations (rollouts -> update -> weight broadcast).
        checkpoint_every: save trainable weights, optimizer, RNG and data cursor every K
            iterations (and at the end).
        run_dir: where checkpoints, metrics and videos go ({name} is the experiment name).
        video_every: save a video of imagined rollouts every K iterations (0: never).
        fake_latency_ms: fixed per-call latency of the fake simulator / reflector.
        imagined_eval_states: imagined evaluation before the first update and after the last:
            this many fixed real starts (step 0 of episodes in ``data``), each rolled out as a
            group with the mean action, like the real-env evaluation; the same starts for both
            policies, so imagined and real gains can be compared (0: none).
        world: where rollouts happen. "imagined" (the method): the world simulator and the
            reflector. "real": the real env of the ``env`` section with its ground-truth
            success as the reward, same groups, horizon and update (RIPT-VLA's setting): the
            oracle that tells what imagination costs. A real run needs neither ``simulator``,
            ``reflector`` nor ``data`` and skips the imagined evaluation.
        real_reward: the reward of ``world: real``. "success": 1 at the env's success, else 0.
            "progress": 1 at success, else half the best task progress the episode reached
            (reach the right object, grasp it, carry it; ``envs.tabletop_tasks.task_progress``;
            the tabletop env only): the same goal with a signal in the failures too.
        imagined_reward: the reward of ``world: imagined``. "reflector": the reflector's R at
            the rollout's end (World-Env's continuous reward). "success": 1 where the reflector
            ended the rollout (R > eta), else 0, as the oracle's "success" is: a group is mixed
            only where imagination saw a success. With the continuous R nearly every group's
            rewards differ a little, and ``learner.objective: filtered_l1`` then imitates the
            chunks of slightly higher R, which replayed in the real env were no better than
            the others (``rehearse eval-search``; docs/RESULTS.md, session 23). Unused with
            ``world: real``.
        train_projector: post-train the projector (vision features -> LLM tokens) too: it
            joins the trainable part (the learner's head group, published and checkpointed);
            the start checkpoint's own ``policy.train_projector`` counts as well.
        eval_every: the learning curve: every this many iterations (and before the first),
            real-env success of the current policy with the mean action and sampled, on
            ``eval_episodes_per_task`` fixed starts per task of its own (never the final
            evaluation's), logged as ``eval/*`` and drawn in ``learning_curve.png`` (0: none).
        eval_episodes_per_task: starts per task of the learning curve (and of the imagined-vs-
            real agreement).
        coevolve_every: WoVR's co-evolution in imagination: every this many iterations the
            current policy collects ``coevolve_episodes_per_task`` real episodes per task, the
            world model is refined on them (plus ``coevolve_data``) for ``coevolve_simulator_s``
            seconds from its current weights, and the simulator replicas restart with it;
            imagined-vs-real agreement is measured before and after (0: never).
        coevolve_episodes_per_task: real episodes per task per refinement.
        coevolve_simulator_s: training seconds of each refinement.
        coevolve_data: episode stores mixed into every refinement besides the new episodes
            (e.g. the world model's own training data, against forgetting).
        overlap: roll out iteration k + 1 while the learner updates on iteration k's batch
            (one step off the policy: those rollouts act with the weights before the update,
            and the PPO ratio corrects for it; ``learner.max_staleness`` must allow 1). Not
            before a co-evolution round (its next rollouts need the refined world model); a
            resume rolls the prefetched round out again with the checkpoint's weights.
        eta_calibration_data: held-out real episode stores, failures among them (never the
            world model's or the reflector's training data), on which the run chooses the
            reflector's threshold for imagined frames (``cluster.imagined_eta``): replayed open
            loop through the world model with their recorded actions over the rollout horizon,
            scored by the reflector and labeled with their real success, eta is the one that
            misses the fewest successes while stopping at most ``eta_max_false_stops`` of the
            episodes before a real success. The reflector's own eta is chosen on real frames,
            where successes score higher: at it, imagination registers few of the successes it
            produces. Chosen at the start and again after every co-evolution refinement,
            logged, and written to ``eta_calibration.json``. Unused where ``rollout.eta`` is
            set (a warning says so); imagination only (empty: the reflector checkpoint's eta).
        eta_max_false_stops: see ``eta_calibration_data``.
    """

    policy: str = ""
    simulator: str = ""
    reflector: str = ""
    data: list[str] = field(default_factory=list)
    iterations: int = 10
    checkpoint_every: int = 5
    run_dir: str = "runs/{name}"
    video_every: int = 0
    fake_latency_ms: float = 0.0
    imagined_eval_states: int = 0
    world: str = "imagined"
    real_reward: str = "success"
    imagined_reward: str = "reflector"
    train_projector: bool = False
    eval_every: int = 0
    eval_episodes_per_task: int = 4
    coevolve_every: int = 0
    coevolve_episodes_per_task: int = 5
    coevolve_simulator_s: float = 120.0
    coevolve_data: list[str] = field(default_factory=list)
    overlap: bool = False
    eta_calibration_data: list[str] = field(default_factory=list)
    eta_max_false_stops: float = 0.05

    def __post_init__(self) -> None:
        require(
            self.world in WORLDS,
            f"post_train.world must be one of {list(WORLDS)}, got {self.world!r}",
        )
        require(
            self.real_reward in REAL_REWARDS,
            f"post_train.real_reward must be one of {list(REAL_REWARDS)}, got {self.real_reward!r}",
        )
        require(
            self.real_reward == "success" or self.world == "real",
            "post_train.real_reward is the reward of post_train.world: real (in imagination the "
            "reflector gives the reward)",
        )
        require(
            self.imagined_reward in IMAGINED_REWARDS,
            f"post_train.imagined_reward must be one of {list(IMAGINED_REWARDS)}, got "
            f"{self.imagined_reward!r}",
        )
        require(self.imagined_eval_states >= 0, "post_train.imagined_eval_states must be >= 0")
        require(self.iterations >= 1, f"post_train.iterations must be >= 1, got {self.iterations}")
        require(self.checkpoint_every >= 1, "post_train.checkpoint_every must be >= 1")
        require(self.video_every >= 0, "post_train.video_every must be >= 0")
        require(self.fake_latency_ms >= 0, "post_train.fake_latency_ms must be >= 0")
        require(self.eval_every >= 0, "post_train.eval_every must be >= 0 (0: no learning curve)")
        require(self.eval_episodes_per_task >= 1, "post_train.eval_episodes_per_task must be >= 1")
        require(self.coevolve_every >= 0, "post_train.coevolve_every must be >= 0 (0: never)")
        require(
            self.eval_every <= self.iterations,
            f"post_train.eval_every ({self.eval_every}) is longer than the run "
            f"(post_train.iterations = {self.iterations}): the learning curve would be empty",
        )
        require(
            self.coevolve_every < self.iterations or self.coevolve_every == 0,
            f"post_train.coevolve_every ({self.coevolve_every}) is not shorter than the run "
            f"(post_train.iterations = {self.iterations}): no refinement would happen (rounds "
            "run between iterations, never after the last)",
        )
        require(
            self.coevolve_episodes_per_task >= 1,
            "post_train.coevolve_episodes_per_task must be >= 1",
        )
        require(self.coevolve_simulator_s > 0, "post_train.coevolve_simulator_s must be > 0")
        require(
            self.coevolve_every == 0 or self.world == "imagined",
            "post_train.coevolve_every refines the world model: it needs post_train.world: "
            "imagined",
        )
        require(
            not self.eta_calibration_data or self.world == "imagined",
            "post_train.eta_calibration_data chooses the reflector's threshold for imagined "
            "frames: it needs post_train.world: imagined",
        )
        require(
            0.0 <= self.eta_max_false_stops < 1.0,
            f"post_train.eta_max_false_stops must be in [0, 1), got {self.eta_max_false_stops}",
        )


@dataclass
class DemoConfig:
    """``rehearse demo``: the whole pipeline on the embedded default (data sizes per stage).

    Attributes:
        run_dir: the run folder ({name} is the experiment name).
        sft_demos_per_task: expert demos per task the policy is fine-tuned on (the paper's 5).
        val_demos_per_task: extra expert demos per task for SFT validation.
        expert_episodes_per_task: expert episodes for the world model and reflector.
        exploration_episodes_per_task: Laplace-perturbed expert episodes (failures included).
        policy_episodes_per_task: self-exploration episodes of the SFT policy.
        calibration_episodes_per_task: Laplace-perturbed expert episodes (other seeds) that
            only choose the reflector's termination rule (hold, eta), never trained on: the
            validation split holds too few failures to bound early termination at 5%.
        steps_after_success: frames recorded past the first success (reflector labels).
        eval_episodes_per_task: real-env evaluation episodes per task and policy.
        video_episodes: real-env GIFs per evaluated policy.
        real_env_loop: also post-train the SFT policy in the real env with its ground-truth
            success as the reward (``post_train.world: real``: the oracle that shows what the
            world model and the reflector cost) and evaluate that policy beside the others.
        real_env_set: ``--set`` overrides of the oracle row alone (``KEY=VALUE`` strings applied
            on top of the experiment): the recipe and budget it runs where they differ from the
            imagination row's (empty: the same LOOP, groups, horizon and iterations). When it
            sets ``learner.anchor_weight``, the anchor is the SFT's own demos
            (``learner.anchor_data`` and ``anchor_demos_per_task`` filled in by the demo).
        sft_control: also continue the SFT on its demos alone for as many optimizer steps as
            the oracle row's learner took (one fresh cosine cycle per post-training iteration)
            and evaluate it beside the others: what supervision alone adds, with no reward, so
            the oracle's gain over it is what the search itself adds.
        pretrain_vision: first pretrain the vision towers (``rehearse pretrain``, the
            ``pretrain`` section) and start the SFT from them.
        side_by_side: train the reflector beside the world model, in a second process, each on
            one CPU thread (``cluster.demo.BESIDE``): on 2 cores each then runs at its
            one-thread speed, where two threads make one run only 1.3-1.4x faster, so the world
            model's time budget can be what the two took one after the other.
    """

    run_dir: str = "runs/{name}"
    sft_demos_per_task: int = 5
    val_demos_per_task: int = 1
    expert_episodes_per_task: int = 25
    exploration_episodes_per_task: int = 25
    policy_episodes_per_task: int = 10
    calibration_episodes_per_task: int = 25
    steps_after_success: int = 5
    eval_episodes_per_task: int = 13
    video_episodes: int = 2
    real_env_loop: bool = True
    real_env_set: list[str] = field(default_factory=list)
    sft_control: bool = True
    pretrain_vision: bool = False
    side_by_side: bool = False

    def __post_init__(self) -> None:
        for name in ("sft_demos_per_task", "expert_episodes_per_task", "eval_episodes_per_task"):
            require(getattr(self, name) >= 1, f"demo.{name} must be >= 1")
        for name in (
            "val_demos_per_task",
            "exploration_episodes_per_task",
            "policy_episodes_per_task",
            "calibration_episodes_per_task",
            "steps_after_success",
            "video_episodes",
        ):
            require(getattr(self, name) >= 0, f"demo.{name} must be >= 0")
        bad = [x for x in self.real_env_set if not isinstance(x, str) or "=" not in x]
        require(not bad, f"demo.real_env_set holds KEY=VALUE strings, got {bad!r}")


@dataclass
class ExperimentConfig:
    """One experiment. Each section is the config dataclass of one component.

    Attributes:
        name: experiment name (used for run folders).
        seed: base seed; workers use seed + worker index.
        env: the real environment.
        collect: real-environment data collection.
        policy: the VLA policy (preset, LoRA, heads).
        pretrain: vision pretraining before the SFT (``rehearse pretrain``).
        sft: supervised fine-tuning on few demos.
        simulator: the world simulator and its training.
        reflector: the reward model and its training.
        learner: LOOP updates (optimizer, PPO clip, RLOO groups).
        rollout: imagined rollouts and real-env evaluation.
        cluster: placement of every role on the Ray cluster.
        post_train: the LOOP post-training run.
        demo: data sizes of ``rehearse demo``.
        loggers: experiment trackers that receive the scalars of every training command (sft,
            train-simulator, train-reflector, post-train) besides its own JSON record:
            ``tensorboard`` (events in the output folder), ``wandb`` (a Weights & Biases run,
            offline unless WANDB_MODE says otherwise; ``core/tracking.py``).
    """

    name: str = "experiment"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    reflector: ReflectorConfig = field(default_factory=ReflectorConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    post_train: PostTrainConfig = field(default_factory=PostTrainConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self) -> None:
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check_loggers(self.loggers)
        require(
            not self.post_train.overlap or self.learner.max_staleness >= 1,
            "post_train.overlap rolls out one version behind the learner: set "
            f"learner.max_staleness >= 1 (it is {self.learner.max_staleness}) or overlap: false",
        )
        require(
            self.rollout.mirrored == (self.learner.advantage == "rloo_mirrored"),
            "rollout.mirrored and learner.advantage: rloo_mirrored go together (a mirrored "
            "rollout's baseline must leave out its mirror image, and unmirrored groups have no "
            f"pairs): got rollout.mirrored={self.rollout.mirrored}, "
            f"learner.advantage={self.learner.advantage!r}",
        )


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Load an experiment config from YAML (defaults where the file is silent).

    Args:
        path: YAML file; None gives the defaults.
        overrides: ``key.sub=value`` strings applied on top (values parsed as YAML).
    Raises:
        ConfigError: one message naming the key and the file.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {yaml_problem(e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    if overrides:
        apply_overrides(data, overrides)
        source = f"{source} (with --set overrides)"
    return from_dict(ExperimentConfig, data, source=source)


def reference_markdown() -> str:
    """docs/CONFIG.md: every key of ``ExperimentConfig`` with its type, default and meaning, read
    from the config dataclasses (``rehearse config docs``; a test keeps the file current)."""
    from core.configdoc import markdown

    return markdown(
        ExperimentConfig(),
        title="Config reference",
        intro=(
            "Every key of an experiment config, generated from the config dataclasses by "
            "`rehearse config docs --out docs/CONFIG.md` (a test fails when this page is out of "
            "date). Set keys in a YAML file (`--config`) or one at a time (`--set "
            "learner.lr_lora=5e-5`); `rehearse config show --config FILE` prints the resolved "
            "values. `null` where a key takes its value from a checkpoint or the environment."
        ),
    )


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the full resolved config as YAML (atomically)."""
    from core.fsutil import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = ["ExperimentConfig", "load_config", "dump_config", "reference_markdown", "ConfigError"]
