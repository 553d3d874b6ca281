"""The Arrow schema of an episode step, shared by every Parquet file of the episode store.

One row per observation. An episode with T actions has T + 1 rows: row t holds o_t (images,
proprio), the action a_t taken from it, and the success label of frame o_t; the last row is the
terminal observation, whose action is all zeros and is never trained on (``done`` is true there
and only there).
"""

from __future__ import annotations

import pyarrow as pa

SOURCES = ("expert", "exploration", "policy", "imagined", "near_miss")
SCHEMA_VERSION = "1"
META_KEY = b"rehearse.meta"  # JSON: env name, image size, camera, controller limits, ...
VERSION_KEY = b"rehearse.schema_version"

STEP_FIELDS = [
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("task_id", pa.string(), nullable=False),
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("step", pa.int32(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),  # PNG bytes, (H, W, 3) uint8
    pa.field("wrist_image", pa.binary(), nullable=True),  # PNG bytes or null
    pa.field(
        "proprio", pa.list_(pa.float32(), 8), nullable=False
    ),  # EE pos 3, axis-angle 3, gripper 2
    pa.field(
        "action", pa.list_(pa.float32(), 7), nullable=False
    ),  # delta pos 3, delta rot 3, gripper
    pa.field("success", pa.bool_(), nullable=False),  # per-frame success label
    pa.field("done", pa.bool_(), nullable=False),  # true on the terminal row only
    pa.field("source", pa.string(), nullable=False),  # one of SOURCES
    pa.field("policy_version", pa.int64(), nullable=False),  # -1 when no learned policy acted
]


def step_schema(metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    """The step schema, with the store's metadata attached."""
    md = {VERSION_KEY: SCHEMA_VERSION.encode()}
    if metadata:
        md.update(metadata)
    return pa.schema(STEP_FIELDS, metadata=md)


def check_schema(schema: pa.Schema, *, name: str) -> None:
    """Raise ValueError naming the file ``name`` when ``schema`` is not the step schema."""
    expected = {f.name: f.type for f in STEP_FIELDS}
    found = {f.name: f.type for f in schema}
    missing = [k for k in expected if k not in found]
    if missing:
        raise ValueError(
            f"{name} is not a rehearse episode file: missing column(s) {', '.join(missing)}"
        )
    wrong = [f"{k} ({found[k]} instead of {t})" for k, t in expected.items() if found[k] != t]
    if wrong:
        raise ValueError(f"{name} has column(s) of the wrong type: {', '.join(wrong)}")
    version = (schema.metadata or {}).get(VERSION_KEY)
    if version is not None and version.decode() != SCHEMA_VERSION:
        raise ValueError(
            f"{name} uses episode schema version {version.decode()}, this rehearse reads "
            f"version {SCHEMA_VERSION}"
        )
