"""Build the configured real environment."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from envs.base import Env
from envs.config import EnvConfig


def make_env(cfg: EnvConfig, *, seed: int = 0) -> Env:
    """The environment named by ``cfg.name``.

    Args:
        cfg: the env section of the experiment config.
        seed: seeds the env's own generator (episode seeds drawn when ``reset`` gets none).
    Raises:
        ValueError: for "libero" when the libero extra is not installed, or an unknown name.
    """
    if cfg.name == "tabletop":
        from envs.tabletop import TabletopEnv

        return TabletopEnv(cfg, seed=seed)
    if cfg.name == "libero":
        if importlib.util.find_spec("libero") is None:
            raise ValueError(
                "env.name='libero' needs the libero extra, which is not installed "
                "(run `scripts/setup.sh --libero`); or use env.name=tabletop"
            )
        from envs.libero import LiberoEnv

        return LiberoEnv(cfg, seed=seed)
    raise ValueError(f"unknown env.name {cfg.name!r}; valid names: tabletop, libero")


def task_names(cfg: EnvConfig) -> list[str]:
    """The configured env's task names (the env is built only to ask, and closed)."""
    env = make_env(cfg)
    try:
        return env.task_names
    finally:
        env.close()


def check_tasks(tasks: Iterable[str], valid: list[str]) -> None:
    """Raise ValueError naming every task not in ``valid`` (and listing the valid ones)."""
    unknown = sorted(set(tasks) - set(valid))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {', '.join(valid)}")


__all__ = ["make_env", "task_names", "check_tasks"]
