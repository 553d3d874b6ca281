"""The GPU fast path, checked on CPU for correctness: bf16 autocast and torch.compile of the
world model's sampling against fp32 eager, the reflector in bf16 against fp32; the checkpoint
never sees the compiled module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reflector_service.config import ReflectorModelConfig
from reflector_service.keyed import KeyedReflector
from reflector_service.model import Reflector
from simulator_service.config import SimulatorConfig
from simulator_service.model import WorldModel


def _sample(model, seed=3):
    g = torch.Generator().manual_seed(0)
    hist = torch.rand(2, model.cfg.history, 3, 16, 16, generator=g)
    amap = torch.rand(2, 3, 16, 16, generator=g)
    feats = model.encode_reference(hist[:, :1])
    return model.predict(hist, amap, feats, steps=2, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return WorldModel(SimulatorConfig.preset("tiny")).eval()


def test_bf16_autocast_sampling_is_close_to_fp32(model):
    plain = _sample(model)
    model.use_fast_path(bf16=True)
    fast = _sample(model)
    assert fast.dtype == torch.float32 and not torch.equal(fast, plain)  # it did run in bf16
    torch.testing.assert_close(fast, plain, atol=3e-2, rtol=0)
    model.use_fast_path()
    torch.testing.assert_close(_sample(model), plain, atol=0, rtol=0)


def test_channels_last_sampling_equals_the_plain_layout(model):
    plain = _sample(model)
    model.use_fast_path(channels_last=True)
    torch.testing.assert_close(_sample(model), plain, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_sampling_equals_eager_and_the_state_dict_is_plain(model):
    plain = _sample(model)
    keys = sorted(model.state_dict())
    model.use_fast_path(compile=True)
    torch.testing.assert_close(_sample(model), plain, atol=1e-5, rtol=1e-5)
    assert sorted(model.state_dict()) == keys  # no _orig_mod. prefix reaches a checkpoint


def test_reflector_bf16_scores_close_to_fp32():
    torch.manual_seed(0)
    model = Reflector(ReflectorModelConfig(window=4)).eval()
    frames = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32, 3), dtype=np.uint8)
    instr = ["pick up the red block", "pick up the red block"]
    out = {}
    for bf16 in (False, True):
        keyed = KeyedReflector(model, bf16=bf16)
        r0 = keyed.reset("g", instr, frames[:, :1])
        r = [r0, *(keyed.score_batch([("g", frames[:, t])])[0] for t in (1, 2))]
        out[bf16] = np.stack(r)
    assert out[True].dtype == np.float32
    np.testing.assert_allclose(out[True], out[False], atol=5e-2)
