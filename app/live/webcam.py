"""A webcam as a live driving source: OpenCV capture, MediaPipe FaceMesh in video mode, and the
same shape / pose fit as `model.tracking` applied to a sliding window, retargeted onto the portrait.

`WebcamDriving.frames(n)` blocks until n frames are captured and tracked (DrivingSource protocol,
model/data/driving.py). The first batch is the reference: its fit fixes the driver's crop camera K and
the reference pose the portrait's motion is measured from (`transfer_pose`) and the driver's
neutral template (the median shape of the first batch: start with a calm face). Each later batch
is aligned to that fixed template (so expression offsets of different batches are comparable) and
smoothed together with the last few frames before it (so the smoothing runs on without a seam). A video file path opens through the very same code
(cv2.VideoCapture accepts both), which is how this path is tested on a machine without a camera.
"""
from __future__ import annotations

import re

import numpy as np

from model.data.driving import DrivingFrames, DrivingSource, retarget_frames
from model.tracking.track import Track, TrackingError

TAIL = 8  # frames of the previous batch refitted with the next one (smoothing continuity)
DEFAULT_FPS = 25.0  # when the capture reports no frame rate (many webcams)


class WebcamUnavailable(RuntimeError):
    """No camera at that index (the message is one line for the user)."""


def parse_webcam(spec: str) -> int | None:
    """`webcam` -> 0, `webcam:N` -> N; None for anything else (a video path, `sliders`)."""
    m = re.fullmatch(r"webcam(?::(\d+))?", spec.strip().lower())
    return None if m is None else int(m.group(1) or 0)


def open_capture(source: int | str):
    """cv2.VideoCapture of a camera index or a video file; WebcamUnavailable when it gives no frame."""
    import cv2

    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # silent: we say it in one line ourselves
    try:
        cap = cv2.VideoCapture(source)
    finally:
        cv2.setLogLevel(level)
    ok = cap.isOpened()
    if ok:
        ok, frame = cap.read()
    if not ok:
        cap.release()
        what = f"no webcam found at index {source}" if isinstance(source, int) else f"{source}: cannot be read as a video"
        raise WebcamUnavailable(what)
    if isinstance(source, str):
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # a file: the probe frame is also its first driving frame
    return cap, frame


class LiveTracker:
    """Per-batch tracking of a live stream (pseudo-3D MediaPipe points in, expression + pose out)."""

    def __init__(self, fps: float, image_size: tuple[int, int]):
        self.fps = fps
        self.image_size = image_size
        self.reference: Track | None = None
        self._tail: np.ndarray | None = None

    def add(self, points: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(expression (n, 478, 3), T_cam_from_head (n, 4, 4)) of n new frames' points (n, 478, 3)."""
        from model.tracking.pose import initial_poses, solve_poses
        from model.tracking.shape import fit_similarities
        from model.tracking.smoothing import fill_gaps, smooth_points
        from model.tracking.track import build_track

        if self.reference is None:
            if not found.any():
                raise TrackingError(f"no face found in the first {len(found)} webcam frames; look into the camera")
            self.reference = build_track(points, found, self.fps, self.image_size)
            self._tail = fill_gaps(points, found)[-TAIL:]
            return self.reference.expression, self.reference.T_cam_from_head
        n = len(points)
        if not found.any():  # face lost for a whole batch: hold the last tracked frame
            points = np.repeat(self._tail[-1:], n, 0)
            found = np.ones(n, bool)
        raw = fill_gaps(np.concatenate([self._tail, points]), np.concatenate([np.ones(len(self._tail), bool), found]))
        smooth = smooth_points(raw, self.fps)[len(self._tail):]
        self._tail = raw[-TAIL:]
        template = self.reference.template.astype(np.float64)
        head_to_points = fit_similarities(template, smooth)
        expression = head_to_points.invert_points(smooth) - template
        K = self.reference.K
        T = solve_poses(template + expression, smooth[..., :2], K, initial_poses(head_to_points, K))
        return expression.astype(np.float32), T.astype(np.float32)


class WebcamDriving(DrivingSource):
    """Live driving from a camera index (or, through the same path, a video file) onto `portrait`."""

    def __init__(self, source: int | str, portrait: Track, translate: bool = True):
        import cv2

        from model.tracking.facemesh import FaceMeshRunner

        self.cap, first = open_capture(source)
        self.source = source
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1.0 <= fps <= 240.0 else DEFAULT_FPS
        self.portrait = portrait
        self.translate = translate
        self.tracker = LiveTracker(self.fps, (first.shape[1], first.shape[0]))
        self.runner = FaceMeshRunner(static=False)
        self._ended = False

    def _read(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        from model.tracking.facemesh import LANDMARK_COUNT

        points, found = [], []
        while len(points) < n:
            ok, bgr = self.cap.read()
            if not ok:
                self._ended = True
                break
            pts = self.runner(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            found.append(pts is not None)
            points.append(np.zeros((LANDMARK_COUNT, 3)) if pts is None else pts)
        if not points:
            return np.zeros((0, LANDMARK_COUNT, 3)), np.zeros(0, bool)
        return np.stack(points), np.array(found)

    def frames(self, n: int) -> DrivingFrames | None:
        if self._ended:
            return None
        points, found = self._read(n)
        if len(points) == 0:
            return None
        expression, T = self.tracker.add(points, found)
        ref = self.tracker.reference.T_cam_from_head[0]
        return retarget_frames(self.portrait, expression, T, ref, self.translate)

    def close(self) -> None:
        self.cap.release()
        if self.runner is not None:
            self.runner.close()
            self.runner = None
