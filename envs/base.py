"""The one environment interface that every real environment implements.

Observations follow LIBERO / OpenVLA-OFT conventions: a third-person RGB image, an optional wrist
image, an 8-D proprio state (EE position 3 + EE orientation as axis-angle 3 + gripper finger
positions 2) and the instruction. Actions are 7-D with LIBERO's OSC_POSE semantics: normalized
delta position (3) and delta rotation (3) in [-1, 1], scaled by the controller limits, then the
gripper command (-1 open, +1 close). The camera's intrinsics and extrinsics are exposed so the
world simulator can project the end effector onto the image (action maps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

PROPRIO_DIM = 8  # EE pos (3) + EE axis-angle (3) + gripper finger positions (2)
ACTION_DIM = 7  # delta pos (3) + delta rot (3) + gripper (1)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in OpenCV convention (x right, y down, z forward).

    Attributes:
        intrinsics: (3, 3) K with fx, fy, cx, cy in pixels; pixel centers at integer coordinates.
        extrinsics: (4, 4) world-to-camera transform.
        height, width: image size in pixels.
        flip180: the image is rotated 180 degrees after rendering (LIBERO / OpenVLA-OFT's
            convention); projections return coordinates in the flipped image.
    """

    intrinsics: np.ndarray
    extrinsics: np.ndarray
    height: int
    width: int
    flip180: bool = False

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points to pixel coordinates.

        Args:
            points: (..., 3) world coordinates.
        Returns:
            uv: (..., 2) pixel coordinates (u = column, v = row) in the image as observed.
            depth: (...,) camera-frame z (positive in front of the camera).
        """
        pts = np.asarray(points, dtype=np.float64)
        cam = pts @ self.extrinsics[:3, :3].T + self.extrinsics[:3, 3]  # (..., 3)
        z = cam[..., 2]
        safe_z = np.where(np.abs(z) < 1e-9, 1e-9, z)
        u = self.intrinsics[0, 0] * cam[..., 0] / safe_z + self.intrinsics[0, 2]
        v = self.intrinsics[1, 1] * cam[..., 1] / safe_z + self.intrinsics[1, 2]
        if self.flip180:
            u = (self.width - 1) - u
            v = (self.height - 1) - v
        return np.stack([u, v], axis=-1), z

    def to_dict(self) -> dict[str, Any]:
        return {
            "intrinsics": np.asarray(self.intrinsics).tolist(),
            "extrinsics": np.asarray(self.extrinsics).tolist(),
            "height": int(self.height),
            "width": int(self.width),
            "flip180": bool(self.flip180),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        try:
            k = np.asarray(d["intrinsics"], dtype=np.float64)
            e = np.asarray(d["extrinsics"], dtype=np.float64)
            cam = cls(k, e, int(d["height"]), int(d["width"]), bool(d.get("flip180", False)))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"camera description is incomplete or malformed: {err}") from None
        if k.shape != (3, 3) or e.shape != (4, 4):
            raise ValueError(
                f"camera matrices must be (3, 3) and (4, 4), got {k.shape} and {e.shape}"
            )
        return cam


@dataclass
class Observation:
    """One observation. image: (H, W, 3) uint8; wrist_image: (H, W, 3) uint8 or None;
    proprio: (8,) float32; instruction: the task's language goal."""

    image: np.ndarray
    proprio: np.ndarray
    instruction: str
    wrist_image: np.ndarray | None = None


@dataclass
class StepResult:
    """What ``Env.step`` returns: the next observation, whether the task is achieved now,
    whether the episode is over (success or step limit), and diagnostics."""

    obs: Observation
    success: bool
    done: bool
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):  # allows `obs, success, done, info = env.step(a)`
        return iter((self.obs, self.success, self.done, self.info))


def observation_batch(obs: list[Observation]) -> dict[str, Any]:
    """Stack observations into the batch dict a policy reads: "image" (B, H, W, 3), "wrist_image"
    (B, H, W, 3) or None, "proprio" (B, 8) float32, "instruction" list of B strings."""
    wrist = [o.wrist_image for o in obs]
    return {
        "image": np.stack([o.image for o in obs]),
        "wrist_image": None if wrist[0] is None else np.stack(wrist),
        "proprio": np.stack([o.proprio for o in obs]).astype(np.float32),
        "instruction": [o.instruction for o in obs],
    }


def check_action(action: Any) -> np.ndarray:
    """The 7-D action as float64; ValueError unless it is a finite array of shape (7,)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,) or not np.all(np.isfinite(a)):
        raise ValueError(
            f"action must be a finite array of shape ({ACTION_DIM},), got shape {a.shape}"
            + ("" if a.shape != (ACTION_DIM,) else " with non-finite values")
        )
    return a


class Env(Protocol):
    """Interface of every real environment (tabletop, LIBERO)."""

    camera: Camera
    max_steps: int
    action_dim: int
    limits: Any  # controller limits (scales of the normalized actions), with ``to_dict()``

    @property
    def task_names(self) -> list[str]: ...

    def instruction(self, task: str) -> str: ...

    def reset(self, task: str, *, seed: int | None = None, init_state: Any = None) -> Observation:
        """Start an episode of ``task`` from a seed or a stored initial state."""
        ...

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one 7-D action; raises ValueError on a wrong shape or non-finite values."""
        ...

    def meta(self) -> dict[str, Any]:
        """JSON-able description for episode-store metadata: "env" (name), "image_size",
        "camera" (``Camera.to_dict``), "controller_limits", "max_steps", "tasks"."""
        ...

    def get_state(self) -> Any:
        """A snapshot from which ``reset(task, init_state=...)`` restores this exact state."""
        ...

    def close(self) -> None:
        """Free simulator and renderer resources (LIBERO's EGL context must go before the
        interpreter shuts down, or its finalizer prints an error)."""
        ...
