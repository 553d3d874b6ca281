"""Training loop, checkpoints (safetensors), resume, config mismatch, CLI commands."""

import dataclasses
import json

import pytest
import torch

from simulator_service.checkpoint import load_world_model
from simulator_service.config import SimTrainConfig, SimulatorConfig
from simulator_service.data import TransitionSampler, load_episodes
from simulator_service.train import train_world_model


def tiny(**train):
    base = dict(steps=4, batch_size=4, val_every=2, ckpt_every=2, val_fraction=0.2)
    base.update(train)
    return SimulatorConfig.preset("tiny", train=SimTrainConfig(**base))


def test_mixing_ratio(synthetic_store):
    import numpy as np

    eps, cam = load_episodes([synthetic_store], tiny(), progress=False)
    assert cam.width == 16 and len(eps) == 6
    s = TransitionSampler(eps, k=2, exploration_fraction=0.25)
    b = s.sample(400, np.random.default_rng(0))
    frac = np.mean([eps[i].source == "exploration" for i in b["episode"]])
    assert 0.18 < frac < 0.32
    assert b["history"].shape == (400, 2, 3, 16, 16) and b["action_map"].shape == (400, 3, 16, 16)
    only_expert = TransitionSampler(
        [e for e in eps if e.source == "expert"], k=2, exploration_fraction=0.9
    )
    assert len(only_expert.sample(8, np.random.default_rng(0))["episode"]) == 8


def test_train_checkpoint_resume_and_load(synthetic_store, tmp_path):
    out = tmp_path / "run"
    s1 = train_world_model(tiny(), [synthetic_store], out, progress=False, log=lambda m: None)
    assert s1["steps"] == 4 and s1["val_loss"] == s1["val_loss"]  # not nan
    ck = out / "checkpoint"
    assert {p.name for p in ck.iterdir()} >= {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "state.json",
        "config.yaml",
    }
    with pytest.raises(FileExistsError):
        train_world_model(tiny(), [synthetic_store], out, progress=False, log=lambda m: None)
    s2 = train_world_model(
        tiny(steps=6),
        [synthetic_store],
        out,
        resume=True,
        progress=False,
        log=lambda m: None,
        loggers=["tensorboard"],
    )
    assert (out / "tensorboard").is_dir()
    assert s2["steps"] == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    model = load_world_model(ck)
    raw = load_world_model(ck, ema=False)
    key = "unet.conv_in.weight"
    assert not torch.equal(model.state_dict()[key], raw.state_dict()[key])  # EMA differs
    other = dataclasses.replace(tiny(), history=3)
    with pytest.raises(ValueError, match="history"):
        load_world_model(ck, cfg=other)
    with pytest.raises(ValueError, match="another config"):
        train_world_model(other, [synthetic_store], out, resume=True, progress=False)
    (tmp_path / "broken").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_world_model(tmp_path / "broken")


def test_wrong_image_size_is_named(synthetic_store, tmp_path):
    cfg = dataclasses.replace(tiny(), image_size=32)
    with pytest.raises(ValueError, match="image_size 32"):
        train_world_model(cfg, [synthetic_store], tmp_path / "x", progress=False)


def test_cli_train_and_eval(synthetic_store, make_episodes, tmp_path, capsys):
    from cluster.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "train-simulator",
            "--preset",
            "tiny",
            "--data",
            str(synthetic_store),
            "--out",
            str(out),
            "--steps",
            "2",
            "--no-progress",
            "--set",
            "simulator.train.batch_size=2",
        ]
    )
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    rc = main(
        [
            "eval-simulator",
            "--checkpoint",
            str(out / "checkpoint"),
            "--data",
            str(synthetic_store),
            "--out",
            str(tmp_path / "ev"),
            "--horizons",
            "1,3",
            "--starts",
            "0,4",
            "--max-episodes",
            "2",
            "--steps",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    rep = json.loads((tmp_path / "ev" / "fidelity.json").read_text())
    h1 = rep["horizons"]["1"]
    assert h1["n"] == 4 and set(h1["model"]) >= {"psnr", "ssim", "changed_rmse"}
    assert h1["copy_last_frame"]["ssim"] is not None
    assert (tmp_path / "ev" / "rollout.gif").is_file()
    from reflector_service.checkpoint import save_reflector
    from reflector_service.config import ReflectorModelConfig
    from reflector_service.model import Reflector

    save_reflector(Reflector(ReflectorModelConfig(eta=0.3)), tmp_path / "refl")
    rc = main(
        [
            "eval-simulator",
            "--checkpoint",
            str(out / "checkpoint"),
            "--data",
            str(synthetic_store),
            "--out",
            str(tmp_path / "ev2"),
            "--horizons",
            "1",
            "--max-episodes",
            "2",
            "--reflector",
            str(tmp_path / "refl"),
            "--reflector-steps",
            "3",
            "--no-progress",
        ]
    )
    assert rc == 0
    agree = json.loads((tmp_path / "ev2" / "fidelity.json").read_text())["reflector"]
    assert agree["eta"] == 0.3 and agree["max_steps"] == 3 and agree["failed"]["episodes"] == 2
    assert 0.0 <= agree["failed"]["imagined_max_reward"] <= 1.0
    capsys.readouterr()
    # an existing report is not changed without --overwrite; a refused run leaves no folder
    before = (tmp_path / "ev" / "fidelity.json").read_text()
    ev = ["eval-simulator", "--checkpoint", str(out / "checkpoint"), "--no-progress"]
    assert main([*ev, "--data", str(synthetic_store), "--out", str(tmp_path / "ev")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "ev" / "fidelity.json").read_text() == before
    from trajectories.store import write_episodes

    other = tmp_path / "size24"
    write_episodes(other, make_episodes(1, 4, size=24), {"env": "synthetic", "image_size": 24})
    assert main([*ev, "--data", str(other), "--out", str(tmp_path / "ev3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "24" in err[0], err
    assert not (tmp_path / "ev3").exists()
    rc = main(
        [
            "train-simulator",
            "--preset",
            "tiny",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(
        [
            "train-simulator",
            "--data",
            str(synthetic_store),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "simulator.histroy=3",
        ]
    )
    assert rc == 2 and "did you mean 'history'" in capsys.readouterr().err


def test_store_without_camera_is_refused(tmp_path, make_episodes):
    from trajectories.store import write_episodes

    write_episodes(tmp_path / "nocam", make_episodes(1, 3), {"env": "synthetic"})
    with pytest.raises(ValueError, match="no camera"):
        load_episodes([tmp_path / "nocam"], tiny(), progress=False)


def test_reward_agreement_splits_by_real_outcome(make_episodes, synthetic_store, tmp_path):
    import numpy as np

    from simulator_service.evaluate import reward_agreement
    from simulator_service.model import WorldModel
    from trajectories.store import write_episodes

    eps = make_episodes(4, 8)
    eps[0].success[3:] = True  # succeeds within 5 steps
    eps[1].success[7:] = True  # succeeds only after the 5 replayed steps: counted as failed
    from trajectories.store import EpisodeStore

    write_episodes(tmp_path / "s", eps, EpisodeStore(synthetic_store).meta)
    model = WorldModel(tiny()).eval()
    seen = []

    def constant(value):
        def score(frames, instruction):
            seen.append(frames.shape)
            return np.full(len(frames), value)

        return score

    for value, expect in ((0.9, 1.0), (0.1, 0.0)):
        rep = reward_agreement(
            model, [tmp_path / "s"], constant(value), eta=0.5, max_steps=5, batch=3, progress=False
        )
        assert rep["successful"]["episodes"] == 1 and rep["failed"]["episodes"] == 3
        for outcome in ("successful", "failed"):
            assert rep[outcome]["real_detected"] == rep[outcome]["imagined_detected"] == expect
    assert set(seen) == {(6, 16, 16, 3)}  # first frame + 5 imagined steps, real and imagined


def test_history_speckle_disturbs_the_configured_share_of_pixels():
    from simulator_service.train import speckle

    frames = torch.full((4, 3, 32, 32), 0.5)
    out = speckle(frames, 0.05, torch.Generator().manual_seed(0))
    moved = (out != frames).any(dim=1)  # (4, 32, 32)
    assert 0.03 < moved.float().mean().item() < 0.07
    assert (out - frames).abs().max().item() <= 0.4 + 1e-6
    again = speckle(frames, 0.05, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(speckle(frames, 0.0, torch.Generator().manual_seed(0)), frames)
    edge = speckle(torch.ones(2, 3, 8, 8), 0.5, torch.Generator().manual_seed(1))
    assert edge.max().item() <= 1.0 and edge.min().item() >= 0.6 - 1e-6
    with pytest.raises(ValueError, match="train.history_speckle"):
        SimTrainConfig(history_speckle=1.0)


def test_training_with_history_speckle_and_own_history(synthetic_store, tmp_path, monkeypatch):
    """Each training batch (not the validation batches) has its latest history frame disturbed
    once and goes through own_history once, with the configured shares."""
    import simulator_service.train as train_mod

    speckled, owned = [], []
    plain_speckle, plain_own = train_mod.speckle, train_mod.own_history

    def recording_speckle(frames, share, generator):
        speckled.append((tuple(frames.shape), share))
        return plain_speckle(frames, share, generator)

    def recording_own(model, sampler, batch, **kw):
        owned.append(kw["share"])
        return plain_own(model, sampler, batch, **kw)

    monkeypatch.setattr(train_mod, "speckle", recording_speckle)
    monkeypatch.setattr(train_mod, "own_history", recording_own)
    s = train_world_model(
        tiny(history_speckle=0.05, own_history=0.5),
        [synthetic_store],
        tmp_path / "run",
        progress=False,
        log=lambda m: None,
    )
    assert s["steps"] == 4 and s["val_loss"] == s["val_loss"]
    assert speckled == [((4, 3, 16, 16), 0.05)] * 4  # one latest frame per training batch
    assert owned == [0.5] * 4


def test_own_history_replaces_the_latest_frame_with_the_models_sample(synthetic_store):
    """The chosen transitions' latest history frame becomes exactly what the model samples
    from the previous transition (same noise); the first step and the other frames stay real."""
    import numpy as np

    from simulator_service.model import WorldModel
    from simulator_service.train import _features, encode_all, own_history

    cfg = tiny()
    eps, _ = load_episodes([synthetic_store], cfg, progress=False)
    sampler = TransitionSampler(eps, k=2, exploration_fraction=0.25)
    torch.manual_seed(0)
    model = WorldModel(cfg)
    cache = encode_all(model, eps)
    feats = lambda idx: _features(cache, eps, idx)  # noqa: E731
    batch = sampler.gather(np.array([0, 0, 1, 2]), [0, 3, 2, 1])
    real = batch["history"].clone()
    n = own_history(
        model,
        sampler,
        batch,
        share=1.0,
        features=feats,
        generator=torch.Generator().manual_seed(5),
    )
    assert n == 3  # t = 0 has no previous transition: its reset frame stays
    assert torch.equal(batch["history"][0], real[0])
    assert torch.equal(batch["history"][:, 0], real[:, 0])  # only the latest frame changes
    g = torch.Generator().manual_seed(5)
    torch.rand(4, generator=g)  # the choice
    prev = sampler.gather(np.array([0, 1, 2]), [2, 1, 0])
    noise = torch.randn(model.noise_shape(3), generator=g)
    with torch.no_grad():
        expected = model.predict(
            prev["history"], prev["action_map"], feats(prev["episode"]), noise=noise
        )
    assert torch.equal(batch["history"][1:, -1], expected)
    assert not torch.equal(batch["history"][1:, -1], real[1:, -1])
    none = sampler.gather(np.array([0, 1]), [2, 3])
    kept = none["history"].clone()
    assert (
        own_history(model, sampler, none, share=0.0, features=feats, generator=torch.Generator())
        == 0
    )
    assert torch.equal(none["history"], kept)
    with pytest.raises(ValueError, match="train.own_history"):
        SimTrainConfig(own_history=1.5)
