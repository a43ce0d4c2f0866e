"""The prepared dataset on disk: one folder per video, written atomically, read by memory map.

Layout (written by `model/data/prepare.py`, `imp prepare`):

    DATASET/manifest.json          {"version": 1, "res": R, "videos": [{"id", "source", "status":
                                    "ok" | "skipped", "reason", "frames"}, ...]}
    DATASET/<id>/frames.npy        (N, R, R, 3) uint8 RGB: the fixed square head crop of every frame
                                   (black outside the source frame; PreparedVideo.images fills it)
    DATASET/<id>/mattes.npy        (N, R, R) uint8: foreground matte (255 = person)
    DATASET/<id>/track.npz         the face track (model.tracking.track.Track), source-image pixels
    DATASET/<id>/background.png    (R, R) RGB: the scene with the person removed, over the whole crop
                                   (inpainted where the person always is and outside the source frame)
    DATASET/<id>/meta.json         source, fps, frames, res, source_size (W, H), crop (x0, y0, size),
                                   K (the crop camera: model.geometry.camera.crop_intrinsics(R)), found_fraction,
                                   inside_fraction (share of the crop inside the source frame;
                                   outside it frames are black, mattes 0: PreparedVideo.valid_mask),
                                   background (BACKGROUND_FORMAT)

The crop camera is exact: the tracker's source-frame intrinsics have f = 2.5 * crop size and the
principal point at the crop centre, so the crop resized to R px is the camera crop_intrinsics(R),
with the track's T_cam_from_head unchanged. A video folder appears only when complete: it is written
as DATASET/.partial-<id> and renamed; the manifest is replaced atomically after each video.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from model.atomic_write import write_json_atomic

FORMAT_VERSION = 1
# meta.json "background": how background.png was made. Without it (datasets prepared before
# 2026-12-06) the black outside the source frame had been inpainted into the person's hole; such a
# background is rebuilt from the frames when read.
BACKGROUND_FORMAT = "median-inside-frame"
MANIFEST = "manifest.json"
SHARD_MANIFESTS = "manifest-shard-*-of-*.json"  # `imp prepare --shard I/N` writes its own; `--merge` folds them into MANIFEST
PARTIAL_PREFIX = ".partial-"


class DatasetError(RuntimeError):
    """A dataset folder that is missing, incomplete or of another format."""


def read_manifest(root: Path, name: str = MANIFEST) -> dict | None:
    """The manifest of a dataset folder (or one of its shard manifests, `name`), or None when there
    is none yet."""
    path = Path(root) / name
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); delete it to rebuild the dataset's index") from exc
    if manifest.get("version") != FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format version {manifest.get('version')}, this code reads {FORMAT_VERSION}")
    return manifest


class VideoWriterDir:
    """Writes one video entry into DATASET/.partial-<id>, frame by frame, and publishes it with
    `commit()` (fsync + rename). Without commit the partial folder stays hidden and is removed by
    the next run."""

    def __init__(self, root: Path, video_id: str, num_frames: int, res: int):
        self.root = Path(root)
        self.final = self.root / video_id
        self.tmp = self.root / (PARTIAL_PREFIX + video_id)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.frames = np.lib.format.open_memmap(self.tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=(num_frames, res, res, 3))
        self.mattes = np.lib.format.open_memmap(self.tmp / "mattes.npy", mode="w+", dtype=np.uint8, shape=(num_frames, res, res))

    def commit(self, track, background: np.ndarray, meta: dict) -> Path:
        """Save the track, background and meta.json, then rename the folder into place."""
        import cv2

        self.frames.flush()
        self.mattes.flush()
        del self.frames, self.mattes
        track.save(self.tmp / "track.npz")
        if not cv2.imwrite(str(self.tmp / "background.png"), cv2.cvtColor(background, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {self.tmp / 'background.png'}")
        write_json_atomic(self.tmp / "meta.json", {"version": FORMAT_VERSION, **meta})
        for p in self.tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_partials(root: Path) -> list[Path]:
    """Delete the half-written video folders an interrupted run left behind; returns them."""
    gone = sorted(Path(root).glob(PARTIAL_PREFIX + "*"))
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


@dataclass
class PreparedVideo:
    """One prepared video, read lazily: frames and mattes are memory maps (no copy until indexed)."""

    path: Path
    meta: dict = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> "PreparedVideo":
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise DatasetError(f"{path} is not a prepared video (no meta.json); run `imp prepare` again to finish it")
        return cls(path, json.loads(meta_path.read_text()))

    def __len__(self) -> int:
        return int(self.meta["frames"])

    @property
    def res(self) -> int:
        return int(self.meta["res"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @cached_property
    def frames(self) -> np.ndarray:
        """(N, R, R, 3) uint8 memory map."""
        return np.load(self.path / "frames.npy", mmap_mode="r")

    @cached_property
    def mattes(self) -> np.ndarray:
        """(N, R, R) uint8 memory map, 255 = person."""
        return np.load(self.path / "mattes.npy", mmap_mode="r")

    @cached_property
    def background(self) -> np.ndarray:
        """(R, R, 3) uint8 RGB, covering the whole crop: where the crop leaves the source frame the
        background is inpainted from the frame's own pixels. An older dataset's background.png
        (no meta "background") had the crop's black border inpainted into it; it is rebuilt from
        the stored frames and mattes (a fraction of a second), so old datasets need no re-preparing."""
        import cv2

        from model.data import matting

        if self.meta.get("background") != BACKGROUND_FORMAT and not self.valid_mask.all():
            return matting.median_background(self.frames, self.mattes, valid=self.valid_mask)
        img = cv2.imread(str(self.path / "background.png"), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{self.path / 'background.png'} is missing or unreadable")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def images(self, indices) -> np.ndarray:
        """Frames `indices` (n, R, R, 3) uint8 with the crop filled: outside the source frame (black
        in frames.npy) the background shows; `valid_mask` says which pixels are real."""
        frames = np.asarray(self.frames[np.asarray(indices, dtype=np.int64)])
        invalid = ~self.valid_mask
        if invalid.any():
            frames = frames.copy()
            frames[:, invalid] = self.background[invalid]
        return frames

    @cached_property
    def track(self):
        """The face track (model.tracking.track.Track), in source-image pixels."""
        from model.tracking.track import Track

        return Track.load(self.path / "track.npz")

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float32 intrinsics of the crop camera (f = 2.5 R, centred principal point)."""
        return np.asarray(self.meta["K"], np.float32)

    @property
    def T_cam_from_head(self) -> np.ndarray:
        """(N, 4, 4) float32 head poses in the crop camera (the same as in the source camera)."""
        return np.asarray(self.track.T_cam_from_head, np.float32)

    def source_to_crop(self) -> np.ndarray:
        """(3, 3) affine map from source-image pixels to crop pixels (K_crop @ K_source^-1)."""
        return (self.K.astype(np.float64) @ np.linalg.inv(np.asarray(self.track.K, np.float64))).astype(np.float32)

    @cached_property
    def valid_mask(self) -> np.ndarray:
        """(R, R) bool: crop pixels inside the source frame (outside: black frames, matte 0)."""
        from model.tracking.crop import valid_mask

        A = crop_affine_from_meta(self.meta)
        return valid_mask(A, tuple(self.meta["source_size"]), self.res)

    def read(self, indices) -> dict[str, np.ndarray]:
        """Frames `indices` (T,) in the layout the model takes: images (T, 3, R, R) float32 in
        [-1, 1], mattes (T, 1, R, R) float32 in [0, 1], T_cam_from_head (T, 4, 4), vertices_head
        (T, 478, 3) metres, K (3, 3), background (3, R, R) in [-1, 1], valid (1, R, R)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.path.name}: frame indices must be in [0, {len(self)}), got {idx.min()}..{idx.max()}")
        frames = self.images(idx).astype(np.float32)  # one gather from the memory map
        return {
            "images": frames.transpose(0, 3, 1, 2) / 127.5 - 1.0,
            "mattes": np.asarray(self.mattes[idx], np.float32)[:, None] / 255.0,
            "T_cam_from_head": self.T_cam_from_head[idx],
            "vertices_head": self.track.vertices_head()[idx],
            "K": self.K,
            "background": self.background.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0,
            "valid": self.valid_mask[None].astype(np.float32),
        }

    def landmarks(self) -> np.ndarray:
        """(N, 478, 2) tracked landmarks in crop pixels."""
        A = self.source_to_crop()
        lm = np.asarray(self.track.landmarks, np.float32)
        return lm @ A[:2, :2].T + A[:2, 2]


def crop_affine_from_meta(meta: dict) -> np.ndarray:
    """(3, 3) source-to-crop affine from meta.json's crop (x0, y0, size) and res."""
    x0, y0, size = (float(v) for v in meta["crop"])
    s = int(meta["res"]) / size
    # crop pixel u = s (x - x0) + (s - 1) / 2: pixel centres kept (camera.scale_intrinsics)
    return np.array([[s, 0.0, -s * x0 + 0.5 * s - 0.5], [0.0, s, -s * y0 + 0.5 * s - 0.5], [0.0, 0.0, 1.0]])


class PreparedDataset:
    """The videos of a dataset folder whose status is "ok", in manifest order."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            if any(self.root.glob(SHARD_MANIFESTS)):
                raise DatasetError(f"{self.root} holds shards of `imp prepare --shard` but no {MANIFEST} yet: "
                                   f"run `imp prepare --merge {self.root}` once every shard has finished")
            raise DatasetError(f"{self.root} has no {MANIFEST}: not a dataset prepared by `imp prepare`")
        self.manifest = manifest
        self.res = int(manifest["res"])
        self.entries = [v for v in manifest["videos"] if v.get("status") == "ok"]
        self._open: dict[int, PreparedVideo] = {}  # opened once: memory maps and tracks are reused

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> PreparedVideo:
        if i not in self._open:
            self._open[i] = PreparedVideo.open(self.root / self.entries[i]["id"])
        return self._open[i]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def total_frames(self) -> int:
        return sum(int(v["frames"]) for v in self.entries)
