"""Config of the real environment (one per experiment)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import require
from envs.tabletop_tasks import MAX_HOME_JITTER


@dataclass
class EnvConfig:
    """Which real environment and how it renders.

    Attributes:
        name: "tabletop" (built in, NumPy renderer) or "libero".
        image_size: square image side in pixels (tabletop: >= 16).
        wrist_camera: also render the wrist image.
        max_steps: episode step limit; 0 means the environment's own default.
        suite: LIBERO suite name (libero only).
        layout: tabletop object placement at reset: "uniform" (anywhere in the spawn area,
            apart) or "homes" (each object near a fixed home, like LIBERO's init states).
        layout_jitter: "homes" only: half-width in meters of the uniform offset from the home.
    """

    name: Literal["tabletop", "libero"] = "tabletop"
    image_size: int = 32
    wrist_camera: bool = False
    max_steps: int = 0
    suite: str = "libero_spatial"
    layout: Literal["uniform", "homes"] = "uniform"
    layout_jitter: float = 0.03

    def __post_init__(self) -> None:
        require(self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}")
        require(self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}")
        require(
            0.0 <= self.layout_jitter <= MAX_HOME_JITTER,
            f"layout_jitter must be in [0, {MAX_HOME_JITTER}] m (objects would overlap), "
            f"got {self.layout_jitter}",
        )
