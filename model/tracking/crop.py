"""One fixed square crop per video around the head, and the camera that goes with it.

Tight, as in the paper's supplement (fig. B): the crop spans `CROP_SPAN` metres at the head, i.e.
the head (~23 cm chin to crown) fills ~60 % of it with a little hair and shoulder room, centred
just below the eyes. With the crop camera's f = 2.5 · S (model.geometry.crop_camera.crop_camera_K) a crop of
0.4 m at the head puts the head at 2.5 · 0.4 = 1 m, the viewing distance of DESIGN.md. When the
head moves, the crop grows to hold every frame's centre span, so it never follows the head.

Cutting images with it: `crop_affine` (source pixels -> crop pixels at any resolution),
`crop_image` (the warp, alias-free when shrinking) and `valid_mask` (which crop pixels the source
image covers)."""
from __future__ import annotations

import numpy as np

from model.geometry.crop_camera import DEFAULT_FOCAL_FACTOR, crop_camera_K

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


def crop_affine(K_source: np.ndarray, res: int) -> np.ndarray:
    """(3, 3) affine map from source pixels to crop pixels: crop_camera_K(res) @ K_source^-1.

    K_source is the tracker's source-frame intrinsics (f = 2.5 * crop size, principal point at the
    crop centre), so the resized crop's camera is exactly crop_camera_K(res)."""
    A = crop_camera_K(res) @ np.linalg.inv(np.asarray(K_source, np.float64))
    if abs(A[0, 1]) > 1e-9 or abs(A[1, 0]) > 1e-9 or abs(A[0, 0] - A[1, 1]) > 1e-6 * abs(A[0, 0]):
        raise ValueError("the source intrinsics are not a square-pixel crop camera (f_x != f_y or skew)")
    return A


def crop_image(image: np.ndarray, A: np.ndarray, res: int, border: str = "constant") -> np.ndarray:
    """Warp an image (H, W[, C]) by the crop affine A (3, 3) into (res, res[, C]), same dtype.

    Downscaling goes through an integer multiple m * res with bilinear sampling and an exact m x m
    box filter (cv2.INTER_AREA), so a 4x reduction does not alias. Where the crop reaches beyond
    the image, border "constant" fills 0 (the dataset: nothing made up, `valid_mask` tells where)
    and "replicate" repeats the edge pixels (a still portrait to look at)."""
    import cv2

    modes = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}
    if border not in modes:
        raise ValueError(f"border must be one of {sorted(modes)}, got {border!r}")

    scale = float(A[0, 0])
    m = max(1, int(round(1.0 / scale))) if scale < 1.0 else 1
    # pixel u of the res-crop is the centre of the m x m block starting at m*u: u_m = m u + (m-1)/2
    S = np.array([[m, 0.0, (m - 1) / 2.0], [0.0, m, (m - 1) / 2.0], [0.0, 0.0, 1.0]])
    Am = (S @ A)[:2].astype(np.float64)
    blocks = (0, 0, res, res) if border != "constant" else _covered_blocks(Am, image.shape[:2], m, res)
    bx0, by0, bx1, by1 = blocks
    out = np.zeros((res, res) + image.shape[2:], image.dtype)
    if bx1 <= bx0 or by1 <= by0:  # the crop misses the image entirely
        return out
    # only the m x m blocks the image reaches are sampled: a crop that leaves a small video's frame
    # is mostly border, and warping all of it cost imp prepare ~2 ms a frame
    Am[:, 2] -= (m * bx0, m * by0)
    part = cv2.warpAffine(image, Am, (m * (bx1 - bx0), m * (by1 - by0)), flags=cv2.INTER_LINEAR,
                          borderMode=modes[border], borderValue=0)
    if m > 1:
        part = cv2.resize(part, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
    out[by0:by1, bx0:bx1] = part.reshape(out[by0:by1, bx0:bx1].shape)
    return out


def _covered_blocks(Am: np.ndarray, shape: tuple[int, int], m: int, res: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in crop pixels: the m x m blocks of the (m res)^2 warp whose bilinear samples
    can touch an image of `shape` (H, W) under the axis-aligned map Am (2, 3); outside them the
    constant-border warp is exactly 0."""
    H, W = shape
    lo, hi = [], []
    for axis, size in ((0, W), (1, H)):
        s, t = Am[axis, axis], Am[axis, 2]
        # source x in (-1, size) is within one pixel of the image; one more block of margin on each side
        a, b = sorted((s * -1.0 + t, s * size + t))
        lo.append(min(res, max(0, int(np.floor(a / m)) - 1)))
        hi.append(min(res, max(0, int(np.ceil(b / m)) + 1)))
    return lo[0], lo[1], hi[0], hi[1]


def valid_mask(A: np.ndarray, image_size: tuple[int, int], res: int) -> np.ndarray:
    """(res, res) bool: crop pixels that lie inside the source image of size (W, H)."""
    W, H = image_size
    return crop_image(np.ones((H, W), np.float32), A, res) > 0.5
