"""The tracked face of one image or video (`Track`), how it is computed, and its .npz file.

Pipeline: MediaPipe landmarks per frame (facemesh.py) -> frames without a face interpolated and
flagged -> zero-lag smoothing of the pseudo-3D points (smoothing.py) -> metric template, head frame
and expressions (shape.py) -> one fixed crop and its camera (crop.py) -> metric head pose by PnP
against the smoothed landmarks (pose.py). Prepared portraits keep their Track on disk
(model/data/portrait_cache.py): a change to what this pipeline makes needs a new FORMAT number there."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from model.tracking.crop import crop_K, head_crop, resized_crop_K
from model.tracking.facemesh import LANDMARK_COUNT, FaceMeshRunner, mesh_faces
from model.tracking.pose import initial_poses, solve_poses, transform_points
from model.tracking.shape import eye_centres, fit_shape
from model.tracking.smoothing import fill_gaps, smooth_points

FORMAT = "im-portrait-track-1"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class TrackingError(RuntimeError):
    """No usable face in the input, or a file that is not a track."""


@dataclass
class Track:
    fps: float  # frames per second of the source video; 0.0 for a still image
    image_size: tuple[int, int]  # (W, H) of the source frames
    crop: np.ndarray  # (3,) float32 x0, y0, size: one fixed square crop in source pixels (may leave the image)
    K: np.ndarray  # (3, 3) float32 source intrinsics: f = 2.5 * crop size, principal point at the crop centre
    landmarks: np.ndarray  # (N, 478, 2) float32 source pixels, smoothed
    raw_landmarks: np.ndarray  # (N, 478, 2) float32 as MediaPipe gave them (interpolated where not found)
    found: np.ndarray  # (N,) bool: face found in that frame (False = interpolated)
    T_cam_from_head: np.ndarray  # (N, 4, 4) float32 source camera from head frame
    template: np.ndarray  # (478, 3) float32 neutral identity shape in the head frame, metres
    expression: np.ndarray  # (N, 478, 3) float32 per-frame offsets in the head frame, metres
    faces: np.ndarray  # (F, 3) int32 triangles of the face mesh (same for every track)

    def __len__(self) -> int:
        return len(self.found)

    def vertices_head(self, i: int | None = None) -> np.ndarray:
        """(478, 3) for frame i, or (N, 478, 3) for all: template + expression, head frame."""
        expr = self.expression if i is None else self.expression[i]
        return (self.template + expr).astype(np.float32)

    def vertices_cam(self, i: int | None = None) -> np.ndarray:
        """(478, 3) or (N, 478, 3): the mesh posed in the source camera, metres."""
        T = self.T_cam_from_head if i is None else self.T_cam_from_head[i]
        return transform_points(T.astype(np.float64), self.vertices_head(i).astype(np.float64)).astype(np.float32)

    def crop_camera(self, res: int) -> np.ndarray:
        """(3, 3) float32 intrinsics of the crop resized to res x res (== camera.crop_intrinsics(res))."""
        return resized_crop_K(self.K, self.crop, res)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(Path(path), **self.to_arrays())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as arrays, with the format tag: what `save` writes, for other .npz files too."""
        return {"format": np.array(FORMAT), **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}}

    @classmethod
    def from_arrays(cls, stored: dict[str, np.ndarray], source: str | Path) -> "Track":
        """The Track of `to_arrays()`'s dict; TrackingError naming `source` when it is not one."""
        if str(stored.get("format", "")) != FORMAT:
            raise TrackingError(f"{source}: not an im-portrait track (expected format '{FORMAT}'); make one with `imp track`")
        missing = [f.name for f in fields(cls) if f.name not in stored]
        if missing:
            raise TrackingError(f"{source}: track file lacks {missing}; re-run `imp track`")
        values = {f.name: stored[f.name] for f in fields(cls)}
        values["fps"] = float(values["fps"])
        values["image_size"] = tuple(int(v) for v in values["image_size"])
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "Track":
        path = Path(path)
        if not path.is_file():
            raise TrackingError(f"{path}: no such track file (make one with `imp track VIDEO -o {path.name}`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile / pickle / value errors: all mean "not a track"
            raise TrackingError(f"{path}: not a track file ({exc}); make one with `imp track`") from exc
        return cls.from_arrays(stored, path)


def build_track(points: np.ndarray, found: np.ndarray, fps: float, image_size: tuple[int, int]) -> Track:
    """A Track from MediaPipe's pseudo-3D points (N, 478, 3) (rows where `found` is False are ignored)."""
    found = np.asarray(found, dtype=bool)
    raw = fill_gaps(points, found)
    smooth = smooth_points(raw, fps) if fps > 0 and len(raw) >= 3 else raw
    fit = fit_shape(smooth, found)
    right, left = eye_centres(smooth)
    down = fit.head_to_points.R[:, :2, 1]
    down = down / np.linalg.norm(down, axis=-1, keepdims=True)
    crop = head_crop(((right + left) / 2)[:, :2], down, fit.head_to_points.scale)
    K = crop_K(crop)
    vertices = fit.template + fit.expression
    T = solve_poses(vertices, smooth[..., :2], K, initial_poses(fit.head_to_points, K))
    return Track(
        fps=float(fps),
        image_size=(int(image_size[0]), int(image_size[1])),
        crop=crop,
        K=K,
        landmarks=smooth[..., :2].astype(np.float32),
        raw_landmarks=raw[..., :2].astype(np.float32),
        found=found,
        T_cam_from_head=T.astype(np.float32),
        template=fit.template.astype(np.float32),
        expression=fit.expression.astype(np.float32),
        faces=mesh_faces(),
    )


def _read_image(path_or_array: str | Path | np.ndarray) -> tuple[np.ndarray, str]:
    if isinstance(path_or_array, np.ndarray):
        img = path_or_array
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise TrackingError(f"image array must be uint8 (H, W, 3|4) RGB(A), got {img.dtype} {img.shape}")
        return np.ascontiguousarray(img[..., :3]), "image array"
    from PIL import Image, UnidentifiedImageError

    path = Path(path_or_array)
    if path.is_dir():
        raise TrackingError(f"{path} is a folder; give one portrait image (png / jpg)")
    if not path.is_file():
        raise TrackingError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), str(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise TrackingError(f"{path}: cannot be read as an image ({exc})") from exc


def track_image(path_or_array: str | Path | np.ndarray) -> Track:
    """Track the face of one portrait (N = 1; no smoothing, expression = 0 by construction). The
    landmarks are averaged over a few rotated / zoomed views of the face (FaceMeshRunner.ensemble)."""
    rgb, name = _read_image(path_or_array)
    with FaceMeshRunner(static=True) as runner:
        pts = runner(rgb)
        if pts is not None:
            pts = runner.ensemble(rgb, pts)
    if pts is None:
        raise TrackingError(
            f"{name}: no face found; use a portrait with the whole face visible, upright-ish and at "
            "least ~100 px wide"
        )
    return build_track(pts[None], np.array([True]), 0.0, (rgb.shape[1], rgb.shape[0]))


def track_video(path: str | Path, progress: bool = True, max_frames: int | None = None,
                on_frame: Callable[[int, int], None] | None = None) -> Track:
    """Track the face through a video (MediaPipe in video mode, each frame looked at twice:
    FaceMeshRunner.video_frame). Frames without a face are
    interpolated from their neighbours and flagged in `found`; raises TrackingError when no frame
    has a face and model.formats.video.VideoError when the file cannot be decoded. on_frame(done,
    total) after each frame (total 0 when the file does not say): a caller's own progress display;
    what it raises stops the tracking."""
    from tqdm import tqdm

    from model.formats.video import VideoError, iter_frames, probe

    path = Path(path)
    if path.is_dir():
        raise VideoError(f"{path} is a folder; give one video file (mp4, mov, ...)")
    info = probe(path)
    total = info.frames if max_frames is None else min(info.frames or max_frames, max_frames)
    points, found = [], []
    with FaceMeshRunner(static=False) as runner:
        for rgb in tqdm(iter_frames(path, max_frames), total=total or None, desc=f"tracking {path.name}",
                        unit="frame", disable=not progress):
            pts = runner.video_frame(rgb)
            found.append(pts is not None)
            points.append(np.zeros((LANDMARK_COUNT, 3)) if pts is None else pts)
            if on_frame is not None:
                on_frame(len(points), total or 0)
    if not points:
        raise VideoError(f"{path}: contains no decodable frames")
    found = np.array(found)
    if not found.any():
        raise TrackingError(f"{path}: no face found in any of its {len(found)} frames")
    return build_track(np.stack(points), found, info.fps, (info.width, info.height))


def track(path: str | Path, progress: bool = True, max_frames: int | None = None) -> Track:
    """Track an image or a video, chosen by the file suffix."""
    path = Path(path)
    if path.is_dir():
        raise TrackingError(f"{path} is a folder; give one image or video file")
    if not path.exists():
        raise TrackingError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return track_image(path)
    return track_video(path, progress=progress, max_frames=max_frames)
