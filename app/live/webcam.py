"""A webcam as a live driving source: OpenCV capture, MediaPipe FaceMesh in video mode, and the
same shape / pose fit as `model.tracking` applied to a sliding window, retargeted onto the portrait.

A capture thread (`CameraCapture`) reads the camera all the time and keeps the latest frames with
their capture times, so a clip is made of the newest frames when the worker asks for it (reading
the camera only then gave clips that started with the frames the driver had queued long before, and
gaps in between). `WebcamDriving.frames(n)` waits for n frames newer than the last batch, takes the
newest n (older ones are stale: generation is slower than real time) and tracks them (DrivingSource
protocol, model/data/driving.py); `capture_times` holds each delivered frame's capture time, which
the live session turns into capture-to-shown latency. The first batch is the reference: its fit fixes the driver's crop camera K and
the reference pose the portrait's motion is measured from (`transfer_pose`) and the driver's
neutral template (the median shape of the first batch: start with a calm face), and the crop in
which every frame is matted for the torso's motion (model/data/body_motion.py). Each later batch
is aligned to that fixed template (so expression offsets of different batches are comparable) and
smoothed together with the last few frames before it (so the smoothing runs on without a seam). A video file path opens through the very same code
(cv2.VideoCapture accepts both), which is how this path is tested on a machine without a camera:
with `realtime=True` the file stands in for a camera (read at its frame rate, stale frames dropped),
by default it is read frame by frame like a recording.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from model.data.driving import DrivingFrames, DrivingSource, retarget_frames
from model.tracking.track import Track, TrackingError

if TYPE_CHECKING:
    from model.data.body_motion import TorsoTracker

TAIL = 8  # frames of the previous batch refitted with the next one (smoothing continuity)
DEFAULT_FPS = 25.0  # when the capture reports no frame rate (many webcams)
KEEP_FRAMES = 64  # latest frames the capture thread keeps (~2.5 s at 25 fps)


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


class CameraCapture:
    """Reads `cap` on a thread. realtime: keep only the latest KEEP_FRAMES frames (a camera; a file
    is then read at `fps`, as a camera would deliver it); otherwise every frame is kept until taken
    (a recording). `first` is the frame open_capture already read."""

    def __init__(self, cap, fps: float, first: np.ndarray, realtime: bool, is_file: bool = False):
        self.cap = cap
        self.fps = fps
        self.realtime = realtime
        self._pace = is_file and realtime
        self._frames: deque = deque()  # (sequence number, capture time, BGR frame)
        self._cond = threading.Condition()
        self._next_seq = 0
        self._taken = -1  # sequence number of the last frame taken
        self.ended = False
        self.dropped = 0  # frames never delivered because newer ones were taken
        self._stop = threading.Event()
        if not is_file:  # a camera: the probe frame is the first one; a file was rewound to frame 0
            self._add(first, time.perf_counter())
        self._thread = threading.Thread(target=self._run, name="imp-camera", daemon=True)
        self._thread.start()

    def _add(self, bgr: np.ndarray, t: float) -> None:
        with self._cond:
            self._frames.append((self._next_seq, t, bgr))
            self._next_seq += 1
            if self.realtime:
                while len(self._frames) > KEEP_FRAMES:
                    seq = self._frames.popleft()[0]
                    self.dropped += int(seq > self._taken)
            self._cond.notify_all()

    def _run(self) -> None:
        start = time.perf_counter()
        n = 0
        try:
            while not self._stop.is_set():
                if self._pace:  # a file standing in for a camera: frame n exists at start + n / fps
                    delay = start + n / self.fps - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                if not self.realtime:
                    with self._cond:  # a recording: never drop, wait for the reader instead
                        self._cond.wait_for(lambda: len(self._frames) < KEEP_FRAMES or self._stop.is_set())
                ok, bgr = self.cap.read()
                if not ok:
                    break
                self._add(bgr, time.perf_counter())
                n += 1
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def take(self, n: int) -> list[tuple[float, np.ndarray]]:
        """[(capture time, BGR frame)]: realtime, the newest n frames captured after the last ones
        taken (waiting until there are n, or the source ended), older ones dropped; otherwise the
        next n in order."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._frames) >= n or self.ended)
            fresh = list(self._frames)
            chosen = fresh[-n:] if self.realtime else fresh[:n]
            if self.realtime:
                self.dropped += len(fresh) - len(chosen)
                self._frames.clear()
            else:
                for _ in chosen:
                    self._frames.popleft()
            if chosen:
                self._taken = chosen[-1][0]
            self._cond.notify_all()
        return [(t, bgr) for _, t, bgr in chosen]

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self.cap.release()


class WebcamDriving(DrivingSource):
    """Live driving from a camera index (or, through the same path, a video file) onto `portrait`.
    realtime: drop stale frames, newest first (default: a camera yes, a file no; a file with
    realtime=True is read at its frame rate, standing in for a camera)."""

    def __init__(self, source: int | str, portrait: Track, translate: bool = True, realtime: bool | None = None):
        import cv2

        from model.data.matting import SelfieMatter
        from model.tracking.facemesh import FaceMeshRunner

        cap, first = open_capture(source)
        self.source = source
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1.0 <= fps <= 240.0 else DEFAULT_FPS
        self.portrait = portrait
        self.translate = translate
        self.tracker = LiveTracker(self.fps, (first.shape[1], first.shape[0]))
        self.runner = FaceMeshRunner(static=False)
        self.matter = SelfieMatter()  # the torso's motion (model/data/body_motion.py), ~5 ms a frame
        self._torso: TorsoTracker | None = None
        self._last_chin: np.ndarray | None = None  # the last frame's chin, for a next batch that starts without a face
        is_file = isinstance(source, str)
        realtime = (not is_file) if realtime is None else realtime
        self.capture = CameraCapture(cap, self.fps, first, realtime, is_file=is_file)
        self.capture_times: list[float] = []  # perf_counter() of each delivered frame's capture, in order
        self._ended = False

    def _read(self, n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(points (n, 478, 3), found (n,), the RGB frames) of the next n frames."""
        import cv2

        from model.tracking.facemesh import LANDMARK_COUNT

        taken = self.capture.take(n)
        if len(taken) < n:
            self._ended = True
        points, found, rgbs = [], [], []
        for t, bgr in taken:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            pts = self.runner.video_frame(rgb)
            found.append(pts is not None)
            points.append(np.zeros((LANDMARK_COUNT, 3)) if pts is None else pts)
            rgbs.append(rgb)
            self.capture_times.append(t)
        if not points:
            return np.zeros((0, LANDMARK_COUNT, 3)), np.zeros(0, bool), []
        return np.stack(points), np.array(found), rgbs

    def _torso_shifts(self, points: np.ndarray, found: np.ndarray, rgbs: list[np.ndarray]) -> np.ndarray:
        """(n, 2): the driver's torso motion in these frames (model/data/body_motion.py), measured in
        the crop the first batch fixed; a frame without a face keeps the last chin seen."""
        from model.data.body_motion import ESTIMATE_RES, TorsoTracker, crop_matte
        from model.tracking.crop import crop_affine, valid_mask
        from model.tracking.facemesh import CHIN

        A = crop_affine(self.tracker.reference.K, ESTIMATE_RES)
        mattes = np.stack([crop_matte(self.matter, rgb, A) for rgb in rgbs])
        landmarks = np.asarray(points, np.float64)[..., :2] @ A[:2, :2].T + A[:2, 2]
        chins = landmarks[:, CHIN].copy()
        seen = np.flatnonzero(found)
        for i in range(len(chins)):
            if not found[i]:
                before = chins[i - 1] if i > 0 else self._last_chin
                chins[i] = before if before is not None else (landmarks[seen[0], CHIN] if seen.size else chins[i])
        self._last_chin = chins[-1]
        if self._torso is None:  # the first batch has a face (LiveTracker checks)
            self._torso = TorsoTracker.from_first_frame(mattes[0], landmarks[seen[0]],
                                                        valid_mask(A, self.tracker.image_size, ESTIMATE_RES))
        return self._torso.add(mattes, chins)

    def frames(self, n: int) -> DrivingFrames | None:
        if self._ended:
            return None
        points, found, rgbs = self._read(n)
        if len(points) == 0:
            return None
        expression, T = self.tracker.add(points, found)
        ref = self.tracker.reference.T_cam_from_head[0]
        frames = retarget_frames(self.portrait, expression, T, ref, self.translate)
        frames.torso_shift = self._torso_shifts(points, found, rgbs)
        return frames

    def close(self) -> None:
        self.capture.close()
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        if self.matter is not None:
            self.matter.close()
            self.matter = None
