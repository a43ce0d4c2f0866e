"""Zero-lag temporal smoothing of tracked points, and the gap filling before it.

The face is smoothed in two parts: its rigid (similarity) motion, carried by the stable points, and
its shape in face coordinates (expression). Each part gets its own filter: head motion can be
smoothed hard, while lips and eyelids move fast during speech and blinks and need a filter that
opens up quickly (a single filter on raw points either leaves head jitter or flattens speech).

A One-Euro filter (Casiez et al. 2012) smooths strongly when a point is slow (jitter) and opens
up when it moves fast (real motion). Causal, it still lags a little on fast motion; since whole
videos are processed offline, it is run forwards and backwards and the two averaged, which cancels
the lag to first order (as forward-backward linear filtering has zero phase)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.tracking.facemesh import STABLE_POINTS
from model.tracking.shape import eye_centres, umeyama


@dataclass(frozen=True)
class OneEuroConfig:
    """Cut-offs in Hz; `beta` in 1 / (unit of the signal), so use a scale-free signal (see smooth_points)."""

    min_cutoff: float = 1.5
    beta: float = 1.0
    d_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)


def one_euro(x: np.ndarray, fps: float, cfg: OneEuroConfig = OneEuroConfig()) -> np.ndarray:
    """Causal One-Euro filter over time of x (N, K, D): the K points share a cut-off per point,
    driven by the speed (norm over D) of that point."""
    out = np.empty_like(x, dtype=np.float64)
    out[0] = x[0]
    dx = np.zeros(x.shape[1:2], dtype=np.float64)
    a_d = _alpha(cfg.d_cutoff, fps)
    for i in range(1, len(x)):
        speed = np.linalg.norm(x[i] - out[i - 1], axis=-1) * fps
        dx = a_d * speed + (1 - a_d) * dx
        a = _alpha(cfg.min_cutoff + cfg.beta * dx, fps)[:, None]
        out[i] = a * x[i] + (1 - a) * out[i - 1]
    return out


def smooth_zero_lag(x: np.ndarray, fps: float, cfg: OneEuroConfig = OneEuroConfig()) -> np.ndarray:
    """Average of the forward and the backward One-Euro pass over x (N, K, D): no lag."""
    if len(x) < 3:
        return np.asarray(x, dtype=np.float64).copy()
    fwd = one_euro(x, fps, cfg)
    bwd = one_euro(x[::-1], fps, cfg)[::-1]
    return 0.5 * (fwd + bwd)


RIGID = OneEuroConfig(min_cutoff=0.5, beta=3.0)  # head motion: calm when still, open on turns
LOCAL = OneEuroConfig(min_cutoff=1.0, beta=5.0)  # expressions: keep speech and blinks
# what a driver's hair may follow when it moves more steadily than the tracked head
# (model/data/hair_motion.py chooses per video among the tracked poses, STEADY and STEADIER): the
# tracked pose wobbles with speech (the cheeks among the stable points move), the skull and the
# hair on it do not. Chosen on the 14 tuning videos (model card), the shipped student: 24.19 dB with
# the hair on the tracked poses, 24.44 with STEADY on every video, 24.50 choosing between the
# tracked poses and STEADY, 24.60 choosing among all three (the best of the three on every video
# is 24.61). STEADIER alone, (0.1 Hz, beta 0.06), gains on still speakers (d6, d18) and lags the
# turns of others (German, HelloMeme), which the choice gives STEADY
STEADY = OneEuroConfig(min_cutoff=0.1, beta=0.25)
STEADIER = OneEuroConfig(min_cutoff=0.1, beta=0.06)
POSE_UNIT = 0.063  # m (the eye distance prior): pose trajectories are smoothed in this unit, as points are
_POSE_POINTS = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]])  # head frame, m


def smooth_points(points: np.ndarray, fps: float, rigid: OneEuroConfig = RIGID, local: OneEuroConfig = LOCAL) -> np.ndarray:
    """Smooth pseudo-3D face landmarks (N, P, 3) in pixels over time, with no lag.

    Each frame is split into a similarity (the median shape's stable points fitted onto the
    frame) and the frame's shape brought back into the median shape's coordinates. The rigid part
    is smoothed as the trajectories of the moved stable points and re-fitted; the shape part per
    landmark. Both work in units of the eye distance, so one config suits every resolution.
    Tuned on LivePortrait d3 / d6 / d9 (tests/test_tracking.py measures jitter and lag)."""
    ref = np.median(points, axis=0)
    right, left = eye_centres(ref)
    unit = float(np.linalg.norm(left - right))
    anchors = ref[STABLE_POINTS]
    sims = [umeyama(anchors, p[STABLE_POINTS]) for p in points]
    shape = np.stack([((p - t) @ R) / s for (s, R, t), p in zip(sims, points)])
    moved = np.stack([s * anchors @ R.T + t for s, R, t in sims])
    shape = smooth_zero_lag(shape / unit, fps, local) * unit
    moved = smooth_zero_lag(moved / unit, fps, rigid) * unit
    out = np.empty_like(shape)
    for i, (m, x) in enumerate(zip(moved, shape)):
        s, R, t = umeyama(anchors, m)
        out[i] = s * x @ R.T + t
    return out


def steady_poses(T: np.ndarray, fps: float, cfg: OneEuroConfig = STEADY) -> np.ndarray:
    """(N, 4, 4) float64: rigid poses T (N, 4, 4) smoothed over time with no lag, as the
    trajectories of a few points of the posed frame (the joint and 10 cm along each axis) and
    re-fitted (rotation and translation, no scale). Fewer than 3 poses or fps <= 0 come back as
    they are."""
    T = np.asarray(T, np.float64)
    if len(T) < 3 or fps <= 0:
        return T.copy()
    moved = _POSE_POINTS @ T[:, :3, :3].swapaxes(1, 2) + T[:, None, :3, 3]  # (N, 4, 3)
    moved = smooth_zero_lag(moved / POSE_UNIT, fps, cfg) * POSE_UNIT
    out = np.tile(np.eye(4), (len(T), 1, 1))
    centre = _POSE_POINTS.mean(0)
    for i, m in enumerate(moved):
        _, R, _ = umeyama(_POSE_POINTS, m)
        out[i, :3, :3] = R
        out[i, :3, 3] = m.mean(0) - R @ centre
    return out


def fill_gaps(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Points (N, ...) with the frames where `found` is False linearly interpolated from the
    nearest found frames (held constant before the first and after the last)."""
    if not found.any():
        raise ValueError("fill_gaps needs at least one found frame")
    if found.all():
        return points.copy()
    idx = np.arange(len(points))
    flat = points.reshape(len(points), -1)
    out = np.empty_like(flat)
    for k in range(flat.shape[1]):
        out[:, k] = np.interp(idx, idx[found], flat[found, k])
    return out.reshape(points.shape)


def jitter(points: np.ndarray) -> float:
    """Frame-to-frame jitter of tracked 2D/3D points (N, P, D): RMS norm of the second difference
    x_t - (x_{t-1} + x_{t+1}) / 2, the high-frequency part of the motion, in the points' units."""
    second = points[1:-1] - 0.5 * (points[:-2] + points[2:])
    return float(np.sqrt((np.linalg.norm(second, axis=-1) ** 2).mean()))
