"""Tracks of driving videos kept on disk: a driving video is tracked once, not at every launch of
imp-viewer or run of imp generate.

Tracking runs at ~9 ms a frame on this 2-core CPU, all of it before the first generated frame
(the track is smoothed forwards and backwards, so it is made whole): 2 s for an 8-second clip, half
a minute for a two-minute one. An entry is keyed by the video file's bytes (not its path), the
number of frames tracked, this format and the installed MediaPipe version; it lives beside the
prepared portraits (model/data/portrait_cache.py: $IMP_CACHE_DIR, else ~/.cache/im-portrait),
is written atomically, and one that cannot be read is tracked again, never an error. Entries are
a few hundred kB (the landmarks of every frame) and may be deleted at any time.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from model.atomic_write import save_npz_atomic
from model.data.portrait_cache import tracker_version

if TYPE_CHECKING:
    from model.tracking.track import Track

FORMAT = "im-portrait-driving-track-1"  # raise when tracking (model/tracking) changes what it makes
_CHUNK = 1 << 20


def video_key(path: str | Path, max_frames: int | None) -> str:
    """Hex key of the video file's bytes tracked up to `max_frames` (None: all)."""
    h = hashlib.sha256(f"{FORMAT}|{tracker_version()}|{max_frames}|".encode())
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:32]


def _entry(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "driving" / f"{key}.npz"


def cached_track_video(path: str | Path, cache_dir: Path, progress: bool = True, max_frames: int | None = None) -> Track:
    """model.tracking.track_video's Track of `path`, from the cache `cache_dir` when it holds it
    (and kept there when it did not). Raises what track_video raises."""
    from model.tracking import track_video
    from model.tracking.track import Track, TrackingError

    path = Path(path)
    key = video_key(path, max_frames) if path.is_file() else None
    entry = None if key is None else _entry(cache_dir, key)
    if entry is not None and entry.is_file():
        try:
            return Track.load(entry)
        except TrackingError:  # a torn or foreign file: tracked again and rewritten
            pass
    track = track_video(path, progress=progress, max_frames=max_frames)
    if entry is not None:
        _save(entry, track)
    return track


def _save(entry: Path, track: Track) -> None:
    """Write the entry atomically; a cache that cannot be written (read-only home, full disk) costs
    the next run its tracking time, not this one its result: a warning."""
    try:
        save_npz_atomic(entry, track.to_arrays(), compressed=True)
    except OSError as exc:
        warnings.warn(f"could not keep the driving video's track in {entry.parent} ({exc}); it will be tracked "
                      "again next time (set IMP_CACHE_DIR to a writable folder)", stacklevel=3)
