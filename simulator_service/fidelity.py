"""Fidelity of the world model in open-loop replay (the paper reports none).

Held-out real episodes are replayed with their real actions: from a real start frame o_t (and
the real history before it) the model imagines o_{t+1..t+H} feeding back its own frames. Per
horizon h we report, beside the copy-last-frame baseline (o_t repeated): PSNR, SSIM, RMSE on the
pixels that really changed (|o_{t+h} - o_t| > threshold), and for the tabletop task the pixel
position error of every object and of the gripper, found by flat-color segmentation (the
renderer's color table, with its shading range) in real and imagined frames alike. "Moved"
objects are those whose real position changed by more than one pixel: the carried block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HORIZONS = (1, 5, 10, 20)


def _float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x))
    return t.float() / 255 if t.dtype == torch.uint8 else t.float()


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio per frame (data range 1). a, b: (N, H, W, 3) uint8 or float
    in [0, 1]. Returns (N,) in dB; inf where the frames are identical."""
    mse = ((_float(a) - _float(b)) ** 2).flatten(1).mean(1).double()
    with np.errstate(divide="ignore"):
        return (10 * np.log10(1.0 / mse.numpy())).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Structural similarity per frame (Wang et al. 2004, Gaussian window, per channel, mean
    over the valid region and channels). a, b: (N, H, W, 3). Returns (N,); 1 for identical."""
    x = _float(a).permute(0, 3, 1, 2).double()
    y = _float(b).permute(0, 3, 1, 2).double()
    window = min(window, x.shape[-1], x.shape[-2])
    r = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(3, 1, window, window).contiguous()

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, k, groups=3)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx**2
    syy = filt(y * y) - my**2
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).numpy()


def changed_rmse(
    pred: np.ndarray, real: np.ndarray, start: np.ndarray, *, threshold: float = 0.1
) -> np.ndarray:
    """RMSE of ``pred`` against ``real`` on the pixels where ``real`` differs from ``start`` by
    more than ``threshold`` in some channel. All (N, H, W, 3). Returns (N,); nan if none."""
    p, r, s = _float(pred), _float(real), _float(start)
    mask = ((r - s).abs().amax(-1) > threshold).float()  # (N, H, W)
    se = ((p - r) ** 2).mean(-1)
    n = mask.flatten(1).sum(1)
    out = torch.sqrt((se * mask).flatten(1).sum(1) / n.clamp(min=1))
    return torch.where(n > 0, out, torch.nan).double().numpy()


class ColorSegmenter:
    """Labels pixels by the nearest color of a palette of flat-shaded classes.

    Args:
        classes: name -> list of RGB base colors (0..255) of that class.
        shading: brightness factors each base color may appear with (shade x shadow).
        min_pixels: a class with fewer pixels in a frame has no position there.
    """

    def __init__(
        self,
        classes: dict[str, list[tuple[int, int, int]]],
        *,
        shading: np.ndarray | None = None,
        min_pixels: int = 2,
    ):
        shading = np.linspace(0.25, 1.0, 16) if shading is None else shading
        self.names = list(classes)
        colors, owner = [], []
        for i, name in enumerate(self.names):
            for c in classes[name]:
                for f in shading:
                    colors.append(np.asarray(c, float) * f)
                    owner.append(i)
        self.palette = torch.tensor(np.array(colors), dtype=torch.float32)  # (P, 3)
        self.owner = torch.tensor(owner)
        self.min_pixels = min_pixels

    def labels(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, H, W) class indices into ``names``."""
        x = torch.as_tensor(np.asarray(frames)).float().reshape(-1, 3)
        d = torch.cdist(x, self.palette)  # (N*H*W, P)
        return self.owner[d.argmin(1)].reshape(frames.shape[:-1]).numpy()

    def centroids(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, C, 2) (u, v) centroid per class; nan if too few pixels."""
        lab = self.labels(frames)
        n, h, w = lab.shape
        vv, uu = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        out = np.full((n, len(self.names), 2), np.nan)
        for c in range(len(self.names)):
            m = lab == c
            cnt = m.sum((1, 2))
            ok = cnt >= self.min_pixels
            out[ok, c, 0] = (m * uu).sum((1, 2))[ok] / cnt[ok]
            out[ok, c, 1] = (m * vv).sum((1, 2))[ok] / cnt[ok]
        return out


def tabletop_segmenter() -> tuple[ColorSegmenter, list[str]]:
    """Segmenter for the built-in tabletop env and the names of the tracked classes
    (its objects and "gripper")."""
    from envs import tabletop_render as r
    from envs.tabletop_tasks import OBJECTS

    gripper = [getattr(r, n) for n in ("PALM_COLOR", "FINGER_COLOR", "LINK_COLOR") if hasattr(r, n)]
    classes = {"background": [r.BACKGROUND], "table": [r.TABLE_COLOR], "gripper": gripper}
    classes.update({name: [spec.color] for name, spec in OBJECTS.items()})
    return ColorSegmenter(classes), ["gripper", *OBJECTS]


def position_errors(
    seg: ColorSegmenter, tracked: list[str], pred: np.ndarray, real: np.ndarray, start: np.ndarray
) -> dict[str, np.ndarray]:
    """Per tracked class: pixel distance between predicted and real centroids (N,), nan where
    either is missing; plus "moved_objects": mean error over objects (not the gripper) whose
    real centroid moved by more than 1 pixel from ``start``."""
    cp, cr, cs = seg.centroids(pred), seg.centroids(real), seg.centroids(start)
    idx = [seg.names.index(t) for t in tracked]
    err = np.linalg.norm(cp[:, idx] - cr[:, idx], axis=-1)  # (N, T)
    moved = np.linalg.norm(cr[:, idx] - cs[:, idx], axis=-1) > 1.0
    out = {name: err[:, i] for i, name in enumerate(tracked)}
    obj = np.array([t != "gripper" for t in tracked])
    sel = np.where(moved & obj[None], err, np.nan)
    with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)
        out["moved_objects"] = np.nanmean(sel, axis=1)
        out["objects"] = np.nanmean(np.where(obj[None], err, np.nan), axis=1)
    return out


def frame_metrics(
    pred: np.ndarray,
    real: np.ndarray,
    start: np.ndarray,
    *,
    segmenter: tuple[ColorSegmenter, list[str]] | None,
    threshold: float = 0.1,
) -> dict[str, np.ndarray]:
    """All per-frame metrics of ``pred`` against ``real`` (start = the last real frame)."""
    m = {
        "psnr": psnr(pred, real),
        "ssim": ssim(pred, real),
        "changed_rmse": changed_rmse(pred, real, start, threshold=threshold),
    }
    if segmenter is not None:
        for k, v in position_errors(*segmenter, pred, real, start).items():
            m[f"pos_err/{k}"] = v
    return m


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return round(float(x.mean()), 4) if len(x) else None


def summarize(per_h: dict[int, dict[str, list[np.ndarray]]]) -> dict[str, Any]:
    """{h: {"model": {metric: mean}, "copy_last_frame": {...}, "n": count}} (means over finite
    values; identical frames give PSNR inf, left out of the mean and counted in ``psnr_inf``)."""
    out: dict[str, Any] = {}
    for h, d in per_h.items():
        row: dict[str, Any] = {}
        for who in ("model", "copy_last_frame"):
            vals = {
                k.split(":", 1)[1]: np.concatenate(v)
                for k, v in d.items()
                if k.startswith(who + ":")
            }
            row[who] = {k: _mean(v) for k, v in vals.items()}
            row[who]["psnr_inf"] = int(np.isinf(vals["psnr"]).sum()) if "psnr" in vals else 0
        row["n"] = int(sum(len(a) for a in d.get("model:psnr", [])))
        out[str(h)] = row
    return out


def write_side_by_side(
    path: str | Path, real: np.ndarray, imagined: np.ndarray, *, scale: int = 4, fps: int = 5
) -> Path:
    """Write a GIF of real | imagined frames. real, imagined: (T, H, W, 3) uint8."""
    from PIL import Image

    path = Path(path)
    t, h, w, _ = real.shape
    gap = np.full((t, h, max(1, w // 16), 3), 255, np.uint8)
    both = np.concatenate([real, gap, imagined], axis=2)
    both = both.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f) for f in both]
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    tmp.replace(path)
    return path


__all__ = [
    "psnr",
    "ssim",
    "changed_rmse",
    "ColorSegmenter",
    "tabletop_segmenter",
    "position_errors",
    "frame_metrics",
    "summarize",
    "write_side_by_side",
    "HORIZONS",
]
