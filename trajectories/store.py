"""The episode store: a folder of Parquet files in the step schema, one row group per episode.

Writers never leave a half-written file: each part is written under a temporary name and
renamed into place; a whole new store is built in a staging folder and swapped in at the end.
The reader validates every file's schema and names the file in any error.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.fsutil import refuse_existing, replace_folder
from trajectories.episode import Episode
from trajectories.schema import META_KEY, check_schema

PART_GLOB = "*.parquet"


def _meta_bytes(meta: dict[str, Any]) -> dict[bytes, bytes]:
    return {META_KEY: json.dumps(meta, sort_keys=True).encode()}


def write_part(path: str | Path, episodes: Iterable[Episode], meta: dict[str, Any]) -> Path:
    """Write episodes to one Parquet file atomically (temp name, then rename).

    Args:
        path: the target ``.parquet`` file.
        episodes: episodes to store, one row group each.
        meta: store metadata (env name, image size, camera, controller limits); JSON-able.
    Returns:
        The path written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    md = _meta_bytes(meta)
    writer = None
    try:
        for ep in episodes:
            table = ep.to_table(md)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=max(1, table.num_rows))
        if writer is None:
            raise ValueError(f"no episodes to write to {path}")
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return path


def write_episodes(
    path: str | Path, episodes: Iterable[Episode], meta: dict[str, Any], *, overwrite: bool = False
) -> Path:
    """Create the store folder ``path`` holding ``episodes`` (one part file).

    The folder is built in a staging folder beside it and renamed into place, so a failure
    leaves nothing behind. An existing non-empty folder is refused unless ``overwrite``.
    """
    with StoreBuilder(path, meta, overwrite=overwrite) as builder:
        builder.add(episodes)
    return Path(path)


class StoreBuilder:
    """Builds a new store folder atomically: parts go to a staging folder, swapped in on commit.

    Use as a context manager; on an exception the staging folder is removed and the target
    is left as it was.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], *, overwrite: bool = False):
        self.path = Path(path)
        self.meta = meta
        self.overwrite = overwrite
        refuse_existing(self.path, overwrite=overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.path.with_name(f".{self.path.name}.staging-{uuid.uuid4().hex[:8]}")
        self.staging.mkdir()
        self._parts = 0
        self.num_episodes = 0

    def add(self, episodes: Iterable[Episode]) -> None:
        """Write a batch of episodes as the next part file."""
        episodes = list(episodes)
        if not episodes:
            return
        write_part(self.staging / f"part-{self._parts:05d}.parquet", episodes, self.meta)
        self._parts += 1
        self.num_episodes += len(episodes)

    def commit(self) -> None:
        if self.num_episodes == 0:
            raise ValueError(f"no episodes were written to {self.path}")
        replace_folder(self.staging, self.path)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> StoreBuilder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class EpisodeStore:
    """Read access to a store folder (or a single Parquet file).

    Attributes:
        meta: the store metadata (env, image_size, camera, controller limits, ...).
        episode_info: one dict per episode: episode_id, task_id, instruction, source,
            length (number of actions T), success (any frame labelled success), file.
    """

    def __init__(self, path: str | Path, *, cache_size: int = 64):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"episode store {self.path} does not exist")
        files = [self.path] if self.path.is_file() else sorted(self.path.glob(PART_GLOB))
        if not files:
            raise FileNotFoundError(f"episode store {self.path} holds no .parquet files")
        self.files = files
        self.meta: dict[str, Any] = {}
        self.episode_info: list[dict[str, Any]] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._files: list[pq.ParquetFile] = []
        for fi, f in enumerate(files):
            pf = self._open(f)
            self._files.append(pf)
            meta = self._read_meta(pf, f)
            if not self.meta:
                self.meta = meta
            elif meta != self.meta:
                raise ValueError(
                    f"{f} was recorded with other settings than {files[0]} "
                    "(env, image size or camera differ); keep them in separate stores"
                )
            self._index(pf, f, fi)
        self._cache: OrderedDict[str, Episode] = OrderedDict()
        self._cache_size = cache_size

    @staticmethod
    def _open(f: Path) -> pq.ParquetFile:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(
                f"{f} is not a readable Parquet file (corrupt or truncated?): {e}"
            ) from None
        check_schema(pf.schema_arrow, name=str(f))
        return pf

    @staticmethod
    def _read_meta(pf: pq.ParquetFile, f: Path) -> dict[str, Any]:
        raw = (pf.schema_arrow.metadata or {}).get(META_KEY)
        if raw is None:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"{f} has unreadable store metadata") from None

    def _index(self, pf: pq.ParquetFile, f: Path, fi: int) -> None:
        cols = ["episode_id", "task_id", "instruction", "source", "success", "policy_version"]
        for rg in range(pf.num_row_groups):
            try:
                t = pf.read_row_group(rg, columns=cols)
            except (pa.ArrowInvalid, OSError) as e:
                raise ValueError(f"{f} is corrupt (row group {rg}): {e}") from None
            if t.num_rows == 0:
                continue
            eid = t.column("episode_id")[0].as_py()
            if eid in self._where:
                raise ValueError(f"episode {eid!r} appears twice in store {self.path} ({f})")
            self._where[eid] = (fi, rg)
            self.episode_info.append(
                {
                    "episode_id": eid,
                    "task_id": t.column("task_id")[0].as_py(),
                    "instruction": t.column("instruction")[0].as_py(),
                    "source": t.column("source")[0].as_py(),
                    "policy_version": t.column("policy_version")[0].as_py(),
                    "length": t.num_rows - 1,
                    "success": bool(pc.any(t.column("success")).as_py()),
                    "file": str(f),
                }
            )

    @property
    def episode_ids(self) -> list[str]:
        return [e["episode_id"] for e in self.episode_info]

    def __len__(self) -> int:
        return len(self.episode_info)

    def load_episode(self, episode_id: str) -> Episode:
        """Decode one episode (cached, least recently used dropped first)."""
        if episode_id in self._cache:
            self._cache.move_to_end(episode_id)
            return self._cache[episode_id]
        if episode_id not in self._where:
            raise KeyError(f"no episode {episode_id!r} in store {self.path}")
        fi, rg = self._where[episode_id]
        try:
            table = self._files[fi].read_row_group(rg)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{self.files[fi]} is corrupt (episode {episode_id!r}): {e}") from None
        ep = Episode.from_table(table)
        self._cache[episode_id] = ep
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ep

    def episodes(
        self, *, source: str | None = None, task_id: str | None = None
    ) -> Iterator[Episode]:
        """Iterate episodes in store order, optionally filtered by source and task."""
        for info in self.select(source=source, task_id=task_id):
            yield self.load_episode(info["episode_id"])

    def select(
        self, *, source: str | None = None, task_id: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            e
            for e in self.episode_info
            if (source is None or e["source"] == source)
            and (task_id is None or e["task_id"] == task_id)
        ]

    def camera(self):
        """The camera of the recording env (``envs.base.Camera``)."""
        from envs.base import Camera

        if "camera" not in self.meta:
            raise ValueError(f"episode store {self.path} has no camera in its metadata")
        return Camera.from_dict(self.meta["camera"])

    def controller_limits(self):
        """The recording env's controller limits (``envs.kinematics.ControllerLimits``), or
        None where the metadata holds none (the kinematics then use the tabletop defaults)."""
        from envs.kinematics import ControllerLimits

        if "controller_limits" not in self.meta:
            return None
        return ControllerLimits.from_dict(self.meta["controller_limits"])
