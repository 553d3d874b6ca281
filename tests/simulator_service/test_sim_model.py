"""WorldModel: shapes, deterministic sampling, sampler step counts, bad input, loss decreases."""

import pytest
import torch

from simulator_service.config import SimulatorConfig
from simulator_service.model import WorldModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldModel(SimulatorConfig.preset("tiny")).eval()


def inputs(b=2, k=2, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(b, k, 3, s, s, generator=g),
        torch.rand(b, 3, s, s, generator=g),
        torch.rand(b, 1, 3, s, s, generator=g),
    )


def test_predict_shapes_and_determinism(model):
    hist, amap, ref = inputs()
    feats = model.encode_reference(ref)
    a = model.predict(hist, amap, feats, generator=torch.Generator().manual_seed(3))
    b = model.predict(hist, amap, feats, generator=torch.Generator().manual_seed(3))
    c = model.predict(hist, amap, feats, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
@pytest.mark.parametrize("steps", [1, 4])
def test_sampler_step_counts(model, sampler, steps):
    hist, amap, ref = inputs(b=1)
    feats = model.encode_reference(ref)
    calls = []
    handle = model.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.predict(hist, amap, feats, steps=steps, sampler=sampler)
    finally:
        handle.remove()
    assert len(calls) == steps


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
def test_reused_scheduler_samples_like_a_fresh_one(model, sampler):
    # predict keeps one scheduler per (sampler, steps): a multistep solver's history must not
    # leak from one call into the next, nor another step count's settings
    hist, amap, ref = inputs()
    feats = model.encode_reference(ref)
    noise = torch.randn(model.noise_shape(2), generator=torch.Generator().manual_seed(5))
    first = model.predict(hist, amap, feats, steps=4, sampler=sampler, noise=noise)
    model.predict(hist, amap, feats, steps=2, sampler=sampler, noise=noise)
    again = model.predict(hist, amap, feats, steps=4, sampler=sampler, noise=noise)
    model._samplers.clear()
    fresh = model.predict(hist, amap, feats, steps=4, sampler=sampler, noise=noise)
    assert torch.equal(first, again) and torch.equal(first, fresh)


def test_traced_unet_samples_like_the_eager_one(model):
    traced = WorldModel(SimulatorConfig.preset("tiny")).eval()
    traced.load_state_dict(model.state_dict())
    traced.use_fast_path(trace=True)
    # batch sizes and step counts (timesteps) other than the first call's, and a batch past
    # diffusers' 64-frame branch (a second graph)
    for b, steps in ((3, 1), (5, 4), (1, 2), (64, 1)):
        hist, amap, ref = inputs(b=b, seed=b)
        feats = model.encode_reference(ref)
        noise = torch.randn(model.noise_shape(b), generator=torch.Generator().manual_seed(b))
        want = model.predict(hist, amap, feats, steps=steps, noise=noise)
        got = traced.predict(hist, amap, feats, steps=steps, noise=noise)
        assert (got - want).abs().max() < 1e-5
    assert sorted(traced._compiled["unet"]._graphs) == [False, True]
    with pytest.raises(ValueError, match="compiled or traced"):
        traced.use_fast_path(trace=True, compile=True)


def test_bad_frames_are_named(model):
    hist, amap, ref = inputs()
    feats = model.encode_reference(ref)
    with pytest.raises(ValueError, match="history.*16, 16"):
        model.predict(torch.rand(2, 2, 3, 32, 32), amap, feats)
    with pytest.raises(ValueError, match="dtype"):
        model.predict((hist * 255).to(torch.uint8), amap, feats)
    with pytest.raises(ValueError, match="K=2"):
        model.predict(hist[:, :1], amap, feats)
    with pytest.raises(ValueError, match="sampler"):
        model.predict(hist, amap, feats, sampler="euler")
    with pytest.raises(ValueError, match="lack"):
        model.predict(hist, amap, {})


def test_residual_identity_and_latent_space():
    cfg = SimulatorConfig.preset("tiny", space="latent")
    m = WorldModel(cfg).eval()
    hist, amap, ref = inputs()
    out = m.predict(hist, amap, m.encode_reference(ref), steps=2)
    assert out.shape == (2, 3, 16, 16) and m.res == 8


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    m = WorldModel(SimulatorConfig.preset("tiny"))
    hist, amap, ref = inputs(b=8)
    target = hist[:, -1].clone()
    target[:, :, 4:8, 4:8] = amap[:, :, 4:8, 4:8]  # the change depends on the action map
    feats = m.encode_reference(ref)
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=2e-3)
    losses = []
    for i in range(60):
        loss = m.loss(hist, amap, feats, target, generator=torch.Generator().manual_seed(i % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_every_preset_validates_and_full_builds_on_meta():
    """The full preset (latent space, VGGT + CLIP) is a valid config whose model builds."""
    import torch

    for name in ("tiny", "demo", "full"):
        SimulatorConfig.preset(name)
    with torch.device("meta"):
        model = WorldModel(SimulatorConfig.preset("full"))
    assert sum(p.numel() for p in model.parameters()) > 1e9  # VGGT aggregator alone is 0.9 B


def test_residual_deadzone_keeps_small_changes_out():
    """With a deadzone, pixels whose predicted change is small keep their previous value."""
    import dataclasses

    import torch

    cfg = SimulatorConfig.preset("tiny")
    model = WorldModel(dataclasses.replace(cfg, residual_deadzone=0.5)).eval()
    s = cfg.image_size
    hist = torch.rand(2, cfg.history, 3, s, s)
    amap = torch.zeros(2, 3, s, s)
    feats = model.encode_reference(hist[:, :1])
    out = model.predict(hist, amap, feats, steps=2, generator=torch.Generator().manual_seed(0))
    same = (out - hist[:, -1]).abs().amax(dim=1) < 1e-6
    assert same.float().mean() > 0.9  # an untrained model's changes are mostly noise: dropped


def test_change_weight_covers_changed_pixels_and_their_neighborhood():
    import dataclasses

    cfg = SimulatorConfig.preset("tiny")
    prev = torch.zeros(1, 3, 16, 16)
    target = prev.clone()
    target[0, 1, 5, 7] = 0.5  # one pixel changes (green channel)
    plain = WorldModel(dataclasses.replace(cfg, changed_weight=20.0)).change_weight(prev, target)
    assert plain.shape == (1, 1, 16, 16)
    assert plain[0, 0, 5, 7] == 21.0 and plain.sum() == 21.0 + 255
    grown = WorldModel(dataclasses.replace(cfg, changed_weight=20.0, changed_dilation=1))
    w = grown.change_weight(prev, target)[0, 0]
    assert (w[4:7, 6:9] == 21.0).all() and w.sum() == 9 * 21.0 + 247
    with pytest.raises(ValueError, match="changed_dilation"):
        dataclasses.replace(cfg, changed_dilation=-1)


@pytest.mark.parametrize("sampler,steps", [("ddim", 1), ("ddim", 4), ("dpmsolver++", 3)])
def test_sampler_timesteps_train_only_where_sampling_queries(sampler, steps):
    import dataclasses

    from simulator_service.config import SimTrainConfig

    base = SimulatorConfig.preset("tiny")
    cfg = dataclasses.replace(
        base, sampler=sampler, sample_steps=steps, train=SimTrainConfig(timesteps="sampler")
    )
    model = WorldModel(cfg)
    g = torch.Generator().manual_seed(0)
    drawn = model.train_timesteps(256, generator=g, device=torch.device("cpu"))
    visited = set(model.make_sampler().timesteps.tolist())
    assert len(visited) == steps and set(drawn.tolist()) == visited
    uniform = WorldModel(base).train_timesteps(256, generator=g, device=torch.device("cpu"))
    assert len(set(uniform.tolist())) > 100 and uniform.max() < base.num_train_timesteps
    with pytest.raises(ValueError, match="train.timesteps"):
        SimTrainConfig(timesteps="some")
    if sampler == "ddim" and steps == 1:  # sampling elsewhere would query untrained timesteps
        history, action_map, reference = inputs(s=cfg.image_size)
        feats = model.encode_reference(reference)
        model.predict(history, action_map, feats)
        with pytest.raises(ValueError, match="trained only at the timesteps"):
            model.predict(history, action_map, feats, steps=4)
