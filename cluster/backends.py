"""Picklable factories that build each role's model inside its actor (on its own device)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.base import Camera
from envs.config import EnvConfig


def _check_folder(path: str, what: str, key: str) -> None:
    if not path:
        raise ValueError(f"post_train.{key} is empty: name the {what} checkpoint folder")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{what} checkpoint {path} (post_train.{key}) does not exist")


@dataclass
class PolicyFactory:
    """Loads the policy checkpoint folder on the actor's device; ``train_projector`` adds the
    projector to its trainable part (``post_train.train_projector``)."""

    path: str
    num_gpus: float = 0.0
    train_projector: bool = False

    def __post_init__(self) -> None:
        _check_folder(self.path, "policy", "policy")

    def __call__(self) -> Any:
        from cluster.placement import device_for
        from policy.checkpoint import load_policy

        policy = load_policy(self.path, device=device_for(self.num_gpus))
        if self.train_projector:
            policy.cfg.train_projector = True
            policy.freeze_to_trainable()
        return policy


@dataclass
class SimulatorFactory:
    """Builds the keyed simulator backend: a trained world model, or the fake one ("fake")."""

    path: str
    camera: dict
    num_gpus: float = 0.0
    seed: int = 0
    fake_latency_ms: float = 0.0
    bf16: bool = False
    compile: bool = False
    trace: bool = False

    def __post_init__(self) -> None:
        if self.path != "fake":
            _check_folder(self.path, "world simulator", "simulator")

    def __call__(self) -> Any:
        camera = Camera.from_dict(self.camera)
        if self.path == "fake":
            from simulator_service.fake import FakeWorldSimulator

            return FakeWorldSimulator(camera, latency_s=self.fake_latency_ms / 1000)
        from cluster.placement import device_for
        from simulator_service.checkpoint import load_world_model
        from simulator_service.keyed import KeyedWorldSimulator

        model = load_world_model(self.path).to(device_for(self.num_gpus))
        model.use_fast_path(
            bf16=self.bf16, compile=self.compile, trace=self.trace, channels_last=True
        )
        return KeyedWorldSimulator(model, camera, seed=self.seed)


@dataclass
class ReflectorFactory:
    """Builds the keyed reflector backend: a trained reflector, or the fake one ("fake")."""

    path: str
    num_gpus: float = 0.0
    fake_latency_ms: float = 0.0
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.path != "fake":
            _check_folder(self.path, "reflector", "reflector")

    def __call__(self) -> Any:
        if self.path == "fake":
            from reflector_service.fake import FakeReflector

            return FakeReflector(latency_s=self.fake_latency_ms / 1000)
        from cluster.placement import device_for
        from reflector_service.checkpoint import load_reflector
        from reflector_service.keyed import KeyedReflector

        model = load_reflector(self.path, device=device_for(self.num_gpus))
        return KeyedReflector(model, bf16=self.bf16)


class EnvFactory:
    """Picklable builder of the real env."""

    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg

    def __call__(self) -> Any:
        from envs.factory import make_env

        return make_env(self.cfg)
