"""Whether a driver's hair follows its tracked head or a steadier pose, from the person mattes of
its frames (`hair_steadiness`).

The identity condition (model/geometry/portrait_warp.py) moves the portrait's hair and ears with the
driver's head. The tracked head pose also wobbles while the driver talks: the face tracker's stable
points include the cheeks, which move with speech, and a few tenths of a pixel of that wobble moved
the whole hair outline with it on speakers whose skull stays still (LivePortrait d6, d18, the
dreamtalk speakers). There the hair is better carried by the pose smoothed hard
(model.tracking.smoothing.steady_poses); on speakers who really move their head in small quick
motions (LivePortrait d12 and d20, the TPS driver) the steady pose lags and the hair must follow
the tracked one; a speaker who talks still and turns now and then needs a pose between the two.
Which a video needs is a property of the driver, seen in its own frames: `hair_steadiness` moves
the first frame's matte with each candidate (the tracked poses, and them smoothed hard and harder:
HAIR_STEADINESS) on the upright plane through the head joint (the head proxy of portrait_warp
without its lean) and keeps the one that matches the later frames' mattes best above the chin, off
the face. The choice is one per video; a live source (the webcam)
keeps the tracked pose.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from model.geometry.rig import invert_pose
from model.tracking.smoothing import STEADIER, STEADY, steady_poses

if TYPE_CHECKING:
    from model.data.dataset import PreparedVideo

COMPARED_FRAMES = 150  # at most this many frames, spread evenly over the video, are compared
# the poses a driver's hair may follow, from the tracked head's own (None) to the steadiest
HAIR_STEADINESS = (None, STEADY, STEADIER)


def hair_poses(T: np.ndarray, fps: float, steadiness: int) -> np.ndarray | None:
    """(n, 4, 4) float64: the poses the hair follows at HAIR_STEADINESS[steadiness], given the
    head's tracked poses T (n, 4, 4); None at 0, where it follows them."""
    cfg = HAIR_STEADINESS[steadiness]
    return None if cfg is None else steady_poses(T, fps, cfg)


def hair_steadiness(mattes: np.ndarray, landmarks: np.ndarray, T: np.ndarray, K: np.ndarray, valid: np.ndarray,
                    fps: float) -> int:
    """Which of HAIR_STEADINESS a video's hair follows: the poses that move its first frame's person
    matte closest to the other frames' mattes above the chin and off the face (0, the tracked poses,
    on a tie or when there is nothing to compare).

    mattes (n, R, R) in [0, 1] in the video's fixed crop; landmarks (n, 478, 2) the tracked face in
    the crop's pixels; T (n, 4, 4) the tracked head poses in the crop camera, K (3, 3) its
    intrinsics at R; valid (R, R) bool: the crop's pixels inside the source video."""
    import cv2

    from model.tracking.facemesh import CHIN

    n = len(T)
    if n < 3 or fps <= 0:
        return 0
    R = mattes.shape[-1]
    idx = np.unique(np.linspace(1, n - 1, min(COMPARED_FRAMES, n - 1)).round().astype(np.int64))
    ys = np.arange(R)[:, None]
    regions = []
    for i in idx:
        off_face = cv2.fillConvexPoly(np.ones((R, R), np.uint8), cv2.convexHull(np.round(landmarks[i]).astype(np.int32)), 0)
        regions.append(np.asarray(valid, bool) & (off_face > 0) & (ys < landmarks[i, CHIN, 1]))
    regions = np.stack(regions)
    if not regions.any():
        return 0
    first = np.asarray(mattes[0], np.float32)
    later = np.asarray(mattes[idx], np.float32)
    T = np.asarray(T, np.float64)
    errors = []
    for k in range(len(HAIR_STEADINESS)):
        poses = hair_poses(T, fps, k)
        moved = _moved_matte(first, T if poses is None else poses, idx, np.asarray(K, np.float64))
        errors.append(float(np.abs(moved - later)[regions].mean()))
    return int(np.argmin(errors))


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


def prepared_hair_steadiness(video: "PreparedVideo", n: int | None = None) -> int:
    """hair_steadiness of a prepared video's first n frames (default all), from its mattes."""
    n = len(video) if n is None else min(n, len(video))
    if n < 3:
        return 0
    K = np.asarray(video.K, np.float64)
    T = np.asarray(video.T_cam_from_head[:n], np.float64)
    mattes = np.asarray(video.mattes[:n], np.float32) / 255.0
    return hair_steadiness(mattes, video.landmarks()[:n], T, K, video.valid_mask, video.fps)
