"""In-memory episode: decoded arrays plus identifying fields, and its Arrow encoding."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from trajectories.schema import SOURCES, step_schema


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless, fast compression)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class Episode:
    """One episode of T actions as T + 1 observation rows (see ``trajectories.schema``).

    Attributes:
        images: (T+1, H, W, 3) uint8 third-person frames.
        proprio: (T+1, 8) float32.
        actions: (T+1, 7) float32; the last row is zeros (terminal observation).
        success: (T+1,) bool per-frame success labels.
        wrist_images: (T+1, H, W, 3) uint8 or None.
        done: (T+1,) bool, true on the last row only; derived when not given.
    """

    episode_id: str
    task_id: str
    instruction: str
    images: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    success: np.ndarray
    source: str = "expert"
    policy_version: int = -1
    wrist_images: np.ndarray | None = None
    done: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        name = f"episode {self.episode_id!r}"
        if n < 1:
            raise ValueError(f"{name} has no frames")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"{name}: images must be (T+1, H, W, 3) uint8, got "
                f"{self.images.shape} {self.images.dtype}"
            )
        self.proprio = np.asarray(self.proprio, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.success = np.asarray(self.success, dtype=bool)
        for field_name, arr, shape in (
            ("proprio", self.proprio, (n, 8)),
            ("actions", self.actions, (n, 7)),
            ("success", self.success, (n,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"{name}: {field_name} must have shape {shape}, got {arr.shape}")
        if self.wrist_images is not None and self.wrist_images.shape[0] != n:
            raise ValueError(
                f"{name}: wrist_images must have {n} frames, got {self.wrist_images.shape[0]}"
            )
        if self.done is None:
            self.done = np.zeros(n, dtype=bool)
            self.done[-1] = True
        self.done = np.asarray(self.done, dtype=bool)
        if self.source not in SOURCES:
            raise ValueError(f"{name}: source must be one of {SOURCES}, got {self.source!r}")

    @property
    def num_steps(self) -> int:
        """Number of actions T (rows minus the terminal observation)."""
        return len(self.images) - 1

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())

    def to_table(self, metadata: dict[bytes, bytes] | None = None) -> pa.Table:
        """Encode as an Arrow table of T + 1 rows in the step schema."""
        n = len(self.images)
        wrist = (
            [encode_png(im) for im in self.wrist_images]
            if self.wrist_images is not None
            else [None] * n
        )
        cols = {
            "episode_id": [self.episode_id] * n,
            "task_id": [self.task_id] * n,
            "instruction": [self.instruction] * n,
            "step": np.arange(n, dtype=np.int32),
            "image": [encode_png(im) for im in self.images],
            "wrist_image": wrist,
            "proprio": list(self.proprio),
            "action": list(self.actions),
            "success": self.success,
            "done": self.done,
            "source": [self.source] * n,
            "policy_version": np.full(n, self.policy_version, dtype=np.int64),
        }
        schema = step_schema(metadata)
        arrays = []
        for f in schema:
            v = cols[f.name]
            if f.name in ("proprio", "action"):
                flat = pa.array(np.asarray(v, dtype=np.float32).reshape(-1))
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
            else:
                arrays.append(pa.array(v, type=f.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    @classmethod
    def from_table(cls, table: pa.Table) -> Episode:
        """Decode the rows of one episode (sorted by step)."""
        steps = table.column("step").to_numpy()
        order = np.argsort(steps, kind="stable")
        images = np.stack([decode_png(table.column("image")[int(i)].as_py()) for i in order])
        wcol = table.column("wrist_image")
        wrist = None
        if wcol.null_count == 0:
            wrist = np.stack([decode_png(wcol[int(i)].as_py()) for i in order])

        def fixed(col: str, width: int) -> np.ndarray:
            flat = table.column(col).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            return flat.reshape(-1, width)[order].astype(np.float32)

        first = {
            k: table.column(k)[0].as_py()
            for k in ("episode_id", "task_id", "instruction", "source", "policy_version")
        }
        return cls(
            episode_id=first["episode_id"],
            task_id=first["task_id"],
            instruction=first["instruction"],
            images=images,
            proprio=fixed("proprio", 8),
            actions=fixed("action", 7),
            success=table.column("success").to_numpy(zero_copy_only=False)[order],
            done=table.column("done").to_numpy(zero_copy_only=False)[order],
            source=first["source"],
            policy_version=int(first["policy_version"]),
            wrist_images=wrist,
        )
