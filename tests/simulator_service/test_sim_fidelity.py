"""Fidelity metrics: identical frames, known errors, color centroids, GIF."""

import numpy as np
import pytest

from simulator_service.fidelity import (
    ColorSegmenter,
    changed_rmse,
    position_errors,
    psnr,
    ssim,
    write_side_by_side,
)


def frames(n=3, s=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8)


def test_identical_frames():
    a = frames()
    assert np.all(np.isinf(psnr(a, a)))
    assert ssim(a, a) == pytest.approx(np.ones(3))


def test_known_errors():
    a = np.zeros((1, 8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # mse = 3 / (8*8*3)
    assert psnr(a, b)[0] == pytest.approx(10 * np.log10(64.0))
    assert ssim(frames(1), frames(1, seed=1))[0] < 0.2
    start = np.zeros((1, 8, 8, 3), np.uint8)
    real = start.copy()
    real[0, 2:4, 2:4] = 200  # 4 changed pixels
    pred = start.copy()  # copy-last-frame misses them all
    assert changed_rmse(pred, real, start)[0] == pytest.approx(200 / 255, abs=1e-6)
    assert changed_rmse(real, real, start)[0] == 0
    assert np.isnan(changed_rmse(start, start, start)[0])


def test_color_centroids_and_position_errors():
    seg = ColorSegmenter({"bg": [(0, 0, 0)], "red": [(215, 35, 35)], "gripper": [(35, 35, 40)]})
    img = np.full((1, 16, 16, 3), 0, np.uint8)
    img[0, 2:4, 10:12] = (np.array([215, 35, 35]) * 0.6).astype(np.uint8)  # shaded red
    c = seg.centroids(img)
    assert c[0, 1] == pytest.approx([10.5, 2.5])
    assert np.isnan(c[0, 2]).all()
    moved = np.zeros_like(img)
    moved[0, 6:8, 10:12] = (215, 35, 35)
    err = position_errors(seg, ["red"], moved, img, moved)
    assert err["red"][0] == pytest.approx(4.0)
    assert err["moved_objects"][0] == pytest.approx(4.0)  # red moved from start to real


def test_gif(tmp_path):
    from PIL import Image

    p = write_side_by_side(tmp_path / "v.gif", frames(4), frames(4, seed=2), scale=2)
    with Image.open(p) as im:
        assert im.n_frames == 4 and im.size[1] == 32
