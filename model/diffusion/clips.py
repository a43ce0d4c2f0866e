"""What every generation backend shares around the network, without torch: how a driving source is
cut into chained clips, how a clip's uint8 arrays become MPIFrames, and the progress and timing
records the viewer shows.

Two backends generate clips: `model.diffusion.pipeline.Generator` (torch, any config and device)
and `model.coldstart.generator.OnnxGenerator` (ONNX Runtime, a one-step student on the CPU, which
never imports torch). Both cut clips with `driving_clips` and decode with `clip_frames`, so that
they chain, pad and count frames alike.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from model.data.driving import DrivingFrames, DrivingSource
from model.formats.clip import MPIFrame
from model.geometry.mpi_planes import near_far


@dataclass
class GenerationTimes:
    """Where a backend's `generate_clips` spent its time, in seconds, summed since the call began."""

    conditions: float = 0.0  # driving frames, mesh conditions and the identity warp of each clip
    network: float = 0.0  # the denoiser's passes with the DDIM updates
    decode: float = 0.0  # samples turned into uint8 MPIFrames
    passes: int = 0  # network evaluations
    frames: int = 0  # MPI frames yielded

    def per_frame_ms(self) -> dict[str, float]:
        """conditions / network / decode ms and network passes per yielded frame (zeros before the first)."""
        n = max(self.frames, 1)
        return {"conditions_ms": round(1000 * self.conditions / n, 2), "network_ms": round(1000 * self.network / n, 2),
                "decode_ms": round(1000 * self.decode / n, 2), "passes": round(self.passes / n, 2)}


@dataclass(frozen=True)
class GenerationStatus:
    """Progress report: denoising step `step` of `steps` in clip `clip` (0-based) is done;
    `frames_done` frames have been delivered before this clip; `frames_total` is known or None."""

    clip: int
    step: int
    steps: int
    frames_done: int
    frames_total: int | None


@dataclass(frozen=True)
class DrivingClip:
    """The driving frames of clip `index`: `frames` exactly F (a short last clip padded by repeating
    its final frame), of which the first `valid` are real; `done` frames were delivered before it.
    Clip 0 starts at the source's first frame; every later clip starts with the previous clip's last
    driving frame (its generated frame is the first-frame condition and is not delivered again)."""

    index: int
    frames: DrivingFrames
    valid: int
    done: int

    @property
    def new(self) -> range:
        """Indices of the frames this clip delivers."""
        return range(0 if self.index == 0 else 1, self.valid)


def total_frames(driving: DrivingSource, max_frames: int | None) -> int | None:
    """How many frames a generation will deliver, when known."""
    remaining = driving.remaining()
    return remaining if max_frames is None else (max_frames if remaining is None else min(max_frames, remaining))


def driving_clips(driving: DrivingSource, frames_per_clip: int, max_frames: int | None = None) -> Iterator[DrivingClip]:
    """Cut a driving source into chained clips of `frames_per_clip` frames until it ends (or
    `max_frames` are delivered). The source is read lazily, one clip at a time, so a live source
    (sliders, a webcam) is asked for a clip's frames only when the clip before it is done."""
    F = frames_per_clip
    done = 0
    last: DrivingFrames | None = None
    for index in range(1 << 62):
        want = F if last is None else F - 1
        if max_frames is not None:
            want = min(want, max_frames - done)
        new = driving.frames(want) if want > 0 else None
        if new is None or len(new) == 0:
            return
        frames = new if last is None else DrivingFrames.concat([last, new])
        valid = len(frames)
        frames = frames.padded(F)
        yield DrivingClip(index, frames, valid, done)
        if len(new) < want:  # the source ended inside this clip
            return
        done += valid - (0 if last is None else 1)
        last = frames[valid - 1:valid]


def clip_frames(frontal: np.ndarray, residual: np.ndarray, alpha: np.ndarray, background: np.ndarray, K: np.ndarray,
                clip: DrivingClip) -> list[MPIFrame]:
    """The MPIFrames a clip delivers (`clip.new`): frontal, residual (T, 3, R, R) and alpha (T, D, R, R)
    uint8 of the whole clip, background (3, R, R) uint8, K (3, 3) the MPI camera; each frame's pose
    is its driving frame's and its near / far planes follow from the head distance."""
    out = []
    for i in clip.new:
        T = clip.frames.T_cam_from_head[i]
        near, far = near_far(float(np.linalg.norm(T[:3, 3].astype(np.float64))))
        out.append(MPIFrame(frontal=frontal[i], residual=residual[i], alpha=alpha[i], K=K.copy(), T_cam_from_head=T.copy(),
                            near=float(near), far=float(far), background=background))
    return out


PERSON_REACH = 3  # px of a 128 px crop: how far past the moved condition's person a clip's MPI may be opaque


def keep_condition_outside(frontal: np.ndarray, residual: np.ndarray, alpha: np.ndarray, identity: np.ndarray,
                           background: np.ndarray, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clip's colours with the identity condition over the background where the portrait's photo
    ends: there the condition is the person continued past the photo's edges
    (model.data.matting.continue_person), and the network, never trained outside a frame, opened its
    full-resolution gates and painted specks on it (red scribbles on a continued shoulder); this is
    its output with those gates shut (model.net.unet.DetailHead), copied so that the MPI shows the
    composite exactly whatever its alpha (DetailHead.through_alpha). There the MPI's alpha is also cut
    to the condition's matte: the person as it moves in that frame (a body risen with the driver's
    torso), where the portrait's `valid` allows every place it may move to. Inside the photo the
    alpha is cut to PERSON_REACH pixels around that person: the network painted scribbles into the
    background beside the hair there (a magenta one beside menglu2's earring under d20's driving),
    and self-reenactment scores the same without them (tuning videos: 23.98-23.99 dB with the cut at
    3 or 8 px, 23.99 without). frontal, residual (T, 3, R, R) in [-1, 1]; alpha (T, D, R, R);
    identity (T, 5, R, R) (model.geometry.portrait_warp; composited as its warp_composite);
    background (3, R, R) in [-1, 1]; photo (R, R) bool. Returns (frontal, residual, alpha)."""
    import cv2  # imported already by the portrait's crop (model.data.matting.continue_person)

    keep = np.asarray(photo, bool)[None, None]
    reach = max(1, round(PERSON_REACH * alpha.shape[-1] / 128))
    square = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    near = np.stack([cv2.dilate(np.ascontiguousarray(a, np.float32), square, borderType=cv2.BORDER_REPLICATE) for a in identity[:, 3]])
    cut = np.where(keep, near[:, None], identity[:, 3:4])  # (T, 1, R, R): one product with the planes
    alpha = (alpha * cut).astype(alpha.dtype, copy=False)
    if keep.all():  # the photo covers the crop (most portraits): nothing is copied, every clip
        return frontal, residual, alpha
    # the composite copied so that the cut MPI shows it exactly (as DetailHead.through_alpha does
    # inside the photo): copied as it is, the MPI's mask, cut to the condition's alpha, composited it
    # over the background twice and the continued person's soft edges faded to the background
    mask = 1.0 - np.prod(1.0 - alpha, axis=1, keepdims=True)
    composite = identity[:, :3] + (1.0 - identity[:, 3:4]) * background[None]
    copy = np.clip(background[None] + (composite - background[None]) / np.maximum(np.maximum(mask, identity[:, 3:4]), 1e-3), -1.0, 1.0)
    return (np.where(keep, frontal, copy).astype(frontal.dtype, copy=False),
            np.where(keep, residual, copy).astype(residual.dtype, copy=False), alpha)


def to_uint8(x: np.ndarray, low: float) -> np.ndarray:
    """Colours (low = -1, range [-1, 1]) or alphas (low = 0, range [0, 1]) as uint8 0..255, rounded
    half to even like torch.round."""
    scale = 127.5 if low < 0 else 255.0
    return np.rint((np.clip(x.astype(np.float32), low, 1.0) - low) * np.float32(scale)).astype(np.uint8)
