"""Experiment trackers of a training run: TensorBoard events and a Weights & Biases run.

Every training command (``sft``, ``train-simulator``, ``train-reflector``, ``post-train``)
keeps its own JSON record in its output folder; the loggers named by the config's ``loggers``
key receive the same scalars:

- ``tensorboard``: events under ``<folder>/tensorboard``.
- ``wandb``: a W&B run under ``<folder>/wandb``, offline unless ``WANDB_MODE`` says otherwise
  (``wandb sync <folder>/wandb/offline-run-*`` uploads it later); it never needs a network. The
  run id is derived from the folder, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOGGERS = ("tensorboard", "wandb")


def check_loggers(loggers: Sequence[str], *, key: str = "loggers") -> None:
    """Raise ValueError naming ``key`` for an unknown logger or a repeated one."""
    unknown = [n for n in loggers if n not in LOGGERS]
    if unknown:
        raise ValueError(
            f"{key} has unknown logger(s) {unknown}; valid: {list(LOGGERS)} "
            "(metrics.jsonl is always written)"
        )
    if len(set(loggers)) != len(loggers):
        raise ValueError(f"{key} names a logger twice: {list(loggers)}")


def run_id(folder: str | Path) -> str:
    """A stable W&B run id for an output folder (the same after a resume)."""
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]


class Trackers:
    """The trackers of one run; ``log(step, scalars)`` sends finite numbers to each.

    Args:
        folder: the run's output folder (created if missing).
        loggers: names from ``LOGGERS`` (empty: none).
        job: what is trained ("post_train", "sft", ...): the W&B job type and group.
        config: the run's config as a plain dict (stored with the W&B run).
        resumed_at: a resumed run continues after this step: TensorBoard drops the events
            logged after it by the interrupted run.
    """

    def __init__(
        self,
        folder: str | Path,
        loggers: Sequence[str],
        *,
        job: str,
        config: dict[str, Any] | None = None,
        resumed_at: int | None = None,
    ):
        check_loggers(loggers)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tb = self._wandb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resumed_at is None else resumed_at + 1
            # written every flush_secs and at close(); flush() forces it
            self._tb = SummaryWriter(
                str(self.folder / "tensorboard"), purge_step=purge, flush_secs=30
            )
        if "wandb" in loggers:
            self._wandb = self._start_wandb(job, config)

    def _start_wandb(self, job: str, config: dict[str, Any] | None):
        try:
            import wandb
        except ImportError:
            raise ValueError(
                "loggers names wandb, which is not installed (pip install wandb, or "
                "scripts/setup.sh --dev)"
            ) from None
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", "rehearse"),
            dir=str(self.folder),
            id=run_id(self.folder),
            name=self.folder.name,
            group=job,
            job_type=job,
            config=config or {},
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            resume="allow",
            settings=wandb.Settings(console="off"),
        )

    def log(self, step: int, scalars: dict[str, Any]) -> None:
        """Send the finite numbers of ``scalars`` at ``step``; other values are skipped."""
        clean = {
            k: float(v)
            for k, v in scalars.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None and clean:
            self._wandb.log(clean, step=step)

    def flush(self) -> None:
        """Write TensorBoard's pending events now (W&B streams on its own)."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            import wandb

            self._wandb.finish()
            self._wandb = None
            # finish() can return before W&B's service process has written the run's last
            # records to the offline file; teardown waits for that service to exit. Only when
            # no other run of this process still needs it.
            if wandb.run is None:
                wandb.teardown()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
