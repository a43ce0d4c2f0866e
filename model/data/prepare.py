"""Data preparation (`imp prepare`): videos -> a training dataset (format: `model/data/dataset.py`).

Per video: decode (model.formats.video), track the face (model.tracking.track.track_video), cut the fixed
square head crop the tracker chose for the whole video (Track.crop; where it reaches outside the
image the crop is black with matte 0, and `PreparedVideo.valid_mask()` tells where) and resize it to the dataset resolution, matte every frame (MediaPipe
selfie segmentation, on the full frame for context, then cropped the same way) and build the
background as the per-pixel median over frames where the person does not cover it (inpainted
where the person always does).

Runs are resumable: finished videos are listed in the manifest with status "ok" and are not
redone; a video folder only appears once complete (see dataset.VideoWriterDir); videos that fail
(unreadable, too short, no face) are recorded as "skipped" with the reason.
"""
from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.atomic_write import write_json_atomic
from model.data import dataset as ds
from model.geometry.camera import crop_intrinsics
from model.tracking.crop import crop_affine, crop_image, valid_mask

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class PrepareError(RuntimeError):
    """Bad input to `prepare_dataset` as a whole (no videos, incompatible existing dataset)."""


class SkipVideo(Exception):
    """This video cannot go into the dataset; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class PrepareConfig:
    res: int = 128  # dataset resolution (square crop side, px)
    max_frames: int | None = None  # use at most this many frames of each video (None: all)
    min_frames: int = 16  # skip videos shorter than this (a training clip needs frames to pair)
    min_found: float = 0.5  # skip videos where the face is detected in fewer than this fraction of frames
    retry_skipped: bool = False  # try again the videos a previous run skipped
    background_samples: int = 48  # frames sampled for the median background


# --- inputs -----------------------------------------------------------------------------------

def find_videos(inputs: Sequence[str | Path]) -> list[Path]:
    """Video files named directly or found (recursively) in folders, sorted and de-duplicated."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            vids = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS)
            if not vids:
                raise PrepareError(f"{p}: no video files in this folder (looked for {', '.join(VIDEO_EXTENSIONS)} recursively)")
            found += vids
        elif p.is_file():
            found.append(p)
        else:
            raise PrepareError(f"{p}: no such file or folder")
    seen, unique = set(), []
    for v in found:
        key = v.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(v)
    if not unique:
        raise PrepareError("no videos given: name video files or folders that contain them")
    return unique


def video_id(path: Path, taken: set[str]) -> str:
    """A readable, stable folder name: <parent>-<stem>, sanitised, suffixed if already taken."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{path.parent.name}-{path.stem}").strip("._") or "video"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


# --- one video --------------------------------------------------------------------------------

def _track(path: Path, max_frames: int | None, progress: bool):
    from model.tracking.track import track_video

    kwargs = {"progress": progress}
    if max_frames is not None:
        if "max_frames" not in inspect.signature(track_video).parameters:
            raise PrepareError("this tracker cannot limit the frame count (track_video has no max_frames)")
        kwargs["max_frames"] = max_frames
    return track_video(path, **kwargs)


def prepare_video(source: Path, root: Path, vid: str, cfg: PrepareConfig, progress: bool = True,
                  tracker: Callable | None = None) -> dict:
    """Prepare one video into root/vid. Returns its manifest entry; raises SkipVideo with the reason
    when the video cannot be used."""
    from tqdm import tqdm

    from model.data import matting
    from model.formats import video

    try:
        info = video.probe(source)
    except video.VideoError as exc:
        raise SkipVideo(f"unreadable: {exc}") from exc
    if info.frames and info.frames < cfg.min_frames:
        raise SkipVideo(f"too short: {info.frames} frames < --min-frames {cfg.min_frames}")
    try:
        track = (tracker or _track)(source, cfg.max_frames, progress)
    except video.VideoError as exc:
        raise SkipVideo(f"unreadable: {exc}") from exc
    except PrepareError:
        raise
    except Exception as exc:  # the tracker's own failures (e.g. no face anywhere) skip this video only
        raise SkipVideo(f"tracking failed: {type(exc).__name__}: {exc}") from exc
    n = int(len(track.found))
    if n < cfg.min_frames:
        raise SkipVideo(f"too short: {n} frames < --min-frames {cfg.min_frames}")
    found = float(np.mean(track.found))
    if found < cfg.min_found:
        raise SkipVideo(f"face found in only {100 * found:.0f} % of frames (< {100 * cfg.min_found:.0f} %)")

    A = crop_affine(track.K, cfg.res)
    writer = ds.VideoWriterDir(root, vid, n, cfg.res)
    try:
        count = 0
        with matting.SelfieMatter() as matter:
            frames = video.iter_frames(source, n)
            for i, frame in enumerate(tqdm(frames, total=n, desc=f"crop+matte {vid}", unit="frame", leave=False, disable=not progress)):
                writer.frames[i] = crop_image(frame, A, cfg.res)
                matte = crop_image(matter(frame), A, cfg.res)
                writer.mattes[i] = np.clip(np.round(matte * 255.0), 0, 255).astype(np.uint8)
                count += 1
        if count != n:
            raise SkipVideo(f"decoded {count} frames but the track has {n}")
        background = matting.median_background(writer.frames, writer.mattes, max_samples=cfg.background_samples)
        meta = {
            "source": str(source),
            "fps": float(track.fps),
            "frames": n,
            "res": cfg.res,
            "source_size": [int(v) for v in track.image_size],
            "crop": [float(v) for v in np.asarray(track.crop).ravel()],
            "K": crop_intrinsics(cfg.res).tolist(),
            "found_fraction": found,
            "inside_fraction": float(valid_mask(A, track.image_size, cfg.res).mean()),
        }
        writer.commit(track, background, meta)
    except video.VideoError as exc:
        writer.abort()
        raise SkipVideo(f"unreadable: {exc}") from exc
    except BaseException:
        writer.abort()
        raise
    return {"frames": n, "found_fraction": round(found, 4)}


# --- the dataset ------------------------------------------------------------------------------

def prepare_dataset(inputs: Sequence[str | Path], out: str | Path, cfg: PrepareConfig = PrepareConfig(),
                    progress: bool = True, log: Callable[[str], None] = print, tracker: Callable | None = None) -> dict:
    """Prepare every video of `inputs` into the dataset folder `out`; returns the manifest.

    Already prepared videos (status "ok" in the manifest, folder present) are kept as they are;
    skipped ones are retried only with cfg.retry_skipped."""
    from tqdm import tqdm

    videos = find_videos(inputs)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    manifest = ds.read_manifest(root) or {"version": ds.FORMAT_VERSION, "res": cfg.res, "videos": []}
    if int(manifest["res"]) != cfg.res:
        raise PrepareError(f"{root} was prepared at --res {manifest['res']}; use that resolution or another output folder")
    for p in ds.remove_partials(root):
        log(f"removed unfinished {p.name} left by an interrupted run")
    by_source = {e["source"]: e for e in manifest["videos"]}
    taken = {e["id"] for e in manifest["videos"]}

    bar = tqdm(videos, desc="prepare", unit="video", disable=not progress)
    for path in bar:
        source = str(path.resolve())
        entry = by_source.get(source)
        if entry is not None:
            done = entry["status"] == "ok" and (root / entry["id"] / "meta.json").exists()
            if done or (entry["status"] == "skipped" and not cfg.retry_skipped):
                continue
            vid = entry["id"]
        else:
            vid = video_id(path, taken)
            taken.add(vid)
            entry = {"id": vid, "source": source}
            manifest["videos"].append(entry)
            by_source[source] = entry
        bar.set_postfix_str(vid)
        t0 = time.perf_counter()
        try:
            result = prepare_video(path, root, vid, cfg, progress=progress, tracker=tracker)
            entry.update(status="ok", reason=None, **result)
        except SkipVideo as exc:
            entry.update(status="skipped", reason=str(exc), frames=0)
            log(f"skipped {path}: {exc}")
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        write_json_atomic(root / ds.MANIFEST, manifest)
    write_json_atomic(root / ds.MANIFEST, manifest)
    return manifest
