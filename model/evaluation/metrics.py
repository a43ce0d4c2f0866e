"""Image, stereo and landmark figures of `imp eval` (model/evaluation/): pure functions on image
tensors in [-1, 1] (N, C, H, W) or uint8 frames (N, H, W, 3).

- l1 / psnr (optionally inside a mask) / ssim;
- stereo: a frontal MPI rendered as a 5 cm stereo pair (model.geometry.camera.stereo_pair); OpenCV
  StereoSGBM's disparity against the MPI's own expected disparity f * b / z in the left view and
  against the tracked mesh's, mean |difference| in pixels inside the face as the left eye sees it;
- landmarks: MediaPipe face mesh on two sets of frames (both upscaled to LANDMARK_SIZE px, the same
  detector), mean distance of the 468 mesh points in the frames' pixels; or against given points.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.geometry import camera, mpi
from model.net.unet import MPIPrediction

STEREO_BASELINE = 0.05  # m, the paper's stereo experiment
STEREO_SIZE = 256  # px: the stereo pair is rendered at about this size (as a viewer would), errors reported in MPI px
LANDMARK_SIZE = 256  # px: MediaPipe needs a face larger than the training crops
MESH_POINTS = 468


def _masked_mean(x: Tensor, mask: Tensor | None) -> float:
    """Mean of x (N, C, H, W) over all entries, or over the pixels where mask (N, 1, H, W) is set
    (NaN when none is)."""
    if mask is None:
        return float(x.mean())
    m = mask.to(x.dtype).expand_as(x)
    return float((x * m).sum() / m.sum()) if float(m.sum()) > 0 else math.nan


def l1(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Mean |a - b| of images (N, C, H, W) in [-1, 1], measured on the [0, 1] scale; inside mask
    (N, 1, H, W) bool when given."""
    return _masked_mean((a - b).abs() / 2, mask)


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """PSNR (dB) of images (N, C, H, W) in [-1, 1] (peak 1 on the [0, 1] scale), inside mask
    (N, 1, H, W) bool when given; inf when equal."""
    mse = _masked_mean(((a - b) / 2).square(), mask)
    return mse if math.isnan(mse) else math.inf if mse == 0 else 10 * math.log10(1 / mse)


def ssim(a: Tensor, b: Tensor, mask: Tensor | None = None, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004; Gaussian window, K1 0.01, K2 0.03) of images (N, C, H, W) in
    [-1, 1], computed on the [0, 1] scale per channel, valid region only; averaged over the windows
    centred inside mask (N, 1, H, W) bool when given."""
    a, b = (a.double() + 1) / 2, (b.double() + 1) / 2
    C = a.shape[1]
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(C, 1, window, window)
    win = min(window, a.shape[-1], a.shape[-2])
    if win < window:
        k = k[..., :win, :win] / k[..., :win, :win].sum((-1, -2), keepdim=True)
    f = lambda t: F.conv2d(t, k, groups=C)
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    if mask is None:
        return float(s.mean())
    h0, w0 = (win - 1) // 2, (win - 1) // 2
    m = mask[..., h0:h0 + s.shape[-2], w0:w0 + s.shape[-1]]
    return _masked_mean(s, m)


def sgbm_disparity(left: np.ndarray, right: np.ndarray, max_disparity: float) -> np.ndarray:
    """OpenCV StereoSGBM disparity (H, W) float in pixels of the input (NaN where invalid) for two
    RGB uint8 images of a rectified pair, the right camera +x of the left. Small images are
    upscaled first (the matcher needs texture over its block) and the result scaled back."""
    import cv2

    h, w = left.shape[:2]
    s = max(1, int(round(256 / w)))
    L = cv2.cvtColor(cv2.resize(left, (w * s, h * s), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2GRAY)
    R = cv2.cvtColor(cv2.resize(right, (w * s, h * s), interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2GRAY)
    num = 16 * int(math.ceil((max_disparity * s * 1.5 + 8) / 16))
    block = 5
    matcher = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num, blockSize=block, P1=8 * block * block,
                                    P2=32 * block * block, uniquenessRatio=5, speckleWindowSize=50, speckleRange=2,
                                    mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    d = matcher.compute(L, R).astype(np.float32) / 16.0
    d[d <= 0] = np.nan
    d = cv2.resize(d, (w, h), interpolation=cv2.INTER_AREA if s > 1 else cv2.INTER_NEAREST) / s
    return d


def stereo_check(frame: MPIPrediction, depths: Tensor, K: Tensor, mesh_alpha: Tensor, baseline: float = STEREO_BASELINE,
                 background: Tensor | None = None) -> tuple[float, float, float]:
    """One MPI frame's stereo figures, inside the face as the left eye sees it:
    (mean |SGBM - MPI's expected disparity| px, share of face pixels SGBM matched,
    mean |SGBM - tracked mesh's disparity| px).

    frame: frontal, residual (3, H, W), alpha (D, H, W); depths (D,); K (3, 3); mesh_alpha (D, H, W)
    the driving mesh's alpha planes in the MPI camera. SGBM's map lives on the left image's pixels,
    so the face and the mesh's disparity are rendered into the left eye too (as an MPI: the mesh's
    alpha planes composite to its coverage and to its disparity, the far plane's where uncovered)."""
    eye = torch.eye(4)
    T_left, T_right = camera.stereo_pair(eye, baseline)
    H, W = frame.alpha.shape[-2:]
    s = max(1, STEREO_SIZE // W)
    K_eye = camera.scale_intrinsics(K, s)
    hw = (H * s, W * s)
    cams = [depths[None], K[None], K_eye[None]]
    bg = None if background is None else background[None]
    left = mpi.render(*(t[None] for t in frame), *cams, T_left[None], bg, out_hw=hw)
    right = mpi.render(*(t[None] for t in frame), *cams, T_right[None], bg, out_hw=hw)
    blank = torch.zeros_like(frame.frontal)[None]
    mesh_left = mpi.render(blank, blank, mesh_alpha[None], *cams, T_left[None], out_hw=hw)
    fb = float(K_eye[0, 0]) * baseline
    expected = (fb * left.disparity[0, 0]).numpy()
    mesh_expected = (fb * mesh_left.disparity[0, 0]).numpy()
    to_u8 = lambda x: np.ascontiguousarray(((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
    measured = sgbm_disparity(to_u8(left.rgb), to_u8(right.rgb), float(max(expected.max(), mesh_expected.max())))
    face = (mesh_left.mask[0, 0] > 0.5).numpy()
    valid = face & np.isfinite(measured)
    if not valid.any():
        return math.nan, 0.0, math.nan
    return (float(np.abs(measured[valid] - expected[valid]).mean()) / s, float(valid.sum() / max(1, face.sum())),
            float(np.abs(measured[valid] - mesh_expected[valid]).mean()) / s)


def landmark_distance(generated: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(mean distance in px of the 468 MediaPipe mesh points between generated and real frames,
    share of frames where both were detected); frames (N, H, W, 3) uint8 of the same size."""
    found = detect_landmarks(np.concatenate([generated, real]))
    n = len(generated)
    dists = [float(np.linalg.norm(g - r, axis=1).mean()) for g, r in zip(found[:n], found[n:]) if g is not None and r is not None]
    return (float(np.mean(dists)) if dists else math.nan), len(dists) / max(1, n)


def detect_landmarks(frames: np.ndarray) -> list[np.ndarray | None]:
    """MediaPipe's 468 mesh points (n, 468, 2) in the frames' pixels for frames (N, H, W, 3) uint8,
    each upscaled to LANDMARK_SIZE px first; None where no face is found."""
    import cv2

    from model.tracking.facemesh import FaceMeshRunner

    out = []
    n, h, w = frames.shape[:3]
    s = LANDMARK_SIZE / w
    with FaceMeshRunner(static=True) as runner:
        for im in frames:
            pts = runner(cv2.resize(np.ascontiguousarray(im), (LANDMARK_SIZE, int(round(h * s))), interpolation=cv2.INTER_CUBIC))
            out.append(None if pts is None else pts[:MESH_POINTS, :2] / s)
    return out


def landmark_distance_to(frames: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """(mean distance in px of MediaPipe's 468 mesh points on frames (N, H, W, 3) uint8 to given
    points (N, >=468, 2) in the same pixels, e.g. a driving mesh projected into the camera; share of
    frames where a face was detected)."""
    found = detect_landmarks(frames)
    d = [float(np.linalg.norm(f - p[:MESH_POINTS], axis=1).mean()) for f, p in zip(found, points) if f is not None]
    return (float(np.mean(d)) if d else math.nan), len(d) / max(1, len(frames))
