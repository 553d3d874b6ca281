"""Writing folders so that readers never see a half-written one.

``staged_folder(target)`` yields a fresh staging folder beside ``target``; when the block ends
without an exception the staging folder replaces ``target`` (the old one, if any, is moved
aside first and removed after), otherwise it is deleted and ``target`` stays as it was.
Checkpoints, episode stores and exported policies are all written this way; single files
(reports, summaries, configs) go through ``write_text_atomic``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def refuse_existing(path: str | Path, *, overwrite: bool) -> None:
    """Refuse an output that would change existing data: FileExistsError naming ``path`` when
    it is a file, or a folder that is not empty and ``overwrite`` is off."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {path} exists and is not empty (pass --overwrite to replace it)"
        )


@contextmanager
def output_folder(path: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """A command's output folder: refused when it holds data and ``overwrite`` is off
    (``refuse_existing``), created, and removed again when the block fails and the folder did
    not exist before, so a refused or failed run leaves nothing behind."""
    path = Path(path)
    refuse_existing(path, overwrite=overwrite)
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a hidden file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a hidden file beside ``path``, then rename it over ``path``."""
    return write_bytes_atomic(path, text.encode())


def replace_folder(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing an existing ``target`` folder."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield a staging folder that replaces ``target`` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
