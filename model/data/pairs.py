"""Training data of sec. 3.3 / supp. A: reference / target pairs drawn from one prepared video.

A training sample is a reference frame (the portrait O^ref, with its coordinate map in its own
camera) and a clip of `cfg.frames` consecutive target frames of the same video, with their mattes,
the video's background and the face meshes from tracking. Its MPI camera depends on the loss:

- L_mpi (`side=False`): the MPI camera is each target frame's own camera (the fixed crop camera
  with that frame's head pose); the mesh conditions are the target meshes seen from there;
- L_side (`side=True`): the MPI camera is the reference camera: the target *expressions* are
  posed with the reference head pose and rasterised there; the MPIs are then rendered into each
  target camera, T_tgt_from_mpi = T_tgt_from_head @ inv(T_ref_from_head) (the head is rigid, so a
  head pose change is a camera move around it).

The losses always compare with the real target frames, in the target cameras, so the mesh
disparity / coverage used by the disparity loss are the target camera's ones.

Speed: rasterising the mesh costs about as much as a network step on a CPU, so every frame's
conditions in its own camera (coordinate code, coverage, disparity) are computed once per video
and kept as memory-mapped .npy files in a cache folder (alpha planes are re-binned from the
disparity per batch, which is cheap and exact). Side conditions (a pose/expression pair that
never occurs in the video) are rasterised per batch; they are needed only for the 20 % of L_side
steps.

Determinism: a batch is a pure function of (seed, step, rank, side), so resuming at step k draws
the same batches as an uninterrupted run, whatever happened before.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from model.geometry import camera, conditions
from model.net.config import ModelConfig
from model.data.dataset import DatasetError, PreparedDataset, PreparedVideo
from model.data.matting import bust_matte, continue_person, unmix_foreground
from model.geometry.portrait_warp import portrait_warp
from model.tracking.facemesh import face_topology

RASTER_CHUNK = 32  # frames per rasteriser call when filling the cache (bounds its memory)


def image_to_tensor(images: np.ndarray) -> Tensor:
    """Images (..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float() / 127.5 - 1.0


def mesh_code(template: np.ndarray) -> Tensor:
    """Per-vertex canonical code (V, 3) of an identity: its neutral template normalised to [-1, 1]
    per axis (conditions.canonical_code). Training and inference must use the same code: generate
    with the portrait's track.template."""
    return conditions.canonical_code(torch.as_tensor(np.asarray(template, np.float32)))


def coordinate_channels(coords: Tensor, coverage: Tensor, channels: int) -> Tensor:
    """The network's coordinate input (..., channels, H, W) from code (..., 3, H, W) and coverage
    (..., 1, H, W): the code alone (3) or code + coverage (4), as the config asks."""
    if channels == 3:
        return coords
    if channels == 4:
        return torch.cat([coords, coverage], -3)
    raise ValueError(f"coord_channels must be 3 or 4, got {channels}")


def rasterise(vertices_head: Tensor, faces: Tensor, code: Tensor, K: Tensor, T_cam_from_head: Tensor, res: int,
              planes: int) -> conditions.MeshConditions:
    """Mesh conditions of B posed meshes (vertices (B, V, 3), poses (B, 4, 4)) at res x res; no
    supersampling (training and inference must agree on this)."""
    return conditions.mesh_conditions(vertices_head, faces, code, K, T_cam_from_head, (res, res), planes)


@dataclass
class TrainBatch:
    """A batch of B clips of T frames at R x R, colours in [-1, 1].

    portrait (B, 3+Cc, R, R): reference frame + its coordinate map (in the reference camera);
    target (B, T, 3, R, R), matte (B, T, 1, R, R), background (B, 3, R, R);
    coords (B, T, Cc, R, R), mesh_alpha (B, T, D, R, R), depths (B, T, D): the driving mesh in the
        MPI camera and that camera's plane depths;
    K (B, 3, 3): the crop camera (MPI and target cameras share it);
    T_tgt_from_mpi (B, T, 4, 4): identity for L_mpi, target from reference camera for L_side;
    T_mpi_from_head (B, T, 4, 4): the head pose in the MPI camera;
    mesh_disparity, mesh_coverage (B, T, 1, R, R): the target meshes in the target cameras;
    valid (B, 1, R, R): 1 where the crop's pixels are real (inside the source video's frame);
    identity (B, T, 5, R, R) or None: the reference frame carried through the meshes into the MPI
        camera (model/geometry/portrait_warp.py), for configs with identity_warp;
    side: which loss the batch was drawn for; videos / ref_index / start: where it came from."""

    portrait: Tensor
    target: Tensor
    matte: Tensor
    background: Tensor
    coords: Tensor
    mesh_alpha: Tensor
    depths: Tensor
    K: Tensor
    T_tgt_from_mpi: Tensor
    T_mpi_from_head: Tensor
    mesh_disparity: Tensor
    mesh_coverage: Tensor
    valid: Tensor
    side: bool
    videos: list[str]
    ref_index: list[int]
    start: list[int]
    identity: Tensor | None = None

    def to(self, device: torch.device | str) -> "TrainBatch":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainBatch(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in values.items()})


class VideoSource:
    """One prepared video at the model's resolution, with its per-frame conditions cached."""

    def __init__(self, video: PreparedVideo, vid: str, cfg: ModelConfig, cache_dir: Path | None, progress: bool = False):
        self.video = video
        self.id = vid
        self.cfg = cfg
        self.res = cfg.res
        self.K = camera.scale_intrinsics(torch.from_numpy(video.K.copy()), self.res / video.res)
        self.cache_dir = cache_dir
        self._progress = progress
        self._cache: dict[str, np.ndarray] | None = None
        self._last_portrait: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.video)

    # The track is read on first use: a loader worker opens only the videos its batches draw from
    # (with tens of thousands of videos, reading every track in every worker would take minutes).
    @cached_property
    def T(self) -> Tensor:
        """(N, 4, 4) head poses in the crop camera."""
        return torch.from_numpy(self.video.T_cam_from_head.copy())

    @cached_property
    def vertices(self) -> Tensor:
        """(N, V, 3) tracked meshes in the head frame, metres."""
        return torch.from_numpy(np.ascontiguousarray(self.video.track.vertices_head(), np.float32))

    @cached_property
    def faces(self) -> Tensor:
        return torch.from_numpy(np.asarray(self.video.track.faces)).long()

    @cached_property
    def code(self) -> Tensor:
        return mesh_code(self.video.track.template)

    @cached_property
    def topology(self):
        return face_topology()

    # -------------------------------------------------------------------- images at the model res
    def _resize(self, images: np.ndarray) -> np.ndarray:
        if self.video.res == self.res:
            return np.asarray(images)
        import cv2

        flag = cv2.INTER_AREA if self.res < self.video.res else cv2.INTER_LINEAR
        return np.stack([cv2.resize(np.asarray(im), (self.res, self.res), interpolation=flag) for im in images])

    def frames(self, idx: np.ndarray) -> Tensor:
        """(n, 3, R, R) in [-1, 1], filled with the background outside the source frame."""
        return image_to_tensor(self._resize(self.video.images(idx)))

    def valid(self) -> Tensor:
        """(1, R, R) float: 1 where the crop shows the source frame (the loss counts only these)."""
        m = self._resize(self.video.valid_mask[None].astype(np.uint8) * 255)[0]
        return torch.from_numpy(m >= 128).float()[None]

    def mattes(self, idx: np.ndarray) -> Tensor:
        """(n, 1, R, R) in [0, 1]."""
        return torch.from_numpy(self._resize(self.video.mattes[idx])).float().unsqueeze(1) / 255.0

    @cached_property
    def background_image(self) -> np.ndarray:
        """(R, R, 3) uint8."""
        return self._resize(self.video.background[None])[0]

    def background(self) -> Tensor:
        """(3, R, R) in [-1, 1]."""
        return image_to_tensor(self.background_image)

    # ------------------------------------------------------------------ per-frame own conditions
    def _cache_path(self) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.id}-r{self.res}"

    def own_conditions(self) -> dict[str, np.ndarray]:
        """Every frame's mesh in its own camera: coords (N, 3, R, R) float16, coverage (N, 1, R, R)
        float16, disparity (N, 1, R, R) float32; from the cache folder when it holds them."""
        if self._cache is not None:
            return self._cache
        path = self._cache_path()
        names = ("coords", "coverage", "disparity")
        if path is not None and all((path / f"{n}.npy").exists() for n in names):
            arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in names}
            if arrays["coords"].shape[0] == len(self):
                self._cache = arrays
                return arrays
        arrays = self._compute_own_conditions()
        if path is not None:
            # published by rename: a reader (another rank, a later run) sees all files or none
            tmp = path.with_name(f".partial-{path.name}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for n, a in arrays.items():
                np.save(tmp / f"{n}.npy", a)
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            try:
                os.replace(tmp, path)
            except OSError:  # another process published the same cache first
                shutil.rmtree(tmp, ignore_errors=True)
        self._cache = arrays
        return arrays

    def _compute_own_conditions(self) -> dict[str, np.ndarray]:
        n, R = len(self), self.res
        out = {"coords": np.zeros((n, 3, R, R), np.float16), "coverage": np.zeros((n, 1, R, R), np.float16),
               "disparity": np.zeros((n, 1, R, R), np.float32)}
        for s in tqdm(range(0, n, RASTER_CHUNK), desc=f"conditions {self.id}", disable=not self._progress, leave=False):
            e = min(n, s + RASTER_CHUNK)
            c = rasterise(self.vertices[s:e], self.faces, self.code, self.K, self.T[s:e], R, 2)
            out["coords"][s:e] = c.coords.numpy()
            out["coverage"][s:e] = c.coverage.numpy()
            out["disparity"][s:e] = c.disparity.numpy()
        return out

    def portrait(self, ref: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame `ref` as a portrait: (image (R, R, 3) uint8, matte (R, R) float32), the person
        continued past the source frame's edges as a generated portrait's is
        (model.data.matting.continue_person). The last one is kept: a batch sample asks for it as
        the portrait input and again for the identity condition."""
        if self._last_portrait is None or self._last_portrait[0] != ref:
            i = np.array([ref])
            valid = self.valid()[0].numpy() > 0.5
            image, matte, _ = continue_person(self._resize(self.video.images(i))[0], self.mattes(i)[0, 0].numpy(),
                                              self.background_image, valid, bust_matte(self.landmarks(ref), (self.res, self.res)))
            self._last_portrait = (ref, image, matte)
        return self._last_portrait[1], self._last_portrait[2]

    def landmarks(self, ref: int) -> np.ndarray:
        """(V, 2) float64: frame ref's tracked mesh in its crop's pixels at the model's resolution."""
        return camera.project(self.K.double(), self.T[ref].double(), self.vertices[ref].double())[0].numpy()

    def identity(self, ref: int, vertices_head: Tensor, T_mpi_from_head: Tensor, torso_shift: Tensor | None = None,
                 hair_poses: Tensor | None = None) -> Tensor:
        """(n, 5, R, R): frame `ref` (image, matte, its own mesh and pose) carried onto the meshes
        vertices_head (n, V, 3) posed at T_mpi_from_head (n, 4, 4) in the MPI camera, its body
        moved by torso_shift (n, 2) (None: it stays; `torso_from`), its hair following hair_poses
        (n, 4, 4) (None: T_mpi_from_head; `hair_from`)."""
        image, matte = self.portrait(ref)
        if self.cfg.identity_unmix:
            image = unmix_foreground(image, matte, self.background_image)
        return portrait_warp(image_to_tensor(image), torch.from_numpy(matte)[None], self.vertices[ref], self.T[ref], vertices_head,
                             T_mpi_from_head, self.topology, self.K, (self.res, self.res), torso_shift, hair_poses)

    @cached_property
    def torso_track(self) -> np.ndarray:
        """(N, 2) float32: the torso's motion in every frame against frame 0, made on first use."""
        from model.data.body_motion import prepared_torso_shifts

        return prepared_torso_shifts(self.video)

    def torso_from(self, ref: int, idx: np.ndarray) -> Tensor:
        """(n, 2): the torso's motion in frames idx relative to frame `ref`."""
        t = self.torso_track
        return torch.from_numpy(t[np.asarray(idx)] - t[ref])

    @cached_property
    def hair_track(self) -> np.ndarray | None:
        """(N, 4, 4) float32: the steadier poses the hair follows in every frame, or None when it
        follows the head's own (model/data/hair_motion.py), decided on first use."""
        from model.data.hair_motion import hair_poses, prepared_hair_steadiness

        video = self.video
        poses = hair_poses(video.T_cam_from_head, video.fps, prepared_hair_steadiness(video))
        return None if poses is None else poses.astype(np.float32)

    def hair_from(self, ref: int, idx: np.ndarray) -> Tensor | None:
        """(n, 4, 4): the hair's poses in frames idx in their own cameras, moved from frame `ref`'s
        head as the hair moved since (model.data.driving.transfer_pose); None when the hair follows
        the head."""
        from model.data.driving import transfer_pose

        h = self.hair_track
        if h is None:
            return None
        return torch.from_numpy(transfer_pose(self.video.T_cam_from_head[ref], h[ref], h[np.asarray(idx)]))

    def own(self, idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """(coords (n, 3, R, R), coverage (n, 1, R, R), disparity (n, 1, R, R)) float32 of frames idx."""
        c = self.own_conditions()
        return tuple(torch.from_numpy(np.asarray(c[k][idx], np.float32)) for k in ("coords", "coverage", "disparity"))


class PairSampler:
    """Draws TrainBatches from the videos of a prepared dataset (see the module docstring)."""

    def __init__(self, data: str | Path, cfg: ModelConfig, cache_dir: str | Path | None = None,
                 videos: list[str] | None = None, exclude: list[str] | None = None, seed: int = 0, progress: bool = False):
        ds = PreparedDataset(data)
        entries = ds.entries
        known = [e["id"] for e in entries]
        for name, wanted in (("--videos", videos), ("--exclude", exclude)):
            missing = sorted(set(wanted or []) - set(known))
            if missing:
                raise DatasetError(f"{name}: no video(s) {missing} with status ok in {ds.root}; known: {', '.join(known)}")
        chosen = [e for e in entries if (videos is None or e["id"] in videos) and e["id"] not in set(exclude or [])]
        self.too_short = [e["id"] for e in chosen if int(e["frames"]) < cfg.frames]  # cannot fill one clip
        chosen = [e for e in chosen if int(e["frames"]) >= cfg.frames]
        if not chosen:
            raise DatasetError(f"{ds.root}: no usable video (status ok, at least {cfg.frames} frames for config {cfg.name!r})")
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.sources = [VideoSource(PreparedVideo.open(ds.root / e["id"]), e["id"], cfg, self.cache_dir, progress) for e in chosen]
        # every clip start equally likely: videos weighted by their number of clip starts
        starts = np.array([len(s) - cfg.frames + 1 for s in self.sources], np.float64)
        self.weights = starts / starts.sum()

    @property
    def video_ids(self) -> list[str]:
        return [s.id for s in self.sources]

    def prepare_cache(self) -> None:
        """Fill the conditions cache of every video now (instead of on first use)."""
        for s in tqdm(self.sources, desc="conditions cache", disable=len(self.sources) < 2):
            s.own_conditions()

    def draw(self, step: int, rank: int, batch: int) -> list[tuple[int, int, int]]:
        """(video index, reference frame, clip start) for each sample of a batch: a pure function of
        (seed, step, rank)."""
        rng = np.random.default_rng([self.seed, step, rank, 0x5EED])
        out = []
        for _ in range(batch):
            v = int(rng.choice(len(self.sources), p=self.weights))
            n = len(self.sources[v])
            out.append((v, int(rng.integers(n)), int(rng.integers(n - self.cfg.frames + 1))))
        return out

    def batch(self, step: int, rank: int, batch: int, side: bool) -> TrainBatch:
        return self.make_batch(self.draw(step, rank, batch), side)

    def make_batch(self, picks: list[tuple[int, int, int]], side: bool) -> TrainBatch:
        return self.gather(picks, side).finish()

    def gather(self, picks: list[tuple[int, int, int]], side: bool, defer: bool = False) -> "PendingBatch":
        """Everything of a batch that is read from disk, stacked. With `defer` the mesh conditions
        in the MPI camera (the L_side samples' rasterising in the reference camera, every sample's
        alpha planes) are left for `PendingBatch.finish` on the training device: a GPU rasterises
        many times faster than a loader worker, and the alpha planes (D per frame, 0.8 GB for a
        `paper` clip) need not cross to it when their inputs are 1/10 of that."""
        cfg = self.cfg
        Tn, D = cfg.frames, cfg.planes
        names = ("portrait", "target", "matte", "background", "K", "T_tgt_from_mpi", "T_mpi_from_head", "mesh_disparity",
                 "mesh_coverage", "valid") + (() if defer else ("coords", "mesh_alpha", "depths")) + \
            (("identity",) if cfg.identity_warp else ())
        parts: dict[str, list[Tensor]] = {k: [] for k in names}
        pending: list[SideRaster | OwnPlanes] = []
        for v, ref, start in picks:
            src = self.sources[v]
            clip = np.arange(start, start + Tn)
            r_coords, r_cov, _ = src.own(np.array([ref]))
            ref_img = image_to_tensor(src.portrait(ref)[0])[None]
            parts["portrait"].append(torch.cat([ref_img, coordinate_channels(r_coords, r_cov, cfg.coord_channels)], 1)[0])
            parts["target"].append(src.frames(clip))
            parts["matte"].append(src.mattes(clip))
            parts["background"].append(src.background())
            parts["valid"].append(src.valid())
            coords, cov, disp = src.own(clip)
            parts["mesh_disparity"].append(disp)
            parts["mesh_coverage"].append(cov)
            T_tgt = src.T[clip]
            if side:
                T_ref = src.T[ref].expand(Tn, 4, 4)
                T_rel = T_tgt @ camera.invert_pose(T_ref)
                T_mpi = T_ref
                todo: SideRaster | OwnPlanes = SideRaster(src.vertices[clip], src.faces, src.code, src.K, T_ref.contiguous())
            else:
                T_rel = torch.eye(4).expand(Tn, 4, 4)
                T_mpi = T_tgt
                todo = OwnPlanes(coordinate_channels(coords, cov, cfg.coord_channels), conditions.mpi_depths(T_tgt, D))
            if defer:
                pending.append(todo)
            else:
                coords, mesh_alpha, depths = todo.conditions(cfg, disp, cov)
                parts["coords"].append(coords)
                parts["mesh_alpha"].append(mesh_alpha)
                parts["depths"].append(depths)
            parts["K"].append(src.K)
            parts["T_tgt_from_mpi"].append(T_rel.contiguous())
            parts["T_mpi_from_head"].append(T_mpi.contiguous())
            if cfg.identity_warp:
                # an L_side sample's MPI camera keeps the reference pose, the body where it was
                parts["identity"].append(src.identity(ref, src.vertices[clip], T_mpi.contiguous(),
                                                      None if side else src.torso_from(ref, clip),
                                                      None if side else src.hair_from(ref, clip)))
        return PendingBatch({k: torch.stack(v) for k, v in parts.items()}, pending or None, cfg, side,
                            [self.sources[v].id for v, _, _ in picks], [r for _, r, _ in picks], [s for _, _, s in picks])


@dataclass
class SideRaster:
    """The reference-camera conditions an L_side sample still needs: the clip's meshes (T, V, 3),
    posed with the reference head pose T_ref (T, 4, 4), rasterised with the video's faces, code and K."""

    vertices: Tensor
    faces: Tensor
    code: Tensor
    K: Tensor
    T_ref: Tensor

    def conditions(self, cfg: ModelConfig, disparity: Tensor | None = None, coverage: Tensor | None = None,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(coords (T, Cc, R, R), mesh_alpha (T, D, R, R), depths (T, D)), computed on `device`
        (default: where the tensors are). (disparity / coverage: unused, see OwnPlanes.)"""
        dev = self.vertices.device if device is None else torch.device(device)
        c = rasterise(self.vertices.to(dev), self.faces.to(dev), self.code.to(dev), self.K.to(dev), self.T_ref.to(dev),
                      cfg.res, cfg.planes)
        return (coordinate_channels(c.coords, c.coverage, cfg.coord_channels), conditions.alpha_planes(c.disparity, c.coverage, c.depths),
                c.depths)

    def pin_memory(self) -> "SideRaster":
        return SideRaster(*(t.pin_memory() for t in (self.vertices, self.faces, self.code, self.K, self.T_ref)))


@dataclass
class OwnPlanes:
    """The MPI-camera conditions of an L_mpi sample before its alpha planes: the coordinate input
    (T, Cc, R, R) and the plane depths (T, D). The planes are binned from the sample's own
    disparity and coverage, which the batch carries anyway (mesh_disparity, mesh_coverage)."""

    coords: Tensor
    depths: Tensor

    def conditions(self, cfg: ModelConfig, disparity: Tensor, coverage: Tensor,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(coords, mesh_alpha (T, D, R, R), depths) on `device` (default: where the tensors are)."""
        dev = self.coords.device if device is None else torch.device(device)
        depths = self.depths.to(dev)
        return self.coords.to(dev), conditions.alpha_planes(disparity.to(dev), coverage.to(dev), depths), depths

    def pin_memory(self) -> "OwnPlanes":
        return OwnPlanes(self.coords.pin_memory(), self.depths.pin_memory())


@dataclass
class PendingBatch:
    """A TrainBatch read from disk and stacked, maybe without its mesh conditions in the MPI camera
    (`pending`, one per sample); `finish(device)` computes them there and moves the rest there."""

    tensors: dict[str, Tensor]
    pending: list[SideRaster | OwnPlanes] | None
    cfg: ModelConfig
    side: bool
    videos: list[str]
    ref_index: list[int]
    start: list[int]

    def pin_memory(self) -> "PendingBatch":
        """Page-locked copies (DataLoader(pin_memory=True) calls this): host-to-GPU copies then run
        asynchronously."""
        return dataclasses.replace(self, tensors={k: v.pin_memory() for k, v in self.tensors.items()},
                                   pending=None if self.pending is None else [p.pin_memory() for p in self.pending])

    def finish(self, device: torch.device | str | None = None) -> TrainBatch:
        dev = torch.device("cpu" if device is None else device)
        async_copy = dev.type == "cuda"
        values = {k: v.to(dev, non_blocking=async_copy) for k, v in self.tensors.items()}
        if self.pending is not None:
            done = [p.conditions(self.cfg, values["mesh_disparity"][i], values["mesh_coverage"][i], dev)
                    for i, p in enumerate(self.pending)]
            for i, name in enumerate(("coords", "mesh_alpha", "depths")):
                values[name] = torch.stack([d[i] for d in done])
        return TrainBatch(**values, side=self.side, videos=self.videos, ref_index=self.ref_index, start=self.start)
