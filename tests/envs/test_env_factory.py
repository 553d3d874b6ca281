"""make_env builds tabletop and answers a bad libero suite with a clear message."""

from __future__ import annotations

import pytest

from core.configlib import ConfigError, from_dict
from envs.config import EnvConfig
from envs.factory import make_env
from envs.tabletop import TabletopEnv


def test_make_env_tabletop_and_libero():
    env = make_env(EnvConfig(name="tabletop", image_size=32, max_steps=50))
    assert isinstance(env, TabletopEnv)
    assert env.max_steps == 50 and env.camera.height == 32 and env.action_dim == 7
    with pytest.raises(ValueError, match="libero"):
        make_env(EnvConfig(name="libero", suite="libero_nope"))


def test_env_config_validation():
    with pytest.raises(ConfigError, match="image_size"):
        from_dict(EnvConfig, {"image_size": 8})
    with pytest.raises(ConfigError, match="name"):
        from_dict(EnvConfig, {"name": "mujoco"})
