"""Data preparation (`imp prepare`): videos -> a training dataset (format: `model/data/dataset.py`).

Per video: decode (model.formats.video), track the face (model.tracking.track.track_video), cut the fixed
square head crop the tracker chose for the whole video (Track.crop; where it reaches outside the
image the crop is black with matte 0, and `PreparedVideo.valid_mask()` tells where) and resize it to the dataset resolution, matte every frame (MediaPipe
selfie segmentation, on the full frame for context, then cropped the same way) and build the
background as the per-pixel median over frames where the person does not cover it (inpainted
where the person always does and outside the source frame, from the frame's own pixels).

Runs are resumable: finished videos are listed in the manifest with status "ok" and are not
redone; a video folder only appears once complete (see dataset.VideoWriterDir); videos that fail
(unreadable, too short, no face) are recorded as "skipped" with the reason.

Scale: `workers` processes prepare one video each at a time (MediaPipe runs in each); `Shard(I, N)`
takes videos I, I+N, ... of the sorted input list, so a cluster job array covers a large collection,
each task writing its own manifest; `merge_shards` folds them into the dataset's manifest
(docs/training.md, "Preparation on a cluster").
"""
from __future__ import annotations

import inspect
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.atomic_write import write_json_atomic
from model.data import dataset as ds
from model.geometry.crop_camera import crop_camera_K
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
        valid = valid_mask(A, track.image_size, cfg.res)
        background = matting.median_background(writer.frames, writer.mattes, max_samples=cfg.background_samples, valid=valid)
        meta = {
            "source": str(source),
            "fps": float(track.fps),
            "frames": n,
            "res": cfg.res,
            "source_size": [int(v) for v in track.image_size],
            "crop": [float(v) for v in np.asarray(track.crop).ravel()],
            "K": crop_camera_K(cfg.res).tolist(),
            "found_fraction": found,
            "inside_fraction": float(valid.mean()),
            "background": ds.BACKGROUND_FORMAT,
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

@dataclass(frozen=True)
class Shard:
    """Part `index` of `count` of the input videos: videos index, index + count, ... of the sorted
    list (0-based, like a SLURM array task id). Shard(0, 1) is all of them."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise PrepareError(f"--shard {self.index}/{self.count}: needs 0 <= I < N (I counts from 0, like $SLURM_ARRAY_TASK_ID)")

    @staticmethod
    def parse(text: str) -> "Shard":
        """'I/N' -> Shard(I, N)."""
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise PrepareError(f"--shard {text!r}: expected I/N, e.g. 3/8 (shard 3 of 8, counted from 0)") from None
        return Shard(i, n)

    @property
    def manifest_name(self) -> str:
        """Every shard keeps its own manifest, so shards writing one dataset folder never race."""
        return ds.MANIFEST if self.count == 1 else f"manifest-shard-{self.index}-of-{self.count}.json"

    def takes(self, i: int) -> bool:
        return i % self.count == self.index


def default_workers() -> int:
    """All the cores this process may use (its affinity mask: a cluster job's share of the machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def _prepare_one(path: Path, root: Path, vid: str, cfg: PrepareConfig, progress: bool, tracker: Callable | None) -> tuple[str, object, float]:
    """(status, manifest fields or skip reason, seconds) of one video; runs in a worker process."""
    t0 = time.perf_counter()
    try:
        return "ok", prepare_video(path, root, vid, cfg, progress=progress, tracker=tracker), time.perf_counter() - t0
    except SkipVideo as exc:
        return "skipped", str(exc), time.perf_counter() - t0


def _worker_init() -> None:
    # one core per worker: the parallelism is the workers; library thread pools would fight them.
    # (Workers do not import torch: preparing needs NumPy, OpenCV and MediaPipe only.)
    import cv2

    cv2.setNumThreads(1)


def _prepare_parallel(todo: list[tuple[Path, str, dict]], workers: int, root: Path, cfg: PrepareConfig,
                      tracker: Callable | None, record: Callable, bar) -> None:
    """Prepare `todo` with workers - 1 spawned processes and a thread of this process, which has its
    imports done and so starts at once (a spawned worker spends ~1 s importing MediaPipe and
    OpenCV). The largest files go first, so that no long video starts last while the others idle.
    Outcomes are recorded on this thread as they come."""
    import multiprocessing
    import queue
    import threading
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    import cv2

    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    jobs = deque(sorted(todo, key=lambda job: -size(job[0])))
    lock, stop = threading.Lock(), threading.Event()
    outcomes: queue.Queue = queue.Queue()

    def take():
        with lock:
            return jobs.popleft() if jobs and not stop.is_set() else None

    def here() -> None:
        while (job := take()) is not None:
            try:
                outcomes.put((job, _prepare_one(job[0], root, job[1], cfg, False, tracker)))
            except BaseException as exc:  # handed to the main thread, which raises it
                outcomes.put((job, exc))
                return

    def submit() -> None:
        if (job := take()) is not None:
            pool.submit(_prepare_one, job[0], root, job[1], cfg, False, tracker).add_done_callback(
                lambda fut, job=job: outcomes.put((job, fut)))

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in the workers: one core for this thread's videos
    # spawn, not fork: MediaPipe and OpenCV thread pools do not survive a fork
    pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)
    thread = threading.Thread(target=here, name="imp-prepare", daemon=True)
    interrupted = False
    try:
        for _ in range(workers - 1):
            submit()
        thread.start()
        for _ in range(len(todo)):
            (path, vid, entry), outcome = outcomes.get()
            if isinstance(outcome, Future):
                outcome = outcome.result()  # a worker's exception is raised here
                submit()
            elif isinstance(outcome, BaseException):
                raise outcome
            record(path, entry, outcome)
            bar.set_postfix_str(vid)
            bar.update(1)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        raise
    finally:
        stop.set()  # no new videos; finished ones are recorded
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        if thread.is_alive() and not interrupted:  # Ctrl-C does not wait for this thread's video
            thread.join()
        cv2.setNumThreads(cv2_threads)


def prepare_dataset(inputs: Sequence[str | Path], out: str | Path, cfg: PrepareConfig = PrepareConfig(),
                    progress: bool = True, log: Callable[[str], None] = print, tracker: Callable | None = None,
                    workers: int = 1, shard: Shard = Shard()) -> dict:
    """Prepare every video of `inputs` (or this shard's share of them) into the dataset folder
    `out`; returns this run's manifest.

    workers > 1 prepares that many videos at once: one in a thread of this process, the others each
    in a spawned process with its own MediaPipe graphs; `tracker` must then be a module-level
    function. Already prepared videos
    (status "ok" in the manifest, folder present) are kept as they are; skipped ones are retried
    only with cfg.retry_skipped. With a shard of several, the manifest is
    manifest-shard-I-of-N.json (`merge_shards` folds them into manifest.json); video ids come from
    the whole input list, so every shard names a video the same way."""
    from tqdm import tqdm

    if workers < 1:
        raise PrepareError(f"--workers must be at least 1, got {workers}")
    videos = find_videos(inputs)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    base = ds.read_manifest(root)  # every shard reads it (earlier merged runs); only an unsharded run writes it
    own = base if shard.count == 1 else ds.read_manifest(root, shard.manifest_name)
    for m, name in ((base, ds.MANIFEST), (own, shard.manifest_name)):
        if m is not None and int(m["res"]) != cfg.res:
            raise PrepareError(f"{root / name} was prepared at --res {m['res']}; use that resolution or another output folder")
    manifest = own or {"version": ds.FORMAT_VERSION, "res": cfg.res, "videos": []}
    if shard.count == 1:
        for p in ds.remove_partials(root):
            log(f"removed unfinished {p.name} left by an interrupted run")
    # (a shard leaves other shards' partial folders alone: they may be running; VideoWriterDir clears its own)
    known = {e["source"]: e for e in (base or {}).get("videos", [])}
    known.update({e["source"]: e for e in manifest["videos"]})
    taken = {e["id"] for e in known.values()}
    listed = list(manifest["videos"])  # this manifest's entries in order; new ones follow in input order
    in_manifest = {e["source"] for e in manifest["videos"]}

    todo: list[tuple[Path, str, dict]] = []
    for i, path in enumerate(videos):
        source = str(path.resolve())
        entry = known.get(source)
        if entry is None:
            vid = video_id(path, taken)  # over the whole list, shard or not: the same ids on every shard
            taken.add(vid)
        else:
            vid = entry["id"]
        if not shard.takes(i):
            continue
        if entry is not None:
            done = entry.get("status") == "ok" and (root / entry["id"] / "meta.json").exists()
            if done or (entry.get("status") == "skipped" and not cfg.retry_skipped):
                if source not in in_manifest:  # done in an earlier merged run: this shard's manifest lists it too
                    listed.append(entry)
                continue
        if entry is None or source not in in_manifest:
            entry = {"id": vid, "source": source}
            if shard.count > 1:  # where it stands in the whole input list: the merged manifest keeps that order
                entry["order"] = i
            listed.append(entry)
        todo.append((path, vid, entry))

    manifest_path = root / shard.manifest_name

    def write() -> None:
        manifest["videos"] = [e for e in listed if "status" in e]  # running videos appear when finished
        write_json_atomic(manifest_path, manifest)

    def record(path: Path, entry: dict, outcome: tuple[str, object, float]) -> None:
        status, info, seconds = outcome
        if status == "ok":
            entry.update(status="ok", reason=None, **info)
        else:
            entry.update(status="skipped", reason=info, frames=0)
            log(f"skipped {path}: {info}")
        entry["seconds"] = round(seconds, 2)
        write()

    workers = min(workers, max(1, len(todo)))
    bar = tqdm(total=len(todo), desc="prepare" + (f" shard {shard.index}/{shard.count}" if shard.count > 1 else ""),
               unit="video", disable=not progress)
    if workers == 1:  # in this process, as always: per-frame progress bars, tracker may be any callable
        for path, vid, entry in todo:
            bar.set_postfix_str(vid)
            record(path, entry, _prepare_one(path, root, vid, cfg, progress, tracker))
            bar.update(1)
    else:
        _prepare_parallel(todo, workers, root, cfg, tracker, record, bar)
    bar.close()
    write()
    return manifest


def merge_shards(out: str | Path, shard_dirs: Sequence[str | Path] = (), log: Callable[[str], None] = print) -> dict:
    """Fold the manifests of `imp prepare --shard` runs into OUT/manifest.json and return it.

    Shards may have written into OUT itself (manifest-shard-I-of-N.json beside the video folders:
    the usual case on a shared file system) or into their own folders (`shard_dirs`), whose video
    folders are then moved into OUT. A video prepared by several shards counts once (ok wins over
    skipped). Merged shard manifests are deleted; OUT stays resumable by `imp prepare`."""
    root = Path(out)
    folders = [root] + [Path(d) for d in shard_dirs if Path(d).resolve() != root.resolve()]
    for f in folders:
        if not f.is_dir():
            raise PrepareError(f"{f}: no such folder (imp prepare --merge OUT [SHARD_DIRS...])")
    found: list[tuple[Path, str, dict]] = []
    for f in folders:
        names = ([ds.MANIFEST] if (f / ds.MANIFEST).exists() else []) + sorted(p.name for p in f.glob(ds.SHARD_MANIFESTS))
        for name in names:
            found.append((f, name, ds.read_manifest(f, name)))
    if not found:
        raise PrepareError(f"nothing to merge: no {ds.MANIFEST} or {ds.SHARD_MANIFESTS} in {', '.join(map(str, folders))}")
    resolutions = {int(m["res"]) for _, _, m in found}
    if len(resolutions) > 1:
        detail = ", ".join(f"{f / n}: {m['res']}" for f, n, m in found)
        raise PrepareError(f"the shards were prepared at different --res ({detail}); merge only shards of one resolution")

    chosen: dict[str, tuple[Path, dict]] = {}
    for f, _, m in found:
        for e in m["videos"]:
            prev = chosen.get(e["source"])
            if prev is None or (e.get("status") == "ok" and prev[1].get("status") != "ok"):
                chosen[e["source"]] = (f, e)
    owners: dict[str, str] = {}
    for source, (_, e) in chosen.items():
        other = owners.setdefault(e["id"], source)
        if other != source:
            raise PrepareError(f"video id {e['id']!r} names two videos ({other} and {source}): the shards were run with "
                               "different input lists; run every shard with the same inputs (ids come from the whole list)")
    # the dataset's own manifest first, then the shards' videos in the order of the input list (as
    # one unsharded run would have listed them; the order decides which video a training step draws)
    first = {e["source"]: i for i, e in enumerate(found[0][2]["videos"])} if found[0][1] == ds.MANIFEST and found[0][0] == root else {}
    order = sorted(chosen, key=lambda src: (0, first[src], "") if src in first else (1, chosen[src][1].get("order", 1 << 62), src))

    videos = []
    for source in order:
        f, e = chosen[source]
        if e.get("status") == "ok":
            if f != root and (f / e["id"]).is_dir():
                dst = root / e["id"]
                if dst.exists():  # an older copy of the same video (same source, same id)
                    shutil.rmtree(dst)
                shutil.move(str(f / e["id"]), str(dst))  # a rename on one file system, a copy across two
            if not (root / e["id"] / "meta.json").exists():
                log(f"left out {e['id']} ({source}): listed as prepared but its folder is missing; `imp prepare` will redo it")
                continue
        videos.append({k: v for k, v in e.items() if k != "order"})
    manifest = {"version": ds.FORMAT_VERSION, "res": resolutions.pop(), "videos": videos}
    write_json_atomic(root / ds.MANIFEST, manifest)
    for f, name, _ in found:  # folded in now; a stale shard manifest must not resurrect old entries later
        if not (f == root and name == ds.MANIFEST):
            (f / name).unlink(missing_ok=True)
    for f in folders[1:]:
        if not any(f.iterdir()):
            f.rmdir()
    ok = sum(e.get("status") == "ok" for e in videos)
    log(f"merged {len(found)} manifest(s) into {root / ds.MANIFEST}: {ok} videos ready, {len(videos) - ok} skipped")
    return manifest
