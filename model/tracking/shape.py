"""Metric identity template, head frame and per-frame expression offsets from MediaPipe points.

MediaPipe's pseudo-3D points (see facemesh.py) have the right shape but no metric scale. The scale
comes from a mean-face prior on the size of the stable points (forehead, nose, eye corners,
cheekbones): their RMS distance to their centroid is set to `STABLE_RMS`. That constant is the mean,
over 17 portraits (assets/astronaut.png and the 16 portraits of ../shared/data/images), of the same
size measured on faces scaled to the mean adult interpupillary distance of 63 mm (Dodgson 2004:
63.4 mm; eye centres = midpoints of the eye corners): 58.7 mm, spread 2.1 mm. Sizing by 31 points
rather than by the eye distance alone makes the scale far less sensitive to landmark noise.

The head frame (OpenCV-like, metres): x from the subject's right eye to the left eye (image right
on a frontal face), y down the face (orthogonal to x, from the eye line towards the mouth corners),
z = x × y into the head. Its origin, the head joint (the head's centre of rotation), sits
`JOINT_BEHIND_EYES` behind and `JOINT_BELOW_EYES` below the midpoint of the eye centres: about
9-10 cm behind the face surface at ear level, where the tragion and the atlanto-occipital pivot
are on an average adult head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.tracking.facemesh import LEFT_EYE_CORNERS, MOUTH_CORNERS, RIGHT_EYE_CORNERS, STABLE_POINTS

EYE_DISTANCE = 0.063  # m, mean adult interpupillary distance
STABLE_RMS = 0.0587  # m, RMS radius of the stable points of a face with EYE_DISTANCE (the metric prior)
JOINT_BEHIND_EYES = 0.09  # m along +z (into the head) from the eye-centre midpoint
JOINT_BELOW_EYES = 0.03  # m along +y (down)


@dataclass(frozen=True)
class Similarity:
    """x_dst = scale * R @ x_src + t, batched: scale (N,), R (N, 3, 3), t (N, 3)."""

    scale: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(N, P, 3) points -> (N, P, 3)."""
        return self.scale[:, None, None] * x @ np.swapaxes(self.R, -1, -2) + self.t[:, None, :]

    def invert_points(self, y: np.ndarray) -> np.ndarray:
        """Points (N, P, 3) in the destination frame back into the source frame."""
        return ((y - self.t[:, None, :]) @ self.R) / self.scale[:, None, None]


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ≈ s R src + t (Umeyama 1991) for (P, 3) point sets."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    var_s = (w * (xs**2).sum(1)).sum()
    s = float(np.trace(np.diag(S) @ D) / var_s)
    return s, R, mu_d - s * R @ mu_s


def fit_similarities(shape: np.ndarray, points: np.ndarray) -> Similarity:
    """Similarities taking `shape` (P, 3) onto each of `points` (N, P, 3), fitted on STABLE_POINTS."""
    fits = [umeyama(shape[STABLE_POINTS], p[STABLE_POINTS]) for p in points]
    return Similarity(
        np.array([f[0] for f in fits]), np.stack([f[1] for f in fits]), np.stack([f[2] for f in fits])
    )


def eye_centres(shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) eye centres (..., 3) of a (..., P, 3) shape: midpoints of the eye corners."""
    right = shape[..., list(RIGHT_EYE_CORNERS), :].mean(-2)
    left = shape[..., list(LEFT_EYE_CORNERS), :].mean(-2)
    return right, left


def head_frame(shape: np.ndarray) -> Similarity:
    """The similarity (N = 1) taking a shape (P, 3) given in any units and axes into the metric head
    frame: x_head = scale * R @ x + t."""
    right, left = eye_centres(shape)
    mouth = shape[list(MOUTH_CORNERS)].mean(0)
    mid = (right + left) / 2
    x = left - right
    stable = shape[STABLE_POINTS]
    metres_per_unit = STABLE_RMS / np.sqrt(((stable - stable.mean(0)) ** 2).sum(1).mean())
    x = x / np.linalg.norm(x)
    y = mouth - mid
    y = y - (y @ x) * x
    y = y / np.linalg.norm(y)
    z = np.cross(x, y)
    R = np.stack([x, y, z])  # rows: head axes in the shape's coordinates
    joint = mid + (JOINT_BEHIND_EYES * z + JOINT_BELOW_EYES * y) / metres_per_unit
    t = -metres_per_unit * R @ joint
    return Similarity(np.array([metres_per_unit]), R[None], t[None])


@dataclass(frozen=True)
class ShapeFit:
    template: np.ndarray  # (P, 3) metric neutral shape in the head frame
    expression: np.ndarray  # (N, P, 3) metric offsets in the head frame
    head_to_points: Similarity  # per frame: points ≈ head_to_points.apply(template + expression)


def fit_shape(points: np.ndarray, found: np.ndarray, iterations: int = 3) -> ShapeFit:
    """Identity template and per-frame expressions from pseudo-3D points (N, P, 3).

    Every frame is aligned onto a reference by a similarity on the stable points; the reference is
    refined as the per-point median of the aligned frames where the face was found (robust to
    blinks and speech, so it approximates the neutral shape). The median shape, put into the metric
    head frame, is the template; what each aligned frame differs from it by is its expression."""
    if not found.any():
        raise ValueError("fit_shape needs at least one frame with a face")
    good = points[found]
    ref = good[len(good) // 2]
    for _ in range(iterations):
        sims = [umeyama(g[STABLE_POINTS], ref[STABLE_POINTS]) for g in good]
        aligned = np.stack([s * g @ R.T + t for (s, R, t), g in zip(sims, good)])
        ref = np.median(aligned, axis=0)
    to_head = head_frame(ref)
    template = to_head.apply(ref[None])[0]
    head_to_points = fit_similarities(template, points)
    expression = head_to_points.invert_points(points) - template
    return ShapeFit(template, expression, head_to_points)
