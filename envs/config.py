"""Config of the real environment (one per experiment)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cluster.configlib import require


@dataclass
class EnvConfig:
    """Which real environment and how it renders.

    Attributes:
        name: "tabletop" (built in, NumPy renderer) or "libero".
        image_size: square image side in pixels (tabletop: >= 16).
        wrist_camera: also render the wrist image.
        max_steps: episode step limit; 0 means the environment's own default.
        suite: LIBERO suite name (libero only).
    """

    name: Literal["tabletop", "libero"] = "tabletop"
    image_size: int = 32
    wrist_camera: bool = False
    max_steps: int = 0
    suite: str = "libero_spatial"

    def __post_init__(self) -> None:
        require(self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}")
        require(self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}")
