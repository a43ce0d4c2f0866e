"""Sampling MPI videos (sec. 3.4, supp. A): DDIM, two-scale classifier-free guidance, and long
videos chained clip by clip through the first-frame condition.

Guidance (InstructPix2Pix, Brooks et al. 2023, eq. 3) with the portrait p as the outer and the
first frame f as the inner condition; the driving mesh is never dropped:

    eps = eps(0, 0) + s_p (eps(p, 0) - eps(0, 0)) + s_f (eps(p, f) - eps(p, 0))

with s_p = 1.5 and s_f a per-frame scale (1 at frame 0, linearly down to 0 at the clip's middle, 0
after). Our network predicts x0 (through the MPI), and eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
is affine in x0 with the same x_t for all branches, so the same combination of the branches' x0-hat
(weights 1 - s_p, s_p - s_f, s_f, summing to 1) is exactly the guided eps; we combine x0-hats,
clamp them to [-1, 1] and let the scheduler take x0. The MPI returned at the end is the same
combination of the branches' MPIs (frontal, residual, alpha), clamped to their ranges.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from model.diffusion.process import Conditions, NoiseSchedule, denoise, render_frontal
from model.net.unet import MPIPrediction, MPIUNet


def first_frame_guidance_scales(frames: int, start: float = 1.0) -> Tensor:
    """s_f per frame (frames,): `start` at frame 0 falling linearly to 0 at frame frames//2 - 1,
    0 from the middle on (32 frames: frames 0..15 go 1 -> 0, frames 16..31 are 0)."""
    half = frames // 2
    scales = torch.zeros(frames, dtype=torch.float64)
    if half == 1:
        scales[0] = start
    elif half > 1:
        scales[:half] = start * (1 - torch.arange(half, dtype=torch.float64) / (half - 1))
    return scales.float()


class DDIMScheduler:
    """DDIM (Song et al. 2021) driven by x0 estimates; diffusers-style `set_timesteps` / `step`."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0):
        self.schedule = schedule
        self.eta = eta
        self.timesteps = torch.zeros(0, dtype=torch.long)

    def set_timesteps(self, num_steps: int) -> None:
        """Evenly spaced timesteps, the first being the last training step ("trailing" spacing, so
        sampling starts from pure noise)."""
        n = self.schedule.num_timesteps
        if not 1 <= num_steps <= n:
            raise ValueError(f"num_steps must be in [1, {n}], got {num_steps}")
        ts = torch.round(torch.arange(n, 0, -n / num_steps, dtype=torch.float64)).long() - 1
        self.timesteps = ts

    def previous_timestep(self, t: int) -> int:
        i = int((self.timesteps == t).nonzero()[0, 0])
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def step(self, x0: Tensor, t: int, x_t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x_{t_prev} from x_t and the clean estimate x0 (same shape)."""
        t_prev = self.previous_timestep(t)
        ab_t, ab_prev = (float(self.schedule.abar(torch.tensor(v))) for v in (t, t_prev))
        eps = (x_t - ab_t ** 0.5 * x0) / (1 - ab_t) ** 0.5
        sigma = self.eta * ((1 - ab_prev) / (1 - ab_t)) ** 0.5 * (1 - ab_t / ab_prev) ** 0.5
        x_prev = ab_prev ** 0.5 * x0 + max(1 - ab_prev - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x_prev = x_prev + sigma * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
        return x_prev


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance scales: portrait (scalar) and first frame (per frame, (T,))."""

    portrait: float
    first_frame: Tensor

    @staticmethod
    def paper(frames: int, portrait: float = 1.5, first_frame: float = 1.0) -> "Guidance":
        return Guidance(portrait, first_frame_guidance_scales(frames, first_frame))

    @staticmethod
    def none(frames: int) -> "Guidance":
        """Both scales 0: the unconditional branch (no portrait, no first frame) alone."""
        return Guidance(0.0, torch.zeros(frames))

    def inputs(self, cond: Conditions) -> Tensor:
        """(B, T, 2) float32: the scales as a guidance-distilled student takes them, per clip and
        frame (s_p, s_f), s_f being 0 for clips without a first frame, where guided sampling's
        first-frame branch equals its portrait branch."""
        B, T = cond.coords.shape[:2]
        s_f = self.first_frame.to(cond.coords.device, torch.float32)[None] * cond.first_frame_flag.to(torch.float32).view(B, 1)
        return torch.stack([torch.full_like(s_f, float(self.portrait)), s_f], -1)


def guided_prediction(model: MPIUNet, x_t: Tensor, t: Tensor, cond: Conditions, guidance: Guidance) -> tuple[MPIPrediction, Tensor]:
    """(S, x0_hat) combined over the guidance branches (see the module docstring). Branches whose
    weight is zero on every frame are not evaluated; without a first frame eps(p, f) = eps(p, 0).
    A guidance-distilled student (cfg.guidance_input) takes the scales as inputs and stands for
    the combination in one pass."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None and cfg.guidance_input:
        pred, x0 = denoise(model, x_t, t, cond, guidance.inputs(cond))
        return MPIPrediction(pred.frontal.clamp(-1, 1), pred.residual.clamp(-1, 1), pred.alpha.clamp(0, 1)), x0.clamp(-1, 1)
    s_p = float(guidance.portrait)
    s_f = guidance.first_frame.to(x_t)
    if not bool(cond.first_frame_flag.any()):
        s_f = torch.zeros_like(s_f)
    weights = {"none": torch.full_like(s_f, 1 - s_p), "portrait": s_p - s_f, "both": s_f}
    make = {"none": lambda: cond.without_portrait().without_first_frame(),
            "portrait": cond.without_first_frame, "both": lambda: cond}
    sums: list[Tensor] = []  # frontal, residual, alpha, x0, accumulated in place (1 GB each at paper size)
    for name, w in weights.items():
        if not bool((w != 0).any()):
            continue
        wv = w.view(1, -1, 1, 1, 1)
        pred, x0 = denoise(model, x_t, t, make[name]())
        outputs = [*pred, x0]
        del pred, x0
        if not sums:
            sums = [o * wv for o in outputs]
        else:
            for acc, o in zip(sums, outputs):
                acc.addcmul_(o, wv)
        del outputs
    frontal, residual, alpha, x0_sum = sums
    pred = MPIPrediction(frontal.clamp(-1, 1), residual.clamp(-1, 1), alpha.clamp(0, 1))
    return pred, x0_sum.clamp(-1, 1)


class Sample(NamedTuple):
    """A generated clip: the MPI video and its frontal rendering over the background (B, T, 3, H, W)."""

    mpi: MPIPrediction
    video: Tensor


StepCallback = Callable[[int, int], None]  # (clip index, denoising steps done in that clip)


def sample_clip(model: MPIUNet, cond: Conditions, scheduler: DDIMScheduler, guidance: Guidance,
                generator: torch.Generator | None = None, progress: bool = False,
                on_step: Callable[[int], None] | None = None) -> Sample:
    """Run the reverse process for one clip from pure noise (drawn from `generator` on the CPU, so
    a seed gives the same clip on any device). `on_step(i)` is called after each of the i steps:
    the one sampling loop, shared by generation (model/diffusion/pipeline.py), the viewer's worker
    and `imp eval`."""
    B, T = cond.coords.shape[:2]
    res = cond.coords.shape[-1]
    x = torch.randn((B, T, 3, res, res), generator=generator).to(cond.coords.device)
    pred = None
    with torch.no_grad():
        for i, t in enumerate(tqdm(scheduler.timesteps.tolist(), desc="denoising", disable=not progress, leave=False)):
            pred, x0 = guided_prediction(model, x, torch.full((B,), t, dtype=torch.long, device=x.device), cond, guidance)
            x = scheduler.step(x0, t, x, generator)
            if on_step is not None:
                on_step(i + 1)
    return Sample(pred, render_frontal(pred, cond.background))


def sample_chained(model: MPIUNet, clips: Iterable[Conditions], scheduler: DDIMScheduler, guidance: Guidance,
                   generator: torch.Generator | None = None, progress: bool = False,
                   on_step: StepCallback | None = None) -> Iterator[Sample]:
    """Sample clips one after another, each conditioned on the last generated frame of the one
    before (its first-frame condition); the first clip keeps its own first frame (if flagged).
    `clips` may be lazy (a live driving source): clip k+1's conditions are read after clip k is
    sampled. Yields every clip as soon as it is done, first frame included."""
    last: Tensor | None = None
    for k, cond in enumerate(clips):
        if last is not None:
            cond = cond.with_first_frame(last)
        step = None if on_step is None else (lambda i, k=k: on_step(k, i))
        sample = sample_clip(model, cond, scheduler, guidance, generator, progress, step)
        yield sample
        last = sample.video[:, -1]


def clip_starts(total_frames: int, clip_frames: int) -> list[int]:
    """Start frames of the clips covering `total_frames`: consecutive clips share one frame
    (the last of clip k is the first of clip k+1), so they start every clip_frames - 1 frames."""
    if clip_frames < 2:
        raise ValueError("chained clips need at least 2 frames each")
    starts = [0]
    while starts[-1] + clip_frames < total_frames:
        starts.append(starts[-1] + clip_frames - 1)
    return starts


def chain_clips(clips: list[Sample]) -> Sample:
    """Concatenate clips in time, dropping each later clip's first frame (it repeats the previous
    clip's last frame): N1 + N2 - 1 + ... frames."""
    parts = [clips[0]] + [Sample(MPIPrediction(*(p[:, 1:] for p in c.mpi)), c.video[:, 1:]) for c in clips[1:]]
    mpi = MPIPrediction(*(torch.cat([c.mpi[i] for c in parts], 1) for i in range(3)))
    return Sample(mpi, torch.cat([c.video for c in parts], 1))


def sample_video(model: MPIUNet, cond: Conditions, scheduler: DDIMScheduler, clip_frames: int,
                 guidance_for: Callable[[int], Guidance] = Guidance.paper, generator: torch.Generator | None = None,
                 progress: bool = False, on_step: StepCallback | None = None) -> Sample:
    """A video of cond.frames frames, clip by clip (`sample_chained`): the last generated frame of
    clip k is the first-frame condition of clip k+1. The first clip uses cond's own first frame (if
    flagged). The last clip is padded by repeating the final driving frame and trimmed afterwards."""
    total = cond.frames
    starts = clip_starts(total, clip_frames)
    parts = (cond.frame_range(s, s + clip_frames) for s in tqdm(starts, desc="clips", disable=not progress))
    clips = list(sample_chained(model, parts, scheduler, guidance_for(clip_frames), generator, progress, on_step))
    out = chain_clips(clips)
    return Sample(MPIPrediction(*(p[:, :total] for p in out.mpi)), out.video[:, :total])
