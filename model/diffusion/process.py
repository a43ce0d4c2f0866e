"""The diffusion process of sec. 3.2 on the 2D video seen by the MPI camera (eq. 3).

The network predicts the MPI video S (eq. 4); its frontal rendering over the background,
x0_hat = R(S, phi_mpi) (eq. 5), is the clean-video estimate that drives the DDPM / DDIM updates
(model/diffusion/sampler.py) and the losses. Colours are in [-1, 1] everywhere: the network's frontal and
residual images (tanh), the background and the noisy video, so the composite is a convex
combination that stays in [-1, 1].

Shapes: videos (B, T, C, H, W); t (B,) integer timesteps in [0, train_timesteps).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from model.geometry import mpi
from model.net.config import DiffusionConfig
from model.net.unet import MPIPrediction, MPIUNet


@dataclass(frozen=True)
class NoiseSchedule:
    """betas (N,) and alphas_cumprod (N,) (abar_t) in float64 for exact arithmetic."""

    betas: Tensor
    alphas_cumprod: Tensor

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def abar(self, t: Tensor) -> Tensor:
        """abar_t (B,) as float32; t < 0 means 'before the first step' (abar = 1)."""
        t = torch.as_tensor(t, dtype=torch.long)
        out = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))
        return out.float()


def make_schedule(cfg: DiffusionConfig) -> NoiseSchedule:
    """The noise schedule named by cfg.schedule: "cosine" (Nichol & Dhariwal 2021, betas clipped
    at 0.999) or "scaled_linear" (linear in sqrt(beta), Stable Diffusion)."""
    n = cfg.train_timesteps
    if cfg.schedule == "cosine":
        s = 0.008
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    elif cfg.schedule == "scaled_linear":
        betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"unknown noise schedule {cfg.schedule!r}; use 'cosine' or 'scaled_linear'")
    return NoiseSchedule(betas, torch.cumprod(1 - betas, 0))


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like).view(-1, *([1] * (like.dim() - 1)))


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, x0 and noise (B, ...), t (B,)."""
    ab = _bcast(schedule.abar(t), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def eps_from_x0(x_t: Tensor, x0: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """The noise implied by a clean estimate: (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    ab = _bcast(schedule.abar(t), x_t)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


@dataclass(frozen=True)
class Conditions:
    """Everything g_theta is conditioned on, for a batch of clips.

    coords (B, T, Cc, H, W) and mesh_alpha (B, T, D, H, W): the driving mesh in the MPI camera;
    portrait (B, 3+Cc, H, W): O^ref and its coordinate map (all zeros when dropped);
    first_frame (B, 3, H, W) with first_frame_flag (B,) (1 = given, 0 = dropped);
    background (B, 3, H, W) or None: composited behind the MPI (eq. 5);
    identity (B, T, 5, H, W) or None: the portrait carried through the meshes into the MPI camera
    (model/geometry/portrait_warp.py; configs with identity_warp). It is the portrait's, so it is dropped
    with the portrait.
    valid (B, 1, H, W) or None, in [0, 1]: 1 where the MPI camera's crop shows the source image; 0
    where the MPI is made transparent (MPIPrediction.inside) and the background shows; between, the
    MPI's alpha is scaled (a portrait's person continued past its photo's edges, PortraitCrop.valid)."""

    coords: Tensor
    mesh_alpha: Tensor
    portrait: Tensor
    first_frame: Tensor
    first_frame_flag: Tensor
    background: Tensor | None = None
    identity: Tensor | None = None
    valid: Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.coords.shape[1])

    def without_portrait(self) -> "Conditions":
        return dataclasses.replace(self, portrait=torch.zeros_like(self.portrait),
                                   identity=None if self.identity is None else torch.zeros_like(self.identity))

    def without_first_frame(self) -> "Conditions":
        return dataclasses.replace(self, first_frame=torch.zeros_like(self.first_frame),
                                   first_frame_flag=torch.zeros_like(self.first_frame_flag))

    def with_first_frame(self, image: Tensor) -> "Conditions":
        return dataclasses.replace(self, first_frame=image, first_frame_flag=torch.ones_like(self.first_frame_flag))

    def to(self, device: str | torch.device) -> "Conditions":
        """The same conditions on `device`."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if getattr(self, f.name) is not None})

    def frame_range(self, start: int, stop: int) -> "Conditions":
        """Frames [start, stop) of the per-frame conditions; past the end the last frame repeats."""
        idx = torch.arange(start, stop).clamp(max=self.frames - 1)
        return dataclasses.replace(self, coords=self.coords[:, idx], mesh_alpha=self.mesh_alpha[:, idx],
                                   identity=None if self.identity is None else self.identity[:, idx])


def drop_conditions(cond: Conditions, generator: torch.Generator, p_first_frame: float, p_portrait: float) -> Conditions:
    """Training-time condition dropout (supp. A: first frame 0.7, portrait 0.1), independently per
    sample; dropped first frames become zeros with flag 0, dropped portraits become zeros (and so
    does the identity condition made from them)."""
    B = cond.portrait.shape[0]
    drop_f = torch.rand(B, generator=generator) < p_first_frame
    drop_p = torch.rand(B, generator=generator) < p_portrait
    keep_f = (~drop_f).to(cond.first_frame).to(cond.first_frame.device)
    keep_p = (~drop_p).to(cond.portrait).to(cond.portrait.device)
    return dataclasses.replace(
        cond,
        first_frame=cond.first_frame * keep_f.view(B, 1, 1, 1),
        first_frame_flag=cond.first_frame_flag * keep_f,
        portrait=cond.portrait * keep_p.view(B, 1, 1, 1),
        identity=None if cond.identity is None else cond.identity * keep_p.view(B, 1, 1, 1, 1),
    )


def render_frontal(pred: MPIPrediction, background: Tensor | None, chunk: int = 4) -> Tensor:
    """x0_hat = R(S, phi_mpi) (B, T, 3, H, W): each frame's MPI composited in its own camera over
    the background (B, 3, H, W) (or over nothing, i.e. black premultiplied, when None).

    Rendered `chunk` frames at a time: the renderer holds per-plane colours (D, 3, H, W) per frame,
    2.4 GB for a whole 32-frame 512^2 24-plane clip."""
    B, T = pred.frontal.shape[:2]
    frontal, residual, alpha = (p.flatten(0, 1) for p in pred)
    bg = None if background is None else background[:, None].expand(B, T, *background.shape[1:]).flatten(0, 1)
    parts = [mpi.render_in_mpi_camera(frontal[i:i + chunk], residual[i:i + chunk], alpha[i:i + chunk],
                                      None if bg is None else bg[i:i + chunk]) for i in range(0, B * T, chunk)]
    rgb = torch.cat(parts)
    return rgb.reshape(B, T, *rgb.shape[1:])


def denoise(model: MPIUNet, x_t: Tensor, t: Tensor, cond: Conditions, guidance: Tensor | None = None) -> tuple[MPIPrediction, Tensor]:
    """One network evaluation: (S, x0_hat = R(S) over the background). guidance (B, T, 2): the
    scales a guidance-distilled student takes as inputs (model.diffusion.sampler.Guidance.inputs)."""
    extra = {} if guidance is None else {"guidance": guidance}
    pred = model(x_t, t, cond.coords, cond.mesh_alpha, cond.portrait, cond.first_frame, cond.first_frame_flag, cond.identity,
                 cond.background, **extra).inside(cond.valid)
    return pred, render_frontal(pred, cond.background)
