"""One fixed square crop per video around the head, and the camera that goes with it.

Tight, as in the paper's supplement (fig. B): the crop spans `CROP_SPAN` metres at the head, i.e.
the head (~23 cm chin to crown) fills ~60 % of it with a little hair and shoulder room, centred
just below the eyes. With the crop camera's f = 2.5 · S (model.camera.crop_intrinsics) a crop of
0.4 m at the head puts the head at 2.5 · 0.4 = 1 m, the viewing distance of DESIGN.md. When the
head moves, the crop grows to hold every frame's centre span, so it never follows the head."""
from __future__ import annotations

import numpy as np

from model.camera import DEFAULT_FOCAL_FACTOR

CROP_SPAN = 0.40  # m across the crop at the head's distance
CENTRE_BELOW_EYES = 0.01  # m: the crop centre sits this far below the eye line


def head_crop(eye_mid_px: np.ndarray, down_px: np.ndarray, px_per_metre: np.ndarray) -> np.ndarray:
    """(3,) float32 crop x0, y0, size in source pixels (integers, may leave the image).

    eye_mid_px (N, 2): the eyes' midpoint per frame; down_px (N, 2): the face's unit "down"
    direction in the image per frame; px_per_metre (N,): face scale per frame."""
    centres = eye_mid_px + CENTRE_BELOW_EYES * px_per_metre[:, None] * down_px
    lo, hi = centres.min(0), centres.max(0)
    centre = (lo + hi) / 2
    size = np.ceil(CROP_SPAN * np.median(px_per_metre) + (hi - lo).max())
    x0, y0 = np.round(centre - (size - 1) / 2)
    return np.array([x0, y0, size], dtype=np.float32)


def crop_K(crop: np.ndarray, focal_factor: float = DEFAULT_FOCAL_FACTOR) -> np.ndarray:
    """(3, 3) float32 intrinsics of the source frame such that the crop, resized to any S px, has
    f = focal_factor · S and its principal point at its centre (S - 1) / 2."""
    x0, y0, size = (float(v) for v in crop)
    f = focal_factor * size
    c = (size - 1) / 2
    return np.array([[f, 0, x0 + c], [0, f, y0 + c], [0, 0, 1]], dtype=np.float32)


def resized_crop_K(K: np.ndarray, crop: np.ndarray, res: int) -> np.ndarray:
    """(3, 3) float32 intrinsics of the crop cut from the source and resized to res x res px."""
    x0, y0, size = (float(v) for v in crop)
    s = res / size
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float64)
    # resizing by s with pixel centres kept: u' = s u + (s - 1) / 2
    scale = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]], dtype=np.float64)
    return (scale @ shift @ K.astype(np.float64)).astype(np.float32)
