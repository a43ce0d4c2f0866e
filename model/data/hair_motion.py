"""Whether a driver's hair follows its tracked head or a steadier pose, from the person mattes of
its frames.

The identity condition (model/geometry/portrait_warp.py) moves the portrait's hair and ears with the
driver's head. The tracked head pose also wobbles while the driver talks: the face tracker's stable
points include the cheeks, which move with speech, and a few tenths of a pixel of that wobble moved
the whole hair outline with it on speakers whose skull stays still (LivePortrait d6, d18, the
dreamtalk speakers). There the hair is better carried by the pose smoothed hard
(model.tracking.smoothing.steady_poses); on speakers who really move their head in small quick
motions (LivePortrait d12 and d20, the TPS driver) the steady pose lags and the hair must follow
the tracked one. Which of the two a video needs is a property of the driver, seen in its own
frames: `hair_follows_steadily` moves the first frame's matte with each candidate pose (on the
upright plane through the head joint, the head proxy of portrait_warp without its lean) and keeps
the one that matches the later frames' mattes better above the chin, off the face. The choice is
one per video; a live source (the webcam) keeps the tracked pose.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from model.geometry.rig import invert_pose
from model.tracking.smoothing import steady_poses

if TYPE_CHECKING:
    from model.data.dataset import PreparedVideo

COMPARED_FRAMES = 150  # at most this many frames, spread evenly over the video, are compared


def hair_follows_steadily(mattes: np.ndarray, landmarks: np.ndarray, T: np.ndarray, K: np.ndarray, valid: np.ndarray,
                          fps: float) -> bool:
    """Whether the first frame's person matte, moved with the head's steady poses, matches the
    other frames' mattes better above the chin and off the face than moved with the tracked poses.

    mattes (n, R, R) in [0, 1] in the video's fixed crop; landmarks (n, 478, 2) the tracked face in
    the crop's pixels; T (n, 4, 4) the tracked head poses in the crop camera, K (3, 3) its
    intrinsics at R; valid (R, R) bool: the crop's pixels inside the source video."""
    import cv2

    from model.tracking.facemesh import CHIN

    n = len(T)
    if n < 3 or fps <= 0:
        return False
    R = mattes.shape[-1]
    idx = np.unique(np.linspace(1, n - 1, min(COMPARED_FRAMES, n - 1)).round().astype(np.int64))
    ys = np.arange(R)[:, None]
    regions = []
    for i in idx:
        off_face = cv2.fillConvexPoly(np.ones((R, R), np.uint8), cv2.convexHull(np.round(landmarks[i]).astype(np.int32)), 0)
        regions.append(np.asarray(valid, bool) & (off_face > 0) & (ys < landmarks[i, CHIN, 1]))
    regions = np.stack(regions)
    if not regions.any():
        return False
    first = np.asarray(mattes[0], np.float32)
    errors = []
    for poses in (np.asarray(T, np.float64), steady_poses(T, fps)):
        moved = _moved_matte(first, poses, idx, np.asarray(K, np.float64))
        errors.append(float(np.abs(moved - np.asarray(mattes[idx], np.float32))[regions].mean()))
    return errors[1] < errors[0]


def _moved_matte(matte: np.ndarray, poses: np.ndarray, idx: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(len(idx), R, R): the first frame's matte (R, R) on the plane through its head joint parallel
    to the image, seen from the head's poses[idx] (the hair's motion relative to frame 0)."""
    import cv2

    R = matte.shape[-1]
    depth = poses[0, 2, 3]
    out = np.empty((len(idx), R, R), np.float32)
    for k, i in enumerate(idx):
        rel = poses[i] @ invert_pose(poses[0])  # frame i's camera from frame 0's, with the head fixed
        H = K @ (rel[:3, :3] + np.outer(rel[:3, 3], [0.0, 0.0, 1.0 / depth])) @ np.linalg.inv(K)
        out[k] = cv2.warpPerspective(matte, H, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def prepared_hair_steady(video: "PreparedVideo", n: int | None = None) -> bool:
    """hair_follows_steadily for a prepared video's first n frames (default all), from its mattes."""
    n = len(video) if n is None else min(n, len(video))
    if n < 3:
        return False
    K = np.asarray(video.K, np.float64)
    T = np.asarray(video.T_cam_from_head[:n], np.float64)
    mattes = np.asarray(video.mattes[:n], np.float32) / 255.0
    return hair_follows_steadily(mattes, video.landmarks()[:n], T, K, video.valid_mask, video.fps)
