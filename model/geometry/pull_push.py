"""Pull-push filling in NumPy (torch-free): values known on part of an image continued over the
rest by averaging over halvings and pushing the averages back down where a finer level knows too
little. The float32 twin of `model.geometry.portrait_warp.fill_in` (the identity condition's seam,
made by the viewer's torch-free worker, model/coldstart/conditions.py), and what fills a portrait's
background past its photo's edges (model/data/matting.py), where OpenCV's inpainting drew wedges
and tiles across a large hole."""
from __future__ import annotations

import numpy as np

_f32 = np.float32


def avg_pool2(x: np.ndarray) -> np.ndarray:
    """(..., h // 2, w // 2): F.avg_pool2d(x, 2) of x (..., h, w), its four terms summed in order."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return (((x[..., 0::2, 0::2] + x[..., 0::2, 1::2]) + x[..., 1::2, 0::2]) + x[..., 1::2, 1::2]) / _f32(4.0)


def _resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Torch's bilinear taps (align_corners=False) along one axis: first and second source index
    and their weights (n_out,)."""
    src = np.maximum(_f32(n_in / n_out) * (np.arange(n_out, dtype=_f32) + _f32(0.5)) - _f32(0.5), _f32(0.0))
    i0 = src.astype(np.int64)
    far = src - i0.astype(_f32)
    return i0, np.minimum(i0 + 1, n_in - 1), _f32(1.0) - far, far


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., H, W): F.interpolate(x, size, mode="bilinear", align_corners=False) of x (..., h, w)."""
    y0, y1, a0, a1 = _resize_taps(x.shape[-2], size[0])
    x0, x1, b0, b1 = _resize_taps(x.shape[-1], size[1])
    rows = x[..., y0, :] * a0[:, None] + x[..., y1, :] * a1[:, None]
    return rows[..., x0] * b0 + rows[..., x1] * b1


def fill_in(values: np.ndarray, weight: np.ndarray, levels: int) -> np.ndarray:
    """values (n, C, H, W) known where weight (n, 1, H, W) in [0, 1] is positive, continued past
    them and faded out to 0 over ~2^levels pixels (model.geometry.portrait_warp.fill_in's pull-push;
    `full_levels` reaches every pixel)."""
    sums, weights = [values * weight], [weight]
    for _ in range(levels):
        sums.append(avg_pool2(sums[-1]))
        weights.append(avg_pool2(weights[-1]))
    est = sums[-1] / np.maximum(weights[-1], _f32(1e-6))
    for k in range(levels - 1, -1, -1):
        coarse = resize_bilinear(est, sums[k].shape[-2:])
        known = np.minimum(_f32(4.0) * weights[k], _f32(1.0))
        est = known * sums[k] / np.maximum(weights[k], _f32(1e-6)) + (_f32(1.0) - known) * coarse
    return est


def full_levels(hw: tuple[int, int]) -> int:
    """The halvings after which an image of size hw is one cell: fill_in with them continues the
    known values over the whole image (when any is known)."""
    return max(0, int(np.floor(np.log2(max(1, min(hw))))))
