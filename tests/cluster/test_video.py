"""Captioned GIFs: the task and step above a group's frames, each rollout's R and ending below
from the frame it ended on; several views of one start side by side."""

from __future__ import annotations

import numpy as np

from cluster.video import BAND, Caption, captioned_group, save_group_video, save_side_by_side


def _frames(n: int, s: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, s, size, size, 3), dtype=np.uint8)


def _has_text(band: np.ndarray) -> bool:
    return bool((band > 128).any())


def test_group_captions_appear_when_each_rollout_ends(tmp_path):
    frames = _frames(2, 6)
    cap = Caption(
        task="lift_red",
        rewards=np.array([0.9, 0.1]),
        terminated=np.array([True, False]),
        end_frame=np.array([2, 5]),
        first_step=1,
    )
    images = captioned_group(frames, cap)
    assert len(images) == 6
    h = 128 + 2 * BAND
    assert all(im.shape == (h, 2 * 128, 3) and im.dtype == np.uint8 for im in images)
    # the frames themselves, scaled by 4, between the bands
    np.testing.assert_array_equal(images[3][BAND : BAND + 128 : 4, :128:4], frames[0, 3])
    below = [im[BAND + 128 :] for im in images]
    left, right = [b[:, :128] for b in below], [b[:, 128:] for b in below]
    assert [_has_text(b) for b in left] == [False, False, True, True, True, True]
    assert [_has_text(b) for b in right] == [False] * 5 + [True]
    assert not np.array_equal(images[0][:BAND], images[1][:BAND])  # the step changes
    save_group_video(frames, tmp_path / "g.gif", caption=cap)
    import imageio.v2 as imageio

    assert len(imageio.mimread(tmp_path / "g.gif")) == 6
    # without a caption: the bare strip, as before
    assert captioned_group(frames, None)[0].shape == (128, 256, 3)


def test_side_by_side_holds_the_shorter_column(tmp_path):
    import imageio.v2 as imageio

    a = np.zeros((5, 32, 32, 3), np.uint8)  # flat colors: a GIF's palette keeps them exactly
    b = np.zeros((3, 32, 32, 3), np.uint8)
    a[..., 2] = np.arange(5)[:, None, None] * 40
    b[..., 0] = (np.arange(3)[:, None, None] + 1) * 60
    save_side_by_side([("imagined", a), ("real", b)], tmp_path / "s.gif", title="lift_red")
    images = imageio.mimread(tmp_path / "s.gif")
    assert len(images) == 5 and images[0].shape[:2] == (128 + 2 * BAND, 256)
    last = np.asarray(images[-1])[BAND : BAND + 128 : 4, 128::4, :3]
    np.testing.assert_array_equal(last, b[-1])  # the real column holds its last frame
