"""Kinematics of the end effector: 7-D OSC_POSE-style action -> next 8-D proprio state.

The proprio state is LIBERO's layout: EE position (3, meters), EE orientation as axis-angle
(3, radians), gripper finger positions (2: +w and -w, w = half opening). An action moves the
EE by ``clip(a[:3], -1, 1) * pos_limit``, rotates it by ``R(clip(a[3:6], -1, 1) * rot_limit) @ R``
(world-frame delta, as OSC_POSE does), and moves the fingers toward open (a[6] <= 0) or closed
(a[6] > 0) by at most ``gripper_rate`` per step. The position is clipped to the workspace box.

This is the same function the tabletop environment uses to move its arm, so world-model
rollouts (``s_{t+1} = kinematics(s_t, a_t)``, no network) match the real environment whenever
nothing blocks the arm. Plain NumPy; torch tensors are accepted (computed in NumPy, returned as
tensors on the same device and dtype, not differentiable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.configlib import require
from envs.base import ACTION_DIM, PROPRIO_DIM


@dataclass(frozen=True)
class ControllerLimits:
    """Scales of the normalized action and the reachable workspace.

    Attributes:
        pos_limit: meters moved per step at |a| = 1.
        rot_limit: radians rotated per step at |a| = 1 (0.5 like robosuite's OSC_POSE).
        gripper_rate: meters each finger moves per step toward its target.
        finger_open: finger position when fully open (closed is 0).
        workspace_low, workspace_high: (x, y, z) box the EE position is clipped to.
    """

    pos_limit: float = 0.02
    rot_limit: float = 0.5
    gripper_rate: float = 0.02
    finger_open: float = 0.04
    workspace_low: tuple[float, float, float] = (-0.22, -0.20, 0.01)
    workspace_high: tuple[float, float, float] = (0.22, 0.22, 0.25)

    def __post_init__(self) -> None:
        require(self.pos_limit > 0, f"pos_limit must be > 0 meters, got {self.pos_limit}")
        require(self.rot_limit > 0, f"rot_limit must be > 0 radians, got {self.rot_limit}")
        require(self.gripper_rate > 0, f"gripper_rate must be > 0, got {self.gripper_rate}")
        require(self.finger_open > 0, f"finger_open must be > 0, got {self.finger_open}")
        require(
            len(self.workspace_low) == 3 and len(self.workspace_high) == 3,
            "workspace_low and workspace_high must each hold 3 numbers (x, y, z)",
        )
        require(
            all(lo < hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)),
            f"workspace_low {self.workspace_low} must be below workspace_high "
            f"{self.workspace_high} on every axis",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (for episode-store metadata)."""
        d = asdict(self)
        d["workspace_low"] = list(self.workspace_low)
        d["workspace_high"] = list(self.workspace_high)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControllerLimits:
        """Inverse of ``to_dict``; raises ValueError naming unknown or malformed keys."""
        if not isinstance(d, dict):
            raise ValueError(f"controller limits must be a mapping, got {type(d).__name__}")
        names = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown controller limit keys {unknown}; valid: {sorted(names)}")
        kw = dict(d)
        for k in ("workspace_low", "workspace_high"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# rotations (batched, float64)


def _quat_product_table() -> np.ndarray:
    """(16, 4) table T with (a * b) = (a outer b).reshape(16) @ T for quaternions (w, x, y, z)."""
    t = np.zeros((4, 4, 4))
    # (i, j) -> (k, sign): e_i * e_j = sign * e_k with e_0 = 1, e_1 = i, e_2 = j, e_3 = k
    rules = {
        (0, 0): (0, 1),
        (0, 1): (1, 1),
        (0, 2): (2, 1),
        (0, 3): (3, 1),
        (1, 0): (1, 1),
        (1, 1): (0, -1),
        (1, 2): (3, 1),
        (1, 3): (2, -1),
        (2, 0): (2, 1),
        (2, 1): (3, -1),
        (2, 2): (0, -1),
        (2, 3): (1, 1),
        (3, 0): (3, 1),
        (3, 1): (2, 1),
        (3, 2): (1, -1),
        (3, 3): (0, -1),
    }
    for (i, j), (k, sign) in rules.items():
        t[i, j, k] = sign
    return t.reshape(16, 4)


def _quat_matrix_table() -> np.ndarray:
    """(16, 9) table M with R(q).reshape(9) = (q outer q).reshape(16) @ M, unit q = (w, x, y, z)."""
    m = np.zeros((4, 4, 3, 3))
    w, x, y, z = 0, 1, 2, 3

    def add(r, c, terms):
        for coef, i, j in terms:
            m[i, j, r, c] += coef

    add(0, 0, [(1, w, w), (1, x, x), (-1, y, y), (-1, z, z)])
    add(1, 1, [(1, w, w), (-1, x, x), (1, y, y), (-1, z, z)])
    add(2, 2, [(1, w, w), (-1, x, x), (-1, y, y), (1, z, z)])
    add(0, 1, [(2, x, y), (-2, w, z)])
    add(1, 0, [(2, x, y), (2, w, z)])
    add(0, 2, [(2, x, z), (2, w, y)])
    add(2, 0, [(2, x, z), (-2, w, y)])
    add(1, 2, [(2, y, z), (-2, w, x)])
    add(2, 1, [(2, y, z), (2, w, x)])
    return m.reshape(16, 9)


_QMUL = _quat_product_table()
_QMAT = _quat_matrix_table()


def axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> unit quaternion (..., 4) as (w, x, y, z)."""
    theta = np.sqrt(np.sum(aa * aa, axis=-1, keepdims=True))  # (..., 1)
    half = 0.5 * theta
    # sin(theta / 2) / theta, with its series 1/2 - theta^2 / 48 near 0
    k = np.divide(np.sin(half), theta, out=0.5 - theta * theta / 48.0, where=theta > 1e-6)
    return np.concatenate([np.cos(half), aa * k], axis=-1)


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Quaternion (..., 4) (w, x, y, z), any norm -> axis-angle (..., 3) with angle in [0, pi]."""
    q = q * np.copysign(1.0, q[..., :1])  # w >= 0 so that the angle is <= pi
    w, v = q[..., :1], q[..., 1:]
    s = np.sqrt(np.sum(v * v, axis=-1, keepdims=True))  # (..., 1) = |q| sin(theta / 2)
    theta = 2.0 * np.arctan2(s, w)
    # theta / s, with its limit 2 / w as s -> 0
    k = np.divide(theta, s, out=2.0 / np.maximum(w, 1e-300), where=s > 1e-12)
    return v * k


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions (..., 4) (w, x, y, z)."""
    outer = a[..., :, None] * b[..., None, :]  # (..., 4, 4)
    return outer.reshape(outer.shape[:-2] + (16,)) @ _QMUL


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrix (..., 3, 3)."""
    q = axis_angle_to_quat(np.asarray(aa, dtype=np.float64))
    outer = q[..., :, None] * q[..., None, :]  # (..., 4, 4)
    return (outer.reshape(outer.shape[:-2] + (16,)) @ _QMAT).reshape(q.shape[:-1] + (3, 3))


# ---------------------------------------------------------------------------------------------


def _next_proprio_np(
    proprio: np.ndarray, action: np.ndarray, limits: ControllerLimits
) -> np.ndarray:
    s = proprio.astype(np.float64, copy=False)
    a = np.minimum(np.maximum(action.astype(np.float64, copy=False), -1.0), 1.0)
    if s.shape[:-1] != a.shape[:-1]:
        lead = np.broadcast_shapes(s.shape[:-1], a.shape[:-1])
        s = np.broadcast_to(s, lead + (PROPRIO_DIM,))
        a = np.broadcast_to(a, lead + (ACTION_DIM,))
    out = np.empty(s.shape, dtype=np.float64)  # (..., 8)
    pos = s[..., 0:3] + a[..., 0:3] * limits.pos_limit
    np.minimum(np.maximum(pos, limits.workspace_low), limits.workspace_high, out=out[..., 0:3])
    q = quat_mul(
        axis_angle_to_quat(a[..., 3:6] * limits.rot_limit), axis_angle_to_quat(s[..., 3:6])
    )
    out[..., 3:6] = quat_to_axis_angle(q)
    w = 0.5 * (s[..., 6:7] - s[..., 7:8])  # (..., 1) half opening
    target = (a[..., 6:7] <= 0) * limits.finger_open  # open unless the command is > 0
    rate = limits.gripper_rate
    w = np.minimum(
        np.maximum(w + np.minimum(np.maximum(target - w, -rate), rate), 0.0), limits.finger_open
    )
    out[..., 6:7] = w
    out[..., 7:8] = -w
    return (
        out.astype(proprio.dtype, copy=False) if np.issubdtype(proprio.dtype, np.floating) else out
    )


def next_proprio(proprio: Any, action: Any, *, limits: ControllerLimits | None = None) -> Any:
    """Next proprio state after one action, when nothing blocks the arm.

    Args:
        proprio: (..., 8) EE pos (3) + EE axis-angle (3) + finger positions (2); NumPy or torch.
        action: (..., 7) normalized delta pos (3) + delta rot (3) + gripper (1), broadcastable
            against ``proprio``'s leading dims; values outside [-1, 1] are clipped.
        limits: controller scales; default ``ControllerLimits()``.
    Returns:
        (..., 8) next state, same array type (and dtype if floating) as ``proprio``.
    """
    limits = ControllerLimits() if limits is None else limits
    is_torch = type(proprio).__module__.startswith("torch")
    if is_torch:
        import torch

        p_np = proprio.detach().cpu().numpy()
        a_np = (
            action.detach().cpu().numpy()
            if isinstance(action, torch.Tensor)
            else np.asarray(action)
        )
    else:
        p_np, a_np = np.asarray(proprio), np.asarray(action)
    if p_np.shape[-1:] != (PROPRIO_DIM,):
        raise ValueError(f"proprio must have shape (..., {PROPRIO_DIM}), got {p_np.shape}")
    if a_np.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f"action must have shape (..., {ACTION_DIM}), got {a_np.shape}")
    out = _next_proprio_np(p_np, a_np, limits)
    if is_torch:
        return torch.from_numpy(out).to(device=proprio.device, dtype=proprio.dtype)
    return out


__all__ = [
    "ControllerLimits",
    "next_proprio",
    "axis_angle_to_matrix",
    "axis_angle_to_quat",
    "quat_to_axis_angle",
    "quat_mul",
]
