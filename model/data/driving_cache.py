"""Tracks of driving videos kept on disk: a driving video is tracked once, not at every launch of
imp-viewer or run of imp generate. An entry holds the face track, the torso's motion
(model/data/body_motion.py: the video decoded again and matted in the track's crop, ~7.5 ms a
frame more) and which poses the hair follows (model/data/hair_motion.py, from the same mattes).

Tracking runs at ~9 ms a frame on this 2-core CPU, all of it before the first generated frame
(the track is smoothed forwards and backwards, so it is made whole): 2 s for an 8-second clip, half
a minute for a two-minute one. An entry is keyed by the video file's bytes (not its path), the
number of frames tracked, this format and the installed MediaPipe version; it lives beside the
prepared portraits (model/data/portrait_cache.py: $IMP_CACHE_DIR, else ~/.cache/im-portrait),
is written atomically, and one that cannot be read is tracked again, never an error. Entries are
a few hundred kB (the landmarks of every frame) and may be deleted at any time.
"""
from __future__ import annotations

import functools
import hashlib
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.atomic_write import save_npz_atomic
from model.data.portrait_cache import tracker_version

if TYPE_CHECKING:
    from model.tracking.track import Track

FORMAT = "im-portrait-driving-track-5"  # raise when tracking (model/tracking), body_motion or hair_motion changes what it makes
_CHUNK = 1 << 20
TrackingProgress = Callable[[str, int, int], None]  # (stage, frames done, frames in all; 0: unknown) while a video is tracked


def video_key(path: str | Path, max_frames: int | None) -> str:
    """Hex key of the video file's bytes tracked up to `max_frames` (None: all)."""
    h = hashlib.sha256(f"{FORMAT}|{tracker_version()}|{max_frames}|".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:32]


def _entry(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "driving" / f"{key}.npz"


def driving_video_track(path: str | Path, cache_dir: Path | None, progress: bool = True,
                        max_frames: int | None = None,
                        on_progress: TrackingProgress | None = None) -> tuple[Track, np.ndarray, int]:
    """(model.tracking.track_video's Track of `path`, its torso shifts (n, 2) and its hair's
    steadiness: body_motion.video_body_motion), from the cache `cache_dir` when
    it holds them (and kept there when it did not; None: no cache). Raises what track_video raises.
    on_progress(stage, done, total) after each frame of each pass over the video: stage "tracking"
    (the face), then "matting" (the body)."""
    from model.tracking import track_video
    from model.tracking.track import Track, TrackingError

    path = Path(path)
    key = video_key(path, max_frames) if path.is_file() and cache_dir is not None else None
    entry = None if key is None else _entry(cache_dir, key)
    if entry is not None and entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
            track = Track.from_arrays(arrays, entry)
            torso = np.asarray(arrays.get("torso_shift", np.zeros((0, 2))), np.float32)
            if torso.shape == (len(track), 2) and "hair_steadiness" in arrays:
                return track, torso, int(arrays["hair_steadiness"])
        except (TrackingError, OSError, ValueError, KeyError, zipfile.BadZipFile):  # a torn or foreign file: made again
            pass
    from model.data.body_motion import video_body_motion

    def stage(name: str) -> Callable[[int, int], None] | None:  # one pass's per-frame callback
        return None if on_progress is None else functools.partial(on_progress, name)

    track = track_video(path, progress=progress, max_frames=max_frames, on_frame=stage("tracking"))
    torso, steadiness = video_body_motion(path, track, progress=progress, on_frame=stage("matting"))
    if entry is not None:
        _save(entry, track, torso, steadiness)
    return track, torso, steadiness


def _save(entry: Path, track: Track, torso: np.ndarray, hair_steadiness: int) -> None:
    """Write the entry atomically; a cache that cannot be written (read-only home, full disk) costs
    the next run its tracking time, not this one its result: a warning."""
    try:
        save_npz_atomic(entry, {**track.to_arrays(), "torso_shift": np.asarray(torso, np.float32),
                                "hair_steadiness": np.array(hair_steadiness)}, compressed=True)
    except OSError as exc:
        warnings.warn(f"could not keep the driving video's track in {entry.parent} ({exc}); it will be tracked "
                      "again next time (set IMP_CACHE_DIR to a writable folder)", stacklevel=3)
