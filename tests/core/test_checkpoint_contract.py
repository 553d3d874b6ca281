"""Every trained thing saves and loads the same way: config.yaml + safetensors (+ state.json),
``save_* / load_* / read_config``, and the folder still loads after it is moved elsewhere."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from core.configlib import ConfigError


def _policy_kind():
    from policy import checkpoint as ck
    from policy.config import PolicyConfig
    from policy.normalization import compute_statistics

    rng = np.random.default_rng(0)
    stats = compute_statistics(
        rng.uniform(-1, 1, (64, 7)).astype(np.float32), rng.normal(size=(64, 8)), num_trajectories=2
    )
    model = ck.build_policy(
        PolicyConfig(chunk=2, lora_rank=4), instructions=["lift it"], stats=stats
    )
    batch = {
        "image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(2, 8)).astype(np.float32),
        "instruction": ["lift it"] * 2,
    }

    def out(m):
        with torch.no_grad():
            return m(batch)[0]

    return model, lambda p: ck.save_policy(model, p), ck.load_policy, ck.read_config, out


def _world_model_kind():
    from simulator_service import checkpoint as ck
    from simulator_service.config import SimulatorConfig
    from simulator_service.model import WorldModel

    torch.manual_seed(0)
    model = WorldModel(SimulatorConfig.preset("tiny")).eval()
    ema = ck.stored_state(model)

    def out(m):
        return next(iter(m.state_dict().values()))

    def save(p):
        return ck.save_world_model(p, model=model, ema=ema, optimizer=None, step=3)

    return model, save, ck.load_world_model, ck.read_config, out


def _reflector_kind():
    from reflector_service import checkpoint as ck
    from reflector_service.config import ReflectorModelConfig
    from reflector_service.model import Reflector

    torch.manual_seed(0)
    model = Reflector(ReflectorModelConfig()).eval()
    frames = np.random.default_rng(1).integers(0, 256, (1, 3, 32, 32, 3), dtype=np.uint8)

    def out(m):
        return m.score(frames, ["lift the red block"])

    return (
        model,
        lambda p: ck.save_reflector(model, p, state={"step": 1}),
        ck.load_reflector,
        (ck.read_config),
        out,
    )


@pytest.mark.parametrize("kind", [_policy_kind, _world_model_kind, _reflector_kind])
def test_one_contract_round_trip_after_a_move(kind, tmp_path) -> None:
    model, save, load, read_config, out = kind()
    save(tmp_path / "a")
    names = {p.name for p in (tmp_path / "a").iterdir()}
    assert "config.yaml" in names and any(n.endswith(".safetensors") for n in names)
    assert not any(
        n.endswith((".pt", ".pkl", ".json")) and n != "state.json"
        for n in names - {"dataset_statistics.json"}
    )
    assert read_config(tmp_path / "a") == model.cfg
    shutil.move(tmp_path / "a", tmp_path / "b")  # a copied folder still loads
    torch.testing.assert_close(out(load(tmp_path / "b")), out(model), atol=0, rtol=0)


@pytest.mark.parametrize("kind", [_policy_kind, _world_model_kind, _reflector_kind])
def test_one_contract_errors_name_the_folder(kind, tmp_path) -> None:
    _, save, load, read_config, _ = kind()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load(tmp_path / "nowhere")
    save(tmp_path / "c")
    (tmp_path / "c" / "config.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="config.yaml"):
        read_config(tmp_path / "c")
