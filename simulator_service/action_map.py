"""Action maps: the next end-effector pose drawn on a black image (World-Env / EVAC).

The world model gets the action as an image aligned with the frame it predicts. Style "axes"
(World-Env / EVAC): a filled disk at the projected next EE position, colored by the gripper
opening (green open, red closed, linear in between), and three short lines along the projected
EE axes (x blue, y cyan, z magenta), drawn first so that the disk stays on top. Style "gripper":
the outline of a parallel-jaw gripper at the next pose (two fingers where the proprio puts them,
the palm bar joining their roots), colored by the opening, over its copy dropped straight down
onto the ground plane in gray; the U-Net then has the gripper's silhouette, its height and the
place of its shadow to copy rather than to infer from a disk. Edges are anti-aliased (pixel
coverage), so sub-pixel positions are visible at 32 x 32. The projection is
``envs.base.Camera.project``, which applies LIBERO's 180-degree flip when the camera has
``flip180``.
"""

from __future__ import annotations

import numpy as np

from envs.base import Camera
from simulator_service.config import ActionMapConfig

OPEN_COLOR = np.array([0.0, 1.0, 0.0], dtype=np.float32)
CLOSED_COLOR = np.array([1.0, 0.0, 0.0], dtype=np.float32)
AXIS_COLORS = np.array([[0.0, 0.0, 1.0], [0.0, 0.6, 1.0], [0.6, 0.0, 1.0]], dtype=np.float32)
GROUND_COLOR = np.array([0.5, 0.5, 0.5], dtype=np.float32)


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


def _draw_segments(
    out: np.ndarray,
    pu: np.ndarray,
    pv: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    half_width: float,
    color: np.ndarray,
    visible: np.ndarray,
) -> np.ndarray:
    """Paint anti-aliased segments a -> b over ``out`` (B, H, W, 3): a, b (B, 2) as (u, v);
    color (3,) or (B, 3); visible (B,) bool (a segment with an end behind the camera is not
    drawn)."""
    dist = _segment_distance(pu, pv, a, b)  # (B, H, W)
    cover = np.clip(half_width + 0.5 - dist, 0.0, 1.0) * visible[:, None, None]
    alpha = cover[..., None]  # (B, H, W, 1)
    color = np.asarray(color, dtype=np.float32).reshape(-1, 1, 1, 3)
    return out * (1 - alpha) + color * alpha


def gripper_points(proprio: np.ndarray, cfg: ActionMapConfig) -> np.ndarray:
    """The gripper outline's six corners in the world: fingertips and finger roots of both
    fingers, then the palm's two ends. proprio (B, 8) float64 -> (B, 6, 3)."""
    pos = proprio[:, :3]  # (B, 3)
    rot = axis_angle_to_matrix(proprio[:, 3:6])  # (B, 3, 3), columns = EE axes in world
    axis = rot[:, :, cfg.finger_axis]  # (B, 3), the direction the fingers open along
    root = rot @ np.asarray(cfg.finger_extent, dtype=np.float64)  # (B, 3), tip -> root
    half = 0.5 * np.abs(proprio[:, 6] - proprio[:, 7])[:, None] * axis  # (B, 3)
    palm = 0.5 * cfg.palm_width * axis
    tips = [pos - half, pos + half]
    return np.stack(
        [tips[0], tips[0] + root, tips[1], tips[1] + root, pos + root - palm, pos + root + palm],
        axis=1,
    )


GRIPPER_SEGMENTS = ((0, 1), (2, 3), (4, 5))  # the two fingers, the palm


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
        cfg: style, radius, axis length, line width, gripper range and shape.
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
    scale = np.array([size / camera.width, size / camera.height])
    pix_scale = size / 32.0
    half_width = cfg.line_width * pix_scale

    def project(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, P, 3) world points -> (B, P, 2) float32 pixel (u, v) at ``size``, (B, P) depth."""
        uv, depth = camera.project(pts)
        return (uv * scale + 0.5 * (scale - 1)).astype(np.float32), depth

    grid = np.arange(size, dtype=np.float32)
    pu, pv = grid[None, None, :], grid[None, :, None]  # pixel centers: u = column, v = row
    out = np.zeros((b, size, size, 3), dtype=np.float32)
    o = gripper_opening(proprio, cfg.gripper_max_opening).astype(np.float32)[:, None]
    color = o * OPEN_COLOR + (1 - o) * CLOSED_COLOR  # (B, 3)
    if cfg.style == "gripper":
        pts = gripper_points(proprio, cfg)  # (B, 6, 3)
        ground = pts.copy()
        ground[..., 2] = cfg.ground_z
        for layer, col in ((ground, GROUND_COLOR), (pts, color)):
            uv, depth = project(layer)
            for i, j in GRIPPER_SEGMENTS:
                seen = (depth[:, i] > 0) & (depth[:, j] > 0)
                out = _draw_segments(out, pu, pv, uv[:, i], uv[:, j], half_width, col, seen)
        return out.astype(np.float32, copy=False)

    pos = proprio[:, :3]  # (B, 3)
    rot = axis_angle_to_matrix(proprio[:, 3:6])  # (B, 3, 3), columns = EE axes in world
    ends = pos[:, None, :] + cfg.axis_length * np.swapaxes(rot, 1, 2)  # (B, 3, 3)
    uv, depth = project(np.concatenate([pos[:, None, :], ends], axis=1))  # (B, 4, 2), (B, 4)
    visible = depth[:, 0] > 0  # (B,)
    if cfg.axis_length > 0:
        for i in range(3):
            out = _draw_segments(
                out, pu, pv, uv[:, 0], uv[:, 1 + i], half_width, AXIS_COLORS[i], depth[:, 1 + i] > 0
            )
    radius = cfg.radius * pix_scale
    du, dv = pu - uv[:, 0, 0, None, None], pv - uv[:, 0, 1, None, None]
    alpha = np.clip(radius + 0.5 - np.sqrt(du * du + dv * dv), 0.0, 1.0)[..., None]
    out = out * (1 - alpha) + color[:, None, None, :] * alpha
    out[~visible] = 0.0
    return out.astype(np.float32, copy=False)


__all__ = ["render_action_maps", "axis_angle_to_matrix", "gripper_opening", "gripper_points"]
