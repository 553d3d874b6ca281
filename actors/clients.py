"""Clients through which a rollout worker reaches the world simulator and the reflector.

``Local*Client`` call a backend in the same process (tests, single-process runs). ``Ray*Client``
call service replicas: a group is pinned to one replica (by a stable hash of its key), and when
that replica dies the client waits for Ray to restart it, re-sends the group's context (its
first frame and the latest imagined frames for the simulator, every frame so far for the
reflector) and retries the request.
"""

from __future__ import annotations

import time
import zlib
from typing import Any, Protocol

import numpy as np


class SimulatorClient(Protocol):
    """A world simulator holding the imagined state of named groups of environments."""

    recoveries: int  # times a group's state was re-sent after a replica restart

    def reset(
        self, key: str, frames: np.ndarray, proprio: np.ndarray, *, common_noise: bool = False
    ) -> None:
        """frames: (N, T0, H, W, 3) uint8 context (last = current); proprio: (N, 8);
        ``common_noise``: the group's environments share the world model's sampling noise, so
        environments given the same actions stay in the same imagined state."""
        ...

    def step_many(self, requests: list[tuple]) -> list[np.ndarray]:
        """Next frames (N, H, W, 3) uint8 of several groups at once (one model call where the
        backend is local): (key, next_proprio (N, 8)[, active (N,) bool]) each; ended
        environments (not active) keep their last frame and cost no model compute."""
        ...

    def release(self, key: str) -> None: ...


class ReflectorClient(Protocol):
    """A reflector scoring named groups of environments incrementally."""

    recoveries: int

    def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        """Start N episodes from context frames (N, T0, H, W, 3); returns rewards (N,) now."""
        ...

    def score(self, key: str, frames: np.ndarray) -> np.ndarray:
        """Add one frame per environment (N, H, W, 3); returns rewards (N,) in [0, 1]."""
        ...

    def release(self, key: str) -> None: ...


class LocalSimulatorClient:
    """In-process client over a keyed simulator backend."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.recoveries = 0  # in-process: nothing to recover from

    def reset(
        self, key: str, frames: np.ndarray, proprio: np.ndarray, *, common_noise: bool = False
    ) -> None:
        self.backend.reset(key, frames, proprio, common_noise=common_noise)

    def step_many(self, requests: list[tuple]) -> list[np.ndarray]:
        return self.backend.step_batch(requests)

    def release(self, key: str) -> None:
        self.backend.release(key)


class LocalReflectorClient:
    """In-process client over a keyed reflector backend."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.recoveries = 0  # in-process: nothing to recover from

    def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        return self.backend.reset(key, instructions, frames)

    def score(self, key: str, frames: np.ndarray) -> np.ndarray:
        return self.backend.score_batch([(key, frames)])[0]

    def release(self, key: str) -> None:
        self.backend.release(key)


def _replica(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


class _RayClient:
    """Pinning and retry shared by both Ray clients."""

    def __init__(self, handles: list[Any], *, retries: int = 3, retry_wait_s: float = 1.0):
        if not handles:
            raise ValueError("a Ray client needs at least one service replica")
        self.handles = handles
        self.retries = retries
        self.retry_wait_s = retry_wait_s
        self.recoveries = 0

    def _handle(self, key: str) -> Any:
        return self.handles[_replica(key, len(self.handles))]

    def _call(self, key: str, method: str, *args: Any, recover=None) -> Any:
        """Call a replica; on its death (or, after a restart, its loss of this group, which
        it reports as KeyError) re-send the group's context with ``recover`` and retry."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        lost = (RayActorError, ActorDiedError, ActorUnavailableError)
        for attempt in range(self.retries + 1):
            try:
                return ray.get(getattr(self._handle(key), method).remote(*args))
            except (*lost, KeyError) as e:
                if attempt == self.retries or (isinstance(e, KeyError) and recover is None):
                    raise
                time.sleep(self.retry_wait_s * (attempt + 1))
                if recover is not None:
                    self.recoveries += 1
                    try:
                        recover()
                    except lost:
                        continue
        raise AssertionError("unreachable")

    def _call_many(self, method: str, calls: list[tuple[str, tuple, Any]]) -> list[Any]:
        """``_call`` of several groups: every request is sent before any answer is awaited
        (the replicas batch them together); a request that failed is retried alone, with its
        group's recovery. ``calls``: (key, args, recover) each."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        refs = [getattr(self._handle(key), method).remote(*args) for key, args, _ in calls]
        out = []
        for ref, (key, args, recover) in zip(refs, calls, strict=True):
            try:
                out.append(ray.get(ref))
            except (RayActorError, ActorDiedError, ActorUnavailableError, KeyError):
                out.append(self._call(key, method, *args, recover=recover))
        return out


class RaySimulatorClient(_RayClient):
    """Client of simulator replicas, with recovery after a replica restart."""

    def __init__(self, handles: list[Any], *, context_frames: int = 4, **kw: Any):
        super().__init__(handles, **kw)
        self.context_frames = context_frames
        self._groups: dict[str, dict[str, Any]] = {}

    def reset(
        self, key: str, frames: np.ndarray, proprio: np.ndarray, *, common_noise: bool = False
    ) -> None:
        self._groups[key] = {
            "first": frames[:, :1],
            "recent": list(frames.transpose(1, 0, 2, 3, 4)),
            "proprio": proprio,
            "common_noise": common_noise,
        }
        self._call(key, "reset", key, frames, proprio, common_noise)

    def _recover(self, key: str) -> None:
        g = self._groups[key]
        recent = g["recent"][-(self.context_frames - 1) :] if self.context_frames > 1 else []
        ctx = (
            np.concatenate([g["first"], np.stack(recent, axis=1)], axis=1) if recent else g["first"]
        )
        import ray

        ray.get(self._handle(key).reset.remote(key, ctx, g["proprio"], g["common_noise"]))

    def step_many(self, requests: list[tuple]) -> list[np.ndarray]:
        out = self._call_many(
            "step", [(r[0], r, lambda k=r[0]: self._recover(k)) for r in requests]
        )
        for (key, p, *_), frames in zip(requests, out, strict=True):
            g = self._groups[key]
            g["recent"] = (g["recent"] + [frames])[-self.context_frames :]
            g["proprio"] = p
        return out

    def release(self, key: str) -> None:
        self._groups.pop(key, None)
        try:
            self._call(key, "release", key)
        except Exception:  # a dead replica holds nothing to release
            pass


class RayReflectorClient(_RayClient):
    """Client of reflector replicas, with recovery after a replica restart."""

    def __init__(self, handles: list[Any], **kw: Any):
        super().__init__(handles, **kw)
        self._groups: dict[str, dict[str, Any]] = {}

    def reset(self, key: str, instructions: list[str], frames: np.ndarray) -> np.ndarray:
        self._groups[key] = {"instructions": instructions, "frames": [frames]}
        return self._call(key, "reset", key, instructions, frames)

    def _recover(self, key: str) -> None:
        import ray

        g = self._groups[key]
        ray.get(
            self._handle(key).reset.remote(
                key, g["instructions"], np.concatenate(g["frames"], axis=1)
            )
        )

    def score(self, key: str, frames: np.ndarray) -> np.ndarray:
        out = self._call(key, "score", key, frames, recover=lambda: self._recover(key))
        self._groups[key]["frames"].append(frames[:, None])
        return out

    def release(self, key: str) -> None:
        self._groups.pop(key, None)
        try:
            self._call(key, "release", key)
        except Exception:
            pass
