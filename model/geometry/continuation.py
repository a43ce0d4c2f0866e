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
    values: the same in torch and NumPy."""
    r = int(np.ceil(3.0 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return [float(v) for v in (k / k.sum()).astype(np.float32)]
