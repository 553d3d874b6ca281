"""GIFs of rollouts, with captions: the N rollouts of one start side by side (task, step, and
each rollout's reward and how it ended), and two worlds of one start side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PANEL = 128  # px: small frames are scaled up to about this width
BAND = 14  # px of one caption line


@dataclass
class Caption:
    """What a group video says about its rollouts.

    Attributes:
        task: the start's task (or instruction), shown above the frames with the step.
        rewards: (N,) each rollout's final reward R.
        terminated: (N,) bool, ended by success (real) or the reflector (imagined), not the
            horizon.
        end_frame: (N,) index of the frame where each rollout ended.
        first_step: index of the frame after the first env step (earlier frames: context).
    """

    task: str
    rewards: np.ndarray
    terminated: np.ndarray
    end_frame: np.ndarray
    first_step: int


def _scale(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) -> nearest-neighbour scaled up to about ``PANEL`` px."""
    k = max(1, PANEL // frames.shape[-3])
    return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def _text_band(width: int, lines: list[tuple[int, str]], height: int = BAND) -> np.ndarray:
    """(height, width, 3) uint8: dark band with ``(x, text)`` drawn in PIL's built-in font."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for x, text in lines:
        draw.text((x + 2, 1), text, fill=(235, 235, 235))
    return np.asarray(img)


def captioned_group(frames: np.ndarray, caption: Caption | None) -> list[np.ndarray]:
    """frames: (N, S, H, W, 3) uint8 -> S images: the N rollouts side by side, and with a
    caption the task and step above, each rollout's R and ending below once it ended."""
    n, s = frames.shape[:2]
    panels = _scale(frames)  # (N, S, h, w, 3)
    w = panels.shape[3]
    strip = panels.transpose(1, 2, 0, 3, 4).reshape(s, panels.shape[2], n * w, 3)
    if caption is None:
        return list(strip)
    out = []
    for f in range(s):
        step = max(0, f - caption.first_step + 1)
        top = _text_band(n * w, [(0, f"{caption.task}  step {step}")])
        below = [
            (i * w, f"R {caption.rewards[i]:.2f} {'done' if caption.terminated[i] else 'horizon'}")
            for i in range(n)
            if f >= caption.end_frame[i]
        ]
        out.append(np.concatenate([top, strip[f], _text_band(n * w, below)], axis=0))
    return out


def save_group_video(frames: np.ndarray, path: Path, *, caption: Caption | None = None) -> None:
    """frames: (N, S, H, W, 3) uint8 -> a GIF with the N rollouts side by side."""
    _write_gif(captioned_group(frames, caption), path, duration=0.15)


def save_side_by_side(
    columns: list[tuple[str, np.ndarray]], path: Path, *, title: str = ""
) -> None:
    """One start seen several ways, side by side: ``columns`` of (label, (S_i, H, W, 3) uint8
    frames); shorter columns hold their last frame. Labels above, the step below."""
    s = max(len(f) for _, f in columns)
    held = [np.concatenate([f, np.repeat(f[-1:], s - len(f), axis=0)]) for _, f in columns]
    panels = [_scale(f) for f in held]
    w = panels[0].shape[2]
    strip = np.concatenate(panels, axis=2)  # (S, h, n * w, 3)
    top = _text_band(strip.shape[2], [(i * w, label) for i, (label, _) in enumerate(columns)])
    images = []
    for t in range(s):
        below = _text_band(strip.shape[2], [(0, f"{title}  step {t}".strip())])
        images.append(np.concatenate([top, strip[t], below], axis=0))
    _write_gif(images, path, duration=0.15)


def _write_gif(images: list[np.ndarray], path: Path, *, duration: float) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, images, duration=duration, loop=0)
