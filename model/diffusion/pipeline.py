"""Generation: portrait + driving -> conditions -> sampler -> MPI frames (paper sec. 3.4,
DESIGN.md Pipeline 1-4).

1. `prepare_portrait`: track the portrait, cut the tracker's fixed head crop at the model's
   resolution (the MPI camera is that crop camera, f = 2.5 res), matte it, inpaint the background
   (also over the part of the crop outside the source image, which the portrait then shows, as
   the training frames do), and rasterise the portrait's own mesh into its coordinate map (the
   identity input O^ref + C^ref).
2. Per clip of cfg.frames frames, the driving frames (model/data/driving.py) are rasterised in the MPI
   camera (`mesh_inputs`): coordinate map and D mesh alpha planes at the plane depths of each
   frame's MPI (near / far from the head distance r, model.geometry.mpi.near_far); with the identity
   condition also the portrait carried onto them (model/geometry/portrait_warp.py).
3. DDIM with two-scale guidance (model/diffusion/sampler.py) from seeded noise. Clips are chained through the
   first frame: the last generated frame of clip k is the first-frame condition of clip k+1, whose
   first frame repeats it and is dropped. The first clip's first-frame condition is the portrait
   itself (video driving and the built-in animation start at its pose and face), or nothing.
4. The predicted MPI (frontal / residual in [-1, 1], alpha in [0, 1]) becomes `MPIFrame`s: uint8
   sRGB colours and alpha, K, T_cam_from_head, near, far and the inpainted background.

`Generator.generate_clips` yields each clip's new frames as soon as they are sampled, so a writer
(imp generate) or a ring buffer (the viewer) can stream them.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.geometry import camera
from model.formats.clip import MPIFrame
from model.net.config import ModelConfig
from model.diffusion.process import Conditions, make_schedule
from model.data.driving import DrivingFrames, DrivingSource
from model.data.matting import unmix_foreground
from model.data.portrait_crop import crop_portrait, read_portrait_image  # noqa: F401 - read_portrait_image: part of this API
from model.diffusion.clips import (DrivingClip, GenerationStatus, GenerationTimes, clip_frames, driving_clips,
                                   keep_condition_outside, total_frames)
from model.diffusion.sampler import DDIMScheduler, Guidance, sample_chained
from model.tracking.track import Track
from model.net.precision import for_inference
from model.net.unet import MPIPrediction, MPIUNet

RASTER_CHUNK = 8  # frames rasterised per call (bounds the rasteriser's memory at 512^2)


# ------------------------------------------------------------------------------------ conversions

def image_to_model(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def model_to_uint8(x: Tensor) -> np.ndarray:
    """(..., C, H, W) in [-1, 1] -> uint8 of the same shape (0..255, rounded)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()


def alpha_to_uint8(alpha: Tensor) -> np.ndarray:
    """(..., D, H, W) in [0, 1] -> uint8 (0..255, rounded)."""
    return (alpha.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------- conditions

def mesh_inputs(vertices_head: np.ndarray | Tensor, T_cam_from_head: np.ndarray | Tensor, code: Tensor, cfg: ModelConfig,
                K: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(coords (n, Cc, R, R), mesh alpha (n, D, R, R), plane depths (n, D)) of n posed meshes seen
    by the MPI camera K (default: the crop camera at cfg.res), each frame's planes between its own
    near / far. vertices_head (n, 478, 3) head frame, metres; T_cam_from_head (n, 4, 4); code
    (478, 3) from `model.data.pairs.mesh_code` of the identity template. Rasterised exactly as the
    training pairs are (model.data.pairs.rasterise / coordinate_channels): what the model saw."""
    from model.data.pairs import coordinate_channels, rasterise
    from model.tracking.facemesh import mesh_faces

    verts = torch.as_tensor(np.asarray(vertices_head, np.float32)).float()
    T = torch.as_tensor(np.asarray(T_cam_from_head, np.float32)).float()
    K = camera.crop_intrinsics(cfg.res) if K is None else K
    faces = torch.from_numpy(mesh_faces()).long()
    coords, alpha, depths = [], [], []
    for i in range(0, len(verts), RASTER_CHUNK):
        mc = rasterise(verts[i:i + RASTER_CHUNK], faces, code, K, T[i:i + RASTER_CHUNK], cfg.res, cfg.planes)
        coords.append(coordinate_channels(mc.coords, mc.coverage, cfg.coord_channels))
        alpha.append(mc.alpha)
        depths.append(mc.depths)
    return torch.cat(coords), torch.cat(alpha), torch.cat(depths)


def delivered(frontal: Tensor, residual: Tensor, alpha: Tensor, identity: Tensor | None, background: Tensor,
              photo: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
    """A clip's (frontal, residual) (T, 3, R, R) and alpha (T, D, R, R) as generation delivers them
    (model.diffusion.clips.keep_condition_outside, which every backend applies): past the source's
    photo (R, R) bool the identity condition (T, 5, R, R) over the background (3, R, R) in [-1, 1],
    the alpha cut to its matte there and to a few pixels around its person inside the photo.
    Unchanged without a condition. `imp eval` scores the network through this too."""
    if identity is None:
        return frontal, residual, alpha
    as_np = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    kept = keep_condition_outside(as_np(frontal), as_np(residual), as_np(alpha), as_np(identity), as_np(background),
                                  np.asarray(photo, bool))
    return tuple(torch.from_numpy(k) for k in kept)


# --------------------------------------------------------------------------------------- portrait

@dataclass
class Portrait:
    """A portrait prepared for generation, in the MPI camera (its head crop at the model's res)."""

    track: Track  # in source-image pixels
    image: np.ndarray  # (R, R, 3) uint8: the head crop
    matte: np.ndarray  # (R, R) float32 in [0, 1]
    background: np.ndarray  # (R, R, 3) uint8: the crop with the person inpainted
    K: np.ndarray  # (3, 3) float32: crop_intrinsics(R)
    code: Tensor  # (478, 3) canonical code of the portrait's template (model.data.pairs.mesh_code)
    reference: Tensor  # (3 + Cc, R, R): portrait in [-1, 1] and its coordinate map (O^ref, C^ref)
    valid: np.ndarray  # (R, R) float32 in [0, 1]: how much the MPI may show there (PortraitCrop.valid; elsewhere the background)
    photo: np.ndarray  # (R, R) bool: crop pixels inside the portrait's photo (outside it clips copy the condition, clips.keep_condition_outside)

    @property
    def T_cam_from_head(self) -> np.ndarray:
        """(4, 4) float32: the portrait's head in the MPI camera."""
        return self.track.T_cam_from_head[0].astype(np.float32)

    @property
    def res(self) -> int:
        return int(self.image.shape[0])

    @cached_property
    def foreground(self) -> np.ndarray:
        """(R, R, 3) uint8: the person's unmixed colour (model.data.matting.unmix_foreground), made
        once and carried by every clip's identity condition with ModelConfig.identity_unmix."""
        return unmix_foreground(self.image, self.matte, self.background)

    def keep_condition_outside(self, frontal: Tensor, residual: Tensor, alpha: Tensor,
                               identity: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(frontal, residual) (T, 3, R, R) and alpha (T, D, R, R) of a clip with the identity
        condition (T, 5, R, R) over the background and its matte cutting the alpha outside the
        portrait's photo, and inside it the alpha cut to the condition's person grown by a few
        pixels (model.diffusion.clips.keep_condition_outside); unchanged without a condition."""
        return delivered(frontal, residual, alpha, identity, image_to_model(self.background), self.photo)

    def identity(self, frames: DrivingFrames, unmix: bool) -> Tensor:
        """(n, 5, R, R): the identity condition of driving frames (model/geometry/portrait_warp.py);
        unmix: carry the unmixed foreground colour (ModelConfig.identity_unmix)."""
        from model.geometry.portrait_warp import portrait_warp
        from model.tracking.facemesh import face_topology

        return portrait_warp(image_to_model(self.foreground if unmix else self.image), torch.from_numpy(self.matte)[None], torch.from_numpy(self.track.vertices_head(0)),
                             torch.from_numpy(self.T_cam_from_head), torch.from_numpy(frames.vertices_head),
                             torch.from_numpy(frames.T_cam_from_head), face_topology(), torch.from_numpy(self.K), (self.res, self.res),
                             torch.from_numpy(frames.torso_shift), torch.from_numpy(frames.T_hair))


def prepare_portrait(image: str | Path | np.ndarray, cfg: ModelConfig, cache_dir: Path | None = None) -> Portrait:
    """Track, crop, matte and inpaint a portrait (path or RGB uint8 array) for the model `cfg`
    (model.data.portrait_crop.crop_portrait, with the cache `cache_dir`), plus its mesh code and
    reference input. Raises model.tracking.TrackingError when it has no face, ValueError when it is
    no image."""
    from model.data.pairs import mesh_code

    crop = crop_portrait(image, cfg.res, cache_dir)
    track = crop.track
    code = mesh_code(track.template)
    coords, _, _ = mesh_inputs(track.vertices_head(0)[None], track.T_cam_from_head[:1], code, cfg)
    reference = torch.cat([image_to_model(crop.image), coords[0]], 0)
    return Portrait(track, crop.image, crop.matte, crop.background, crop.K, code, reference, crop.valid, crop.photo)


# -------------------------------------------------------------------------------------- generator

class Generator:
    """Samples MPI videos of one portrait driven by a DrivingSource with a trained MPIUNet."""

    def __init__(self, model: MPIUNet, device: str | torch.device = "cpu", half: bool | None = None):
        """`model` may also be a model.net.variant.VariantModel (same call signature and .cfg);
        half: fp16 autocast (None: on a GPU only, model.net.precision.for_inference)."""
        self.device = torch.device(device)
        self.model = for_inference(model.to(self.device).eval(), self.device, half)
        self.cfg: ModelConfig = model.cfg
        self.schedule = make_schedule(self.cfg.diffusion)
        self.portrait: Portrait | None = None
        self.times = GenerationTimes()  # of the current / last generate_clips call

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", half: bool | None = None) -> "Generator":
        """A generator with the weights of a checkpoint (model.net.checkpoint.CheckpointError if it is not one),
        rendered the way it was trained (model.net.variant: mesh alpha for bootstrap-only, no residual)."""
        from model.net.variant import load_trained

        model, _ = load_trained(path, device=device)
        return cls(model, device, half)

    def prepare(self, portrait_image: str | Path | np.ndarray, cache_dir: Path | None = None) -> Portrait:
        """Track, crop, matte and inpaint the portrait (kept in / read from `cache_dir` when given,
        model/data/portrait_cache.py); later clips are generated of it."""
        self.portrait = prepare_portrait(portrait_image, self.cfg, cache_dir)
        return self.portrait

    def _require_portrait(self) -> Portrait:
        if self.portrait is None:
            raise RuntimeError("Generator.prepare(portrait_image) must run before generating")
        return self.portrait

    def clip_conditions(self, frames: DrivingFrames, first_frame: Tensor | None) -> Conditions:
        """Conditions of one clip (batch 1) from exactly cfg.frames driving frames; first_frame
        (3, R, R) in [-1, 1] or None (dropped)."""
        p = self._require_portrait()
        R = self.cfg.res
        if len(frames) != self.cfg.frames:
            raise ValueError(f"a clip needs {self.cfg.frames} driving frames, got {len(frames)}")
        coords, alpha, _ = mesh_inputs(frames.vertices_head, frames.T_cam_from_head, p.code, self.cfg)
        given = first_frame is not None
        return Conditions(
            coords=coords[None],
            mesh_alpha=alpha[None],
            portrait=p.reference[None],
            first_frame=(first_frame if given else torch.zeros(3, R, R))[None],
            first_frame_flag=torch.tensor([1.0 if given else 0.0]),
            background=image_to_model(p.background)[None],
            identity=p.identity(frames, self.cfg.identity_unmix)[None] if self.cfg.identity_warp else None,
            valid=torch.from_numpy(p.valid).float()[None, None],
        ).to(self.device)

    def mpi_frames(self, pred: MPIPrediction, clip: DrivingClip, identity: Tensor | None = None) -> list[MPIFrame]:
        """The MPIFrames a clip delivers (batch element 0 of its prediction); identity (1, T, 5, R, R),
        the clip's identity condition: outside the portrait's photo the colours are that condition
        over the background, the alpha cut to its matte, and inside it to a few pixels around its
        person (clips.keep_condition_outside)."""
        p = self._require_portrait()
        frontal, residual, alpha = p.keep_condition_outside(pred.frontal[0], pred.residual[0], pred.alpha[0],
                                                            None if identity is None else identity[0])
        frontal, residual, alpha = model_to_uint8(frontal), model_to_uint8(residual), alpha_to_uint8(alpha)
        return clip_frames(frontal, residual, alpha, np.ascontiguousarray(p.background.transpose(2, 0, 1)), p.K, clip)

    def generate_clips(self, driving: DrivingSource, seed: int = 0, steps: int | None = None, max_frames: int | None = None,
                       first_frame: str = "portrait", eta: float | None = None,
                       progress: Callable[[GenerationStatus], None] | None = None) -> Iterator[list[MPIFrame]]:
        """Yield the new MPI frames of each clip until the driving source ends (or `max_frames`).

        Clip 0 yields cfg.frames frames, every later clip cfg.frames - 1 (its first frame repeats
        the previous clip's last one and is dropped); a last, short clip is padded by repeating its
        final driving frame and trimmed. `first_frame`: "portrait" (the portrait is clip 0's
        first-frame condition) or "none". Same seed, inputs and steps -> identical frames."""
        if first_frame not in ("portrait", "none"):
            raise ValueError(f"first_frame must be 'portrait' or 'none', got {first_frame!r}")
        p = self._require_portrait()
        cfg = self.cfg
        F = cfg.frames
        steps = steps or cfg.diffusion.sample_steps
        scheduler = DDIMScheduler(self.schedule, cfg.diffusion.eta if eta is None else eta)
        scheduler.set_timesteps(steps)
        guidance = Guidance.paper(F, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance)
        generator = torch.Generator().manual_seed(int(seed))
        total = total_frames(driving, max_frames)
        clips: dict[int, DrivingClip] = {}  # the clips being sampled (dropped once yielded: a live session runs for hours)
        identities: dict[int, Tensor | None] = {}  # their identity conditions, likewise
        times = self.times = GenerationTimes()

        def conditions() -> Iterator[Conditions]:
            """Each clip's conditions, read from the driving source only when the sampler asks."""
            source = driving_clips(driving, F, max_frames)
            while True:
                started = time.perf_counter()
                clip = next(source, None)
                if clip is None:
                    return
                clips[clip.index] = clip
                # clip 0's first frame: the portrait (or none); later ones: set by sample_chained
                first = image_to_model(p.image) if clip.index == 0 and first_frame == "portrait" else None
                cond = self.clip_conditions(clip.frames, first)
                identities[clip.index] = cond.identity
                times.conditions += time.perf_counter() - started
                yield cond

        def on_step(k: int, step: int) -> None:
            if progress is not None:
                progress(GenerationStatus(k, step, steps, clips[k].done, total))

        def count_pass(*_) -> None:
            times.passes += 1

        hook = self.model.register_forward_hook(count_pass)
        try:
            samples = sample_chained(self.model, conditions(), scheduler, guidance, generator, on_step=on_step)
            for k in itertools.count():
                started, before = time.perf_counter(), times.conditions
                sample = next(samples, None)
                if sample is None:
                    return
                times.network += time.perf_counter() - started - (times.conditions - before)  # conditions are read lazily inside
                started = time.perf_counter()
                out = self.mpi_frames(sample.mpi, clips.pop(k), identities.pop(k))
                times.decode += time.perf_counter() - started
                times.frames += len(out)
                yield out
        finally:
            hook.remove()
