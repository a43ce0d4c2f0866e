"""How a person is continued past the edge of the image that shows it: the edge's colour blurred
the more, the farther from it, so that a narrow detail at the edge (a neck between collars) does
not run on as a long stripe. Shared by model.data.matting.continue_person (a portrait past its
photo), model.geometry.portrait_warp.moved_torso (a risen body past the crop's bottom) and that
one's NumPy twin (model.coldstart.conditions); torch-free."""
from __future__ import annotations

import numpy as np

SPREAD = 0.5  # px of blur per px past the edge
SPREAD_LEVELS = (0.0, 1.5, 3.0, 6.0, 12.0)  # Gaussian widths (px of a 128 px crop) between which a pixel's blur is interpolated


def gaussian_taps(sigma: float) -> list[float]:
    """The weights of a Gaussian of width sigma px (radius ceil(3 sigma)), summing to 1, as float32
    values."""
    r = int(np.ceil(3.0 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return [float(v) for v in (k / k.sum()).astype(np.float32)]


def blur_levels(row: np.ndarray, sigmas: list[float]) -> np.ndarray:
    """(C, L, w) float32: a row (C, w) blurred along w by Gaussians of each width (0: as it is),
    its ends repeated."""
    row = np.asarray(row, np.float32)
    C, w = row.shape
    idx = np.arange(w)
    out = []
    for s in sigmas:
        if s <= 0:
            out.append(row)
            continue
        taps = gaussian_taps(s)
        r = len(taps) // 2
        acc = np.zeros_like(row)
        for j, k in enumerate(taps):
            acc = acc + np.float32(k) * row[:, np.clip(idx + j - r, 0, w - 1)]
        out.append(acc)
    return np.stack(out, 1)
