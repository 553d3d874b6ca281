"""Action maps: the next end-effector pose drawn on a black image (World-Env / EVAC).

The world model gets the action as an image aligned with the frame it predicts: a filled disk at
the projected next EE position, colored by the gripper opening (green open, red closed, linear in
between), and three short lines along the projected EE axes (x blue, y cyan, z magenta), drawn
first so that the disk stays on top. Edges are anti-aliased (pixel coverage), so sub-pixel
positions are visible at 32 x 32. The projection is ``envs.base.Camera.project``, which applies
LIBERO's 180-degree flip when the camera has ``flip180``.
"""

from __future__ import annotations

import numpy as np

from envs.base import Camera
from simulator_service.config import ActionMapConfig

OPEN_COLOR = np.array([0.0, 1.0, 0.0], dtype=np.float32)
CLOSED_COLOR = np.array([1.0, 0.0, 0.0], dtype=np.float32)
AXIS_COLORS = np.array([[0.0, 0.0, 1.0], [0.0, 0.6, 1.0], [0.6, 0.0, 1.0]], dtype=np.float32)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula. rotvec: (..., 3) axis * angle -> (..., 3, 3) rotation matrices."""
    r = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)  # (..., 1)
    k = r / np.where(theta < 1e-12, 1.0, theta)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    kmat = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1)
    kmat = kmat.reshape(*r.shape[:-1], 3, 3)
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    return eye + s * kmat + (1.0 - c) * (kmat @ kmat)


def gripper_opening(proprio: np.ndarray, max_opening: float) -> np.ndarray:
    """Opening in [0, 1] from the two finger positions. proprio: (..., 8) -> (...,)."""
    gap = np.abs(proprio[..., 6] - proprio[..., 7])
    return np.clip(gap / max_opening, 0.0, 1.0)


def _segment_distance(pu: np.ndarray, pv: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of pixel centers to segments a -> b.

    Args:
        pu: (1, 1, W) pixel columns; pv: (1, H, 1) pixel rows (float32).
        a, b: (N, 2) segment ends as (u, v).
    Returns:
        (N, H, W) float32.
    """
    au, av = a[:, 0, None, None], a[:, 1, None, None]  # (N, 1, 1)
    abu, abv = b[:, 0, None, None] - au, b[:, 1, None, None] - av
    apu, apv = pu - au, pv - av  # (N, 1, W), (N, H, 1)
    t = np.clip((apu * abu + apv * abv) / np.maximum(abu * abu + abv * abv, 1e-12), 0.0, 1.0)
    du, dv = apu - abu * t, apv - abv * t  # (N, H, W)
    return np.sqrt(du * du + dv * dv)


def render_action_maps(
    proprio: np.ndarray,
    camera: Camera,
    cfg: ActionMapConfig,
    *,
    size: int,
) -> np.ndarray:
    """Draw the action maps of a batch of next proprio states.

    The pose is projected in float64; the per-pixel coverage is float32 on separate row and
    column grids (the world model serves one batch per imagined step, so this runs as often
    as the U-Net).

    Args:
        proprio: (B, 8) next proprio states (EE pos 3, axis-angle 3, finger positions 2).
        camera: the camera the frames come from (its resolution may differ from ``size``;
            projections are rescaled).
        cfg: radius, axis length, line width, gripper range.
        size: side of the square output image in pixels.
    Returns:
        (B, size, size, 3) float32 in [0, 1]; black where nothing is drawn.
    """
    proprio = np.asarray(proprio, dtype=np.float64)
    if proprio.ndim != 2 or proprio.shape[1] != 8:
        raise ValueError(f"action map needs proprio of shape (B, 8), got {proprio.shape}")
    if not np.isfinite(proprio).all():
        raise ValueError("action map got non-finite proprio values")
    b = proprio.shape[0]
    scale_u = size / camera.width
    scale_v = size / camera.height
    pix_scale = size / 32.0
    radius = cfg.radius * pix_scale
    half_width = cfg.line_width * pix_scale

    pos = proprio[:, :3]  # (B, 3)
    rot = axis_angle_to_matrix(proprio[:, 3:6])  # (B, 3, 3), columns = EE axes in world
    ends = pos[:, None, :] + cfg.axis_length * np.swapaxes(rot, 1, 2)  # (B, 3, 3)
    pts = np.concatenate([pos[:, None, :], ends], axis=1)  # (B, 4, 3)
    uv, depth = camera.project(pts)  # (B, 4, 2), (B, 4)
    uv = uv * np.array([scale_u, scale_v]) + 0.5 * np.array([scale_u - 1, scale_v - 1])
    uv = uv.astype(np.float32)
    visible = depth[:, 0] > 0  # (B,)

    grid = np.arange(size, dtype=np.float32)
    pu, pv = grid[None, None, :], grid[None, :, None]  # pixel centers: u = column, v = row
    out = np.zeros((b, size, size, 3), dtype=np.float32)
    if cfg.axis_length > 0:
        for i in range(3):
            dist = _segment_distance(pu, pv, uv[:, 0], uv[:, 1 + i])  # (B, H, W)
            cover = np.clip(half_width + 0.5 - dist, 0.0, 1.0)
            alpha = (cover * (depth[:, 1 + i] > 0)[:, None, None])[..., None]  # (B, H, W, 1)
            out = out * (1 - alpha) + AXIS_COLORS[i] * alpha
    du, dv = pu - uv[:, 0, 0, None, None], pv - uv[:, 0, 1, None, None]
    alpha = np.clip(radius + 0.5 - np.sqrt(du * du + dv * dv), 0.0, 1.0)[..., None]
    o = gripper_opening(proprio, cfg.gripper_max_opening).astype(np.float32)[:, None]
    color = (o * OPEN_COLOR + (1 - o) * CLOSED_COLOR)[:, None, None, :]  # (B, 1, 1, 3)
    out = out * (1 - alpha) + color * alpha
    out[~visible] = 0.0
    return out.astype(np.float32, copy=False)


__all__ = ["render_action_maps", "axis_angle_to_matrix", "gripper_opening"]
