"""Prepared portraits kept on disk: a portrait's tracking, matting and inpainting run once per
image and model resolution, not at every launch of imp-viewer.

Preparing a portrait takes about a second on this 2-core CPU, most of it MediaPipe's import
(TensorFlow Lite, OpenCV) and its face mesh and segmentation models; it sits between the model load
and the first generated frame. The cache keeps what those produce (the Track, the matte and the
inpainted background of the head crop); the rest of the preparation is cheap and reruns.

An entry is keyed by the image's pixels (not its path), the crop resolution, this file format and
the installed MediaPipe version, so that an edited image or another tracker is prepared afresh.
Entries are written atomically (model/atomic_write.py); one that cannot be read is prepared again
and rewritten, never an error. The folder: $IMP_CACHE_DIR, else $XDG_CACHE_HOME/im-portrait, else
~/.cache/im-portrait; each entry is a few hundred kB and may be deleted at any time.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model.atomic_write import save_npz_atomic

if TYPE_CHECKING:  # at run time imported where used: imp-viewer asks for default_cache_dir before its
    import numpy as np  # worker starts, and NumPy's import (0.1 s) would only delay that start

    from model.tracking.track import Track

# Part of every key: raise the number whenever tracking (model/tracking), the matte or the
# inpainting (model/data/matting.py) change what they make, or old entries would still be used.
FORMAT = "im-portrait-prepared-portrait-3"


@dataclass(frozen=True)
class PreparedCrop:
    """What the slow part of a portrait's preparation makes, at one crop resolution R."""

    track: Track  # in source-image pixels
    matte: np.ndarray  # (R, R) float32 in [0, 1]: the person's matte in the head crop
    background: np.ndarray  # (R, R, 3) uint8: the head crop with the person inpainted


def default_cache_dir() -> Path:
    """$IMP_CACHE_DIR, else $XDG_CACHE_HOME/im-portrait, else ~/.cache/im-portrait (not created here)."""
    if os.environ.get("IMP_CACHE_DIR"):
        return Path(os.environ["IMP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "im-portrait"


def tracker_version() -> str:
    """The installed MediaPipe's version: part of every key, so that another tracker prepares afresh."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mediapipe")  # the installed distribution's metadata: mediapipe itself is not imported
    except PackageNotFoundError:
        return "none"


def portrait_key(rgb: np.ndarray, res: int) -> str:
    """Hex key of an RGB uint8 (H, W, 3) portrait prepared at crop resolution `res`."""
    import numpy as np

    h = hashlib.sha256()
    h.update(f"{FORMAT}|{tracker_version()}|{res}|{rgb.shape}|{rgb.dtype}|".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()[:32]


def _entry(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "portraits" / f"{key}.npz"


def load_prepared(cache_dir: Path, key: str, res: int) -> PreparedCrop | None:
    """The entry `key`, or None when there is none or it cannot be used (it will be prepared again)."""
    import numpy as np

    from model.tracking.track import Track

    path = _entry(cache_dir, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
        if str(stored.get("cache_format", "")) != FORMAT:
            return None
        track = Track.from_arrays({k[len("track/"):]: v for k, v in stored.items() if k.startswith("track/")}, path)
        matte, background = stored["matte"], stored["background"]
    except Exception:  # noqa: BLE001 - zipfile / value / key / track errors alike: a torn or foreign file, prepared again
        return None
    if matte.shape != (res, res) or matte.dtype != np.float32 or background.shape != (res, res, 3) \
            or background.dtype != np.uint8:
        return None
    return PreparedCrop(track, matte, background)


def save_prepared(cache_dir: Path, key: str, prepared: PreparedCrop) -> Path | None:
    """Write the entry `key` atomically; a cache that cannot be written (read-only home, full disk)
    costs the next launch its time, not this one its result: a warning and None."""
    import numpy as np

    path = _entry(cache_dir, key)
    arrays = {"cache_format": np.array(FORMAT), "matte": prepared.matte, "background": prepared.background}
    arrays.update({f"track/{k}": v for k, v in prepared.track.to_arrays().items()})
    try:
        return save_npz_atomic(path, arrays)
    except OSError as exc:
        warnings.warn(f"could not keep the prepared portrait in {path.parent} ({exc}); it will be prepared again "
                      "next time (set IMP_CACHE_DIR to a writable folder)", stacklevel=2)
        return None
