"""Metric head pose per frame: perspective-n-point of the metric face against its 2D landmarks."""
from __future__ import annotations

import numpy as np

from model.tracking.shape import Similarity


def initial_poses(head_to_points: Similarity, K: np.ndarray) -> np.ndarray:
    """T_cam_from_head (N, 4, 4) from the weak-perspective similarities (head frame -> pseudo-3D
    pixels): the rotation as is, the head joint back-projected at depth f / scale."""
    f = float(K[0, 0])
    z = f / head_to_points.scale
    uv = head_to_points.t[:, :2]
    xy = (uv - K[:2, 2]) * z[:, None] / f
    T = np.tile(np.eye(4), (len(z), 1, 1))
    T[:, :3, :3] = head_to_points.R
    T[:, :3, 3] = np.column_stack([xy, z])
    return T


def solve_poses(vertices_head: np.ndarray, landmarks: np.ndarray, K: np.ndarray, init: np.ndarray) -> np.ndarray:
    """T_cam_from_head (N, 4, 4) float64 minimising the reprojection error of vertices_head
    (N, P, 3) onto landmarks (N, P, 2) with intrinsics K, refined from `init` (N, 4, 4)."""
    import cv2

    Kd = K.astype(np.float64)
    out = np.empty_like(init, dtype=np.float64)
    for i, (v, uv, T0) in enumerate(zip(vertices_head, landmarks, init)):
        rvec, _ = cv2.Rodrigues(T0[:3, :3])
        tvec = T0[:3, 3].reshape(3, 1).copy()
        ok, rvec, tvec = cv2.solvePnP(
            v.astype(np.float64), uv.astype(np.float64), Kd, None, rvec, tvec,
            useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not ok or tvec[2, 0] <= 0:  # keep the closed-form estimate rather than a flipped solution
            out[i] = T0
            continue
        out[i] = np.eye(4)
        out[i, :3, :3] = cv2.Rodrigues(rvec)[0]
        out[i, :3, 3] = tvec[:, 0]
    return out


def transform_points(T: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Points (..., P, 3) through poses T (..., 4, 4)."""
    return x @ np.swapaxes(T[..., :3, :3], -1, -2) + T[..., None, :3, 3]


def project_points(K: np.ndarray, x_cam: np.ndarray) -> np.ndarray:
    """Pixels (..., P, 2) of camera-frame points (..., P, 3)."""
    uvw = x_cam @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def yaw_pitch_roll(T: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) (..., 3) in degrees of poses T (..., 4, 4), as model.geometry.camera.rotation_to_euler."""
    import torch

    from model.geometry.camera import rotation_to_euler

    return np.degrees(rotation_to_euler(torch.from_numpy(np.asarray(T[..., :3, :3], dtype=np.float64))).numpy())
