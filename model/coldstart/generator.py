"""Generation without torch: the viewer's worker with a one-step guidance-distilled student
(the shipped demo model) exported to ONNX Runtime.

imp-viewer's first frame waited for torch's import (2 s of 3 on this 2-core CPU). This generator
needs NumPy, OpenCV and onnxruntime only: the clip conditions come from the NumPy twins of the
rasteriser and the identity warp (model/coldstart/conditions.py, tested equal to the torch code
that makes the training pairs), the network with its decode from the ONNX file that
`imp export-onnx` (model/coldstart/onnx_export.py) wrote into the cache, and clips are cut and
chained by model/diffusion/clips.py, the same as `model.diffusion.pipeline.Generator` does.

What differs from the torch generator: the noise comes from NumPy's generator, so a seed gives
other (equally valid) clips than `imp generate`; and it serves only one-step students on the
CPU. Everything else (a teacher with many steps, a GPU, a model without its ONNX file) goes to
the torch generator (`onnx_generator` says which).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from model.coldstart import conditions
from model.coldstart.onnx_network import OnnxModelError, OnnxNetwork, onnx_path
from model.data.driving import DrivingFrames, DrivingSource
from model.data.matting import unmix_foreground
from model.data.portrait_crop import PortraitCrop, crop_portrait
from model.diffusion.clips import (GenerationStatus, GenerationTimes, clip_frames, driving_clips, keep_condition_outside,
                                   to_uint8, total_frames)
from model.formats.clip import MPIFrame
from model.net.config import ModelConfig


def image_to_model(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [-1, 1] (as model.diffusion.pipeline.image_to_model)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def first_frame_scales(frames: int, start: float) -> np.ndarray:
    """s_f per frame (frames,) float32, as model.diffusion.sampler.first_frame_guidance_scales."""
    half = frames // 2
    scales = np.zeros(frames, np.float64)
    if half == 1:
        scales[0] = start
    elif half > 1:
        scales[:half] = start * (1 - np.arange(half, dtype=np.float64) / (half - 1))
    return scales.astype(np.float32)


@dataclass(frozen=True)
class ColdPortrait:
    """A portrait prepared for the ONNX generator: its crop, the canonical code of its template
    (V, 3), its reference input (3 + Cc, R, R) float32 (portrait in [-1, 1] + coordinate map) and,
    for identity_warp configs, its part of the identity condition."""

    crop: PortraitCrop
    code: np.ndarray
    reference: np.ndarray
    side: conditions.PortraitSide | None
    background: np.ndarray  # (3, R, R) float32 in [-1, 1]: the crop's inpainted background, as every clip takes it
    valid: np.ndarray  # (1, R, R) float32: how much the MPI may show there (PortraitCrop.valid)

    @property
    def track(self):
        """The portrait's Track (what driving sources retarget onto)."""
        return self.crop.track


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, asked without torch (its driver's /proc entries): "auto"
    then belongs to the torch generator, which can use it."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


class OnnxGenerator:
    """Samples MPI videos of one portrait with a one-step student in ONNX Runtime (see the module
    docstring); the interface of model.diffusion.pipeline.Generator that the viewer's workers use:
    `cfg`, `times`, `prepare`, `generate_clips`."""

    device = "cpu (ONNX Runtime)"

    def __init__(self, network: OnnxNetwork, cfg: ModelConfig):
        self.network = network
        self.cfg = cfg
        self.portrait: ColdPortrait | None = None
        self.times = GenerationTimes()

    def prepare(self, portrait_image: str | Path | np.ndarray, cache_dir: Path | None = None) -> ColdPortrait:
        """Track, crop, matte and inpaint the portrait (model.data.portrait_crop) and rasterise its
        own mesh into its reference coordinate map."""
        crop = crop_portrait(portrait_image, self.cfg.res, cache_dir)
        code = conditions.canonical_code(crop.track.template)
        coords, _, _ = conditions.mesh_inputs(crop.track.vertices_head(0)[None], crop.track.T_cam_from_head[:1], code, self.cfg)
        image = image_to_model(crop.image)
        carried = image_to_model(unmix_foreground(crop.image, crop.matte, crop.background)) if self.cfg.identity_unmix else image
        side = conditions.portrait_side(carried, crop.matte[None], crop.track.vertices_head(0), crop.T_cam_from_head,
                                        crop.K) if self.cfg.identity_warp else None
        self.portrait = ColdPortrait(crop, code, np.concatenate([image, coords[0]], 0), side,
                                     image_to_model(crop.background), crop.valid.astype(np.float32)[None])
        return self.portrait

    def clip_inputs(self, frames: DrivingFrames, first_frame: np.ndarray | None) -> dict[str, np.ndarray]:
        """The network's inputs for one clip of exactly cfg.frames driving frames (batch 1; the
        noise x_t is added by the caller); first_frame (3, R, R) in [-1, 1] or None (dropped)."""
        p = self.portrait
        if p is None:
            raise RuntimeError("OnnxGenerator.prepare(portrait_image) must run before generating")
        cfg, R = self.cfg, self.cfg.res
        coords, alpha, _, identity = conditions.clip_conditions(frames.vertices_head, frames.T_cam_from_head, p.code, cfg, p.side,
                                                                torso_shift=frames.torso_shift, hair_poses=frames.T_hair)
        given = first_frame is not None
        inputs = {
            "coords": coords[None], "mesh_alpha": alpha[None], "portrait": p.reference[None],
            "first_frame": (first_frame if given else np.zeros((3, R, R), np.float32))[None],
            "first_frame_flag": np.array([1.0 if given else 0.0], np.float32),
            "background": p.background[None], "valid": p.valid[None],
        }
        if identity is not None:
            inputs["identity"] = identity[None]
        s_f = first_frame_scales(cfg.frames, cfg.diffusion.first_frame_guidance) * np.float32(1.0 if given else 0.0)
        inputs["guidance"] = np.stack([np.full_like(s_f, cfg.diffusion.portrait_guidance), s_f], -1)[None]
        return inputs

    def generate_clips(self, driving: DrivingSource, seed: int = 0, steps: int | None = None, max_frames: int | None = None,
                       progress: Callable[[GenerationStatus], None] | None = None) -> Iterator[list[MPIFrame]]:
        """Yield the new MPI frames of each clip until the driving source ends (or `max_frames`),
        chained and padded as model.diffusion.pipeline.Generator.generate_clips does (clip 0's
        first-frame condition is the portrait). Same seed and inputs -> identical frames."""
        if steps not in (None, 1):
            raise ValueError(f"the ONNX generator samples in one step, not {steps}")
        p = self.portrait
        if p is None:
            raise RuntimeError("OnnxGenerator.prepare(portrait_image) must run before generating")
        cfg = self.cfg
        rng = np.random.default_rng(int(seed))
        t = np.array([cfg.diffusion.train_timesteps - 1], np.int64)  # one DDIM step: from pure noise
        background = np.ascontiguousarray(p.crop.background.transpose(2, 0, 1))
        total = total_frames(driving, max_frames)
        times = self.times = GenerationTimes()
        first = p.reference[:3]  # the portrait itself
        source = driving_clips(driving, cfg.frames, max_frames)
        while True:
            started = time.perf_counter()
            clip = next(source, None)
            if clip is None:
                return
            inputs = self.clip_inputs(clip.frames, first)
            times.conditions += time.perf_counter() - started
            started = time.perf_counter()
            x_t = rng.standard_normal((1, cfg.frames, 3, cfg.res, cfg.res), dtype=np.float32)
            out = self.network(x_t=x_t, t=t, **inputs)
            times.network += time.perf_counter() - started
            times.passes += 1
            if progress is not None:
                progress(GenerationStatus(clip.index, 1, 1, clip.done, total))
            started = time.perf_counter()
            frontal, residual, alpha = out["frontal"][0], out["residual"][0], out["alpha"][0]
            if "identity" in inputs:  # as model.diffusion.pipeline.Generator.mpi_frames
                frontal, residual, alpha = keep_condition_outside(frontal, residual, alpha, inputs["identity"][0], p.background,
                                                                  p.crop.photo)
            frames = clip_frames(to_uint8(frontal, -1.0), to_uint8(residual, -1.0), to_uint8(alpha, 0.0),
                                 background, p.crop.K, clip)
            first = out["video"][0, -1]  # the next clip's first-frame condition (model.diffusion.sampler.sample_chained)
            times.decode += time.perf_counter() - started
            times.frames += len(frames)
            yield frames


class OnnxChoice(NamedTuple):
    """`onnx_generator`'s answer: the generator, or None and why not; `missing` says the job suits
    the ONNX generator but something it needs is not there (worth telling the user: the first frame
    then waits for torch's import), as opposed to a job it does not serve (a GPU, a teacher)."""

    generator: OnnxGenerator | None
    why: str = ""
    missing: bool = False


def onnx_generator(checkpoint: Path, device: str, steps: int | None, cache_dir: Path | None,
                   threads: int | None = None) -> OnnxChoice:
    """The ONNX generator for a generation worker when it can serve the job: a one-step
    guidance-distilled student (`steps` None or 1), on the CPU (--device cpu, or auto without a
    GPU), the checkpoint's ONNX file in the cache (`imp export-onnx`) and onnxruntime installed.
    Checked in this order, cheapest first; nothing here imports torch."""
    from model.net.checkpoint import read_config

    if device not in ("auto", "cpu") or (device == "auto" and gpu_present()):
        return OnnxChoice(None, f"--device {device}: the torch generator runs on the GPU")
    cfg = read_config(checkpoint)
    if not cfg.guidance_input or (steps or cfg.diffusion.sample_steps) != 1:
        return OnnxChoice(None, "not a one-step guidance-distilled student")
    if cache_dir is None:
        return OnnxChoice(None, "no cache folder for the ONNX file")
    path = onnx_path(checkpoint, cache_dir)
    if not path.is_file():
        return OnnxChoice(None, f"no ONNX file of {checkpoint.name} in {path.parent} (make it with `imp export-onnx "
                                f"--checkpoint {checkpoint}`)", missing=True)
    try:
        import onnxruntime  # noqa: F401 - optional at run time: without it the torch generator serves
    except ImportError:
        return OnnxChoice(None, "onnxruntime is not installed (pip install onnxruntime)", missing=True)
    try:
        network = OnnxNetwork(path, threads=threads or 1)
    except OnnxModelError as exc:  # a torn or foreign file: the torch generator serves, nothing is lost
        return OnnxChoice(None, str(exc), missing=True)
    return OnnxChoice(OnnxGenerator(network, cfg))
