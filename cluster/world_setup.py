"""What a post-training run needs of its world, imagined or real, built before Ray starts.

``imagined_setup``: simulator and reflector replicas, starts from real episodes (keyframes),
the imagined evaluation's fixed starts. ``real_setup``: the real env with its ground-truth
success as the reward (the oracle): no services, fresh real starts. Either gives the rollout
workers a world (``actors.worlds``) made from the started services' handles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.config import RolloutConfig
from actors.starts import EVAL_SEED_OFFSET, RealStartSampler
from actors.worlds import ImaginedWorld, RealWorld
from cluster.backends import EnvFactory, ReflectorFactory, SimulatorFactory
from cluster.config import ExperimentConfig, ReplicaConfig
from core.configlib import ConfigError
from reflector_service.checkpoint import termination_eta
from reflector_service.service import ReflectorService
from simulator_service.service import SimulatorService
from trajectories.initial_states import InitialStateSampler
from trajectories.store import EpisodeStore


@dataclass
class ServiceSpec:
    """A replicated model service of a world: metric prefix, actor class, placement, backend."""

    prefix: str
    cls: type
    replicas: ReplicaConfig
    factory: Any


@dataclass
class WorldSetup:
    """What a post-training run needs of its world, built before Ray starts (so bad input
    fails early): the rollout settings (eta resolved), the stream of training starts, the
    services to start, the imagined evaluation's fixed starts, and how to make the world the
    rollout workers act in from the started services' handles."""

    rollout: RolloutConfig
    sampler: Any
    services: list[ServiceSpec]
    eval_starts: list[Any]
    make_world: Callable[[dict[str, list[Any]]], Any]
    colocated: bool = False

    @property
    def replicated(self) -> list[ServiceSpec]:
        """The services started as Ray replicas (none where the workers hold the models)."""
        return [] if self.colocated else self.services


def imagined_setup(cfg: ExperimentConfig) -> WorldSetup:
    """Imagination: simulator and reflector replicas (or the workers' own copies, colocated),
    starts from real episodes (keyframes)."""
    pt, cc = cfg.post_train, cfg.cluster
    fakes = [k for k in ("simulator", "reflector") if getattr(pt, k) == "fake"]
    if pt.eta_calibration_data and fakes:
        raise ConfigError(
            "post_train.eta_calibration_data calibrates a trained reflector's threshold on a "
            f'trained world model\'s frames: post_train.{fakes[0]} is "fake"'
        )
    for d in pt.eta_calibration_data:
        if not Path(d).is_dir():
            raise ConfigError(f"post_train.eta_calibration_data: {d} is not an episode store")
    for key in ("simulator", "reflector"):
        if not getattr(pt, key):
            raise ConfigError(
                f"post_train.{key} is empty: post-training in imagination needs a {key} "
                f'checkpoint folder (or "fake" for orchestration tests), or set '
                f"post_train.world: real"
            )
    if not pt.data:
        raise ConfigError(
            "post_train.data is empty: name the episode stores whose real frames start the "
            "imagined rollouts (e.g. the expert demos)"
        )
    rollout = dataclasses.replace(cfg.rollout, eta=termination_eta(cfg.rollout.eta, pt.reflector))
    stores = [EpisodeStore(p) for p in pt.data]
    if pt.simulator != "fake":
        check_world_model(pt.simulator, stores)
    limits = stores[0].controller_limits()
    camera = stores[0].camera().to_dict()
    colocated = cc.placement == "colocated"
    # colocated, the models live on the rollout worker's device
    gpus = {
        k: cc.rollout_worker_gpus if colocated else getattr(cc, k).num_gpus
        for k in ("simulator", "reflector")
    }
    sim_f = SimulatorFactory(
        pt.simulator,
        camera,
        gpus["simulator"],
        seed=cfg.seed,
        fake_latency_ms=pt.fake_latency_ms,
        bf16=cc.simulator.bf16,
        compile=cc.simulator.compile,
        trace=cc.simulator.trace,
    )
    refl_f = ReflectorFactory(
        pt.reflector,
        gpus["reflector"],
        fake_latency_ms=pt.fake_latency_ms,
        bf16=cc.reflector.bf16,
    )
    starts = dict(keyframes=rollout.keyframes, context_frames=rollout.context_frames)
    services = [
        ServiceSpec("sim", SimulatorService, cc.simulator, sim_f),
        ServiceSpec("reflector", ReflectorService, cc.reflector, refl_f),
    ]

    def make_world(handles: dict[str, list[Any]]) -> ImaginedWorld:
        # colocated: the factories (current after co-evolution's use_simulator) build the
        # models in each worker's process; services: the replicas' handles. eta is read now:
        # the run may have calibrated it for imagined frames since (``post_train.eta_*``)
        sim, refl = (
            (services[0].factory, services[1].factory)
            if colocated
            else (handles["sim"], handles["reflector"])
        )
        eta = setup.rollout.eta
        return ImaginedWorld(sim, refl, eta=eta, limits=limits, reward=pt.imagined_reward)

    setup = WorldSetup(
        rollout=rollout,
        sampler=InitialStateSampler(stores, seed=cfg.seed, sources=("expert",), **starts),
        services=services,
        eval_starts=InitialStateSampler(
            stores,
            keyframes=False,
            context_frames=rollout.context_frames,
            seed=cfg.seed + EVAL_SEED_OFFSET,
            sources=("expert",),
        ).sample(pt.imagined_eval_states),
        make_world=make_world,
        colocated=colocated,
    )
    return setup


def check_world_model(path: str, stores: list[EpisodeStore]) -> None:
    """Refuse, before any actor starts, a world model that cannot serve these starts: an
    unreadable checkpoint (config, weight headers) or one of another frame size."""
    from safetensors import safe_open

    from simulator_service.checkpoint import read_config

    cfg = read_config(path)
    for name in ("model.safetensors", "ema.safetensors"):
        try:
            with safe_open(str(Path(path) / name), framework="pt") as f:
                f.keys()
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"post_train.simulator {path}: {name} is not a readable safetensors file: {first}"
            ) from None
    for store in stores:
        size = store.meta.get("image_size")
        if size not in (None, cfg.image_size):
            raise ConfigError(
                f"post_train.simulator {path} works at {cfg.image_size} px, the frames of "
                f"post_train.data {store.path} are {size} px"
            )


def real_setup(cfg: ExperimentConfig) -> WorldSetup:
    """The real env with its ground-truth success as the reward (the oracle): no services,
    fresh real starts (task, seed) per group, no imagined evaluation."""
    from envs.factory import task_names

    env_f = EnvFactory(cfg.env)
    return WorldSetup(
        rollout=cfg.rollout,
        sampler=RealStartSampler(task_names(cfg.env), seed=cfg.seed),
        services=[],
        eval_starts=[],
        make_world=lambda _handles: RealWorld(env_f, reward=cfg.post_train.real_reward),
    )
