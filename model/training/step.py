"""One training iteration of sec. 3.3 / supp. A: stages, the two losses, late-stage noise, pseudo
ground truth and the ablation switches. The loop around it (checkpoints, resume, DDP, logs) is
model/training/loop.py; the data is model/data/pairs.py.

Stages (supp. A):
- "bootstrap": only the colour branch (time embedding, colour stem, portrait encoder, colour U-Net,
  colour head) trains, with L_mpi (MPIs in the target camera). The geometry branch is not trained
  yet, so the MPI is rendered with the mesh alpha planes + an opaque back plane (model/net/variant.py
  says why).
- "alternating": the colour branch is frozen except its output layer (`colour_head`); the
  geometry branch (stem, U-Net incl. its zero convs `geometry.inject`, head) and `colour_head`
  train. Each iteration picks L_side with probability p_side (0.2) and L_mpi otherwise.
- "distill" (beyond the paper): a student with the guidance scales as inputs learns a trained
  teacher's guided prediction in one pass; every parameter trains (model/training/distill.py).

L_side: the MPI camera is the reference camera with the target expressions rasterised there; the
pseudo ground truth is the frontal rendering of a k-step DDIM sample of the current model (no
gradient, no first frame, portrait guidance 1); it is noised with t ~ U[T/2, T) (late-stage noise;
U[0, T) with the ablation switch) and the network's MPI, rendered in the target cameras, is
compared with the real target frames.

Ablations (paper table 1): residual=False (single-image MPI), late_stage_noise=False, and no L_side
(bootstrap only, or alternating with p_side = 0).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.geometry import mpi
from model.diffusion.process import Conditions, NoiseSchedule, drop_conditions, q_sample
from model.training.losses import LossWeights, mpi_losses
from model.data.pairs import TrainBatch
from model.diffusion.sampler import DDIMScheduler, Guidance, sample_clip
from model.net.precision import Autocast
from model.net.unet import MPIPrediction, MPIUNet
from model.net.variant import Variant

STAGES = ("bootstrap", "alternating", "distill")
COLOUR_PARTS = ("time_embed", "colour_stem", "portrait_encoder", "colour", "colour_head")
GEOMETRY_PARTS = ("geometry_stem", "geometry", "geometry_head", "colour_head")  # + the colour output layer


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides what a training run computes (saved in every checkpoint)."""

    stage: str = "bootstrap"
    steps: int = 1000  # total iterations of this stage
    batch: int = 1  # clips per process and iteration
    lr: float = 1e-4
    p_side: float = 0.2  # probability of L_side per iteration (alternating stage)
    k_steps: int = 4  # DDIM steps for the pseudo ground truth
    late_stage_noise: bool = True  # L_side: t from [T/2, T) (False: [0, T))
    residual: bool = True  # False: residual image := frontal (ablation)
    lpips: str | None = None  # path of LPIPS-alex weights; None: no LPIPS term
    grad_clip: float = 1.0
    seed: int = 0
    amp: bool = False  # bf16 autocast of every network call: training forward and pseudo ground truth (`imp train --amp`: CUDA only)
    videos: tuple[str, ...] | None = None  # train on these dataset video ids only
    exclude: tuple[str, ...] = ()  # ... or on all but these (held out for `imp eval`)
    teacher: str | None = None  # stage "distill": the teacher's checkpoint
    loss_weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if not 0.0 <= self.p_side <= 1.0:
            raise ValueError(f"p_side must be in [0, 1], got {self.p_side}")
        if self.k_steps < 1 or self.batch < 1 or self.steps < 0:
            raise ValueError("k_steps and batch must be >= 1 and steps >= 0")
        if (self.stage == "distill") != (self.teacher is not None):
            raise ValueError("stage 'distill' and only it takes a teacher checkpoint (--teacher CKPT)")

    @property
    def variant(self) -> Variant:
        return Variant(alpha_source="mesh" if self.stage == "bootstrap" else "network", residual=self.residual)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["videos"] = list(self.videos) if self.videos is not None else None
        d["exclude"] = list(self.exclude)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainOptions":
        d = dict(d)
        d["loss_weights"] = LossWeights(**d.get("loss_weights", {}))
        d["videos"] = tuple(d["videos"]) if d.get("videos") is not None else None
        d["exclude"] = tuple(d.get("exclude", ()))
        return TrainOptions(**d)


def set_stage(net: MPIUNet, stage: str) -> list[tuple[str, nn.Parameter]]:
    """Set requires_grad for the stage's parts and return the trainable (name, parameter)s in a
    fixed order (the optimizer's order, which checkpoints rely on)."""
    for p in net.parameters():
        p.requires_grad_(stage == "distill")  # a student learns with every parameter
    parts = {"bootstrap": COLOUR_PARTS, "alternating": GEOMETRY_PARTS}.get(stage, ())
    for name in parts:
        for p in getattr(net, name).parameters():
            p.requires_grad_(True)
    return [(n, p) for n, p in net.named_parameters() if p.requires_grad]


def step_seed(seed: int, step: int, rank: int, purpose: int) -> int:
    """A 63-bit seed for one step's random draws (pure function of its arguments)."""
    return int(np.random.SeedSequence([seed, step, rank, purpose]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def chooses_side(opts: TrainOptions, step: int) -> bool:
    """Whether iteration `step` uses L_side; the same on every rank (no rank in the seed)."""
    if opts.stage != "alternating" or opts.p_side <= 0.0:
        return False
    return bool(np.random.default_rng([opts.seed, step, 0x51DE]).random() < opts.p_side)


def sample_timesteps(generator: torch.Generator, batch: int, num_timesteps: int, late: bool) -> Tensor:
    """t (batch,): uniform on [T/2, T) when `late` (late-stage noise), else on [0, T)."""
    low = num_timesteps // 2 if late else 0
    return torch.randint(low, num_timesteps, (batch,), generator=generator)


def pseudo_ground_truth(model: nn.Module, cond: Conditions, schedule: NoiseSchedule, k_steps: int,
                        generator: torch.Generator) -> Tensor:
    """The frontal rendering (B, T, 3, H, W) of a k-step DDIM sample of `model` for `cond` (no
    first frame; portrait guidance 1 = the conditional branch alone); no gradient."""
    ddim = DDIMScheduler(schedule)
    ddim.set_timesteps(k_steps)
    T = cond.frames
    sample = sample_clip(model, cond.without_first_frame(), ddim, Guidance(1.0, torch.zeros(T)), generator)
    return sample.video.detach()


RECOMPUTE_RENDER_FRAMES = 2  # frames per renderer call with `recompute`: bounds its D warped planes (paper: ~0.6 GB / frame)


def render_in_targets(pred: MPIPrediction, batch: TrainBatch, recompute: bool = False) -> mpi.Rendering:
    """Every frame's MPI rendered in its target camera over the background; (B*T, ...) tensors.
    With `recompute` (activation checkpointing) the frames are rendered a few at a time and each
    call keeps only its inputs for the backward pass, where it runs again: the D warped planes of
    every frame at once are what would otherwise fill the memory at `paper`'s size. Every frame is
    rendered on its own either way, so the result is the same to the bit."""
    B, T = pred.frontal.shape[:2]
    bg = batch.background[:, None].expand(B, T, *batch.background.shape[1:]).flatten(0, 1)
    K = batch.K[:, None].expand(B, T, 3, 3).flatten(0, 1)
    args = (pred.frontal.flatten(0, 1), pred.residual.flatten(0, 1), pred.alpha.flatten(0, 1), batch.depths.flatten(0, 1), K, K,
            batch.T_tgt_from_mpi.flatten(0, 1), bg)
    if not (recompute and torch.is_grad_enabled()):
        return mpi.render(*args)
    n = RECOMPUTE_RENDER_FRAMES
    parts = [checkpoint(mpi.render, *(a[i:i + n] for a in args), use_reentrant=False) for i in range(0, B * T, n)]
    return mpi.Rendering(*(torch.cat(field) for field in zip(*parts)))


class StepOutput(NamedTuple):
    loss: Tensor
    terms: dict[str, float]
    pred: MPIPrediction  # detached, for the logs
    rendering: Tensor  # (B, T, 3, H, W) rgb in the target cameras, detached
    t: Tensor


def training_step(model: nn.Module, sampling_model: nn.Module, batch: TrainBatch, schedule: NoiseSchedule, opts: TrainOptions,
                  generator: torch.Generator, drop_first_frame: float, drop_portrait: float, lpips=None,
                  recompute: bool = False) -> StepOutput:
    """Loss of one iteration (L_mpi or L_side as batch.side says). `model` is what gets gradients
    (maybe a DDP wrapper), `sampling_model` the bare model used for the pseudo ground truth.
    `recompute` (with activation checkpointing): the rendering in the target cameras keeps only its
    inputs for the backward pass (render_in_targets)."""
    B, T = batch.target.shape[:2]
    device = batch.target.device
    cond = Conditions(coords=batch.coords, mesh_alpha=batch.mesh_alpha, portrait=batch.portrait,
                      first_frame=batch.target[:, 0], first_frame_flag=torch.ones(B, device=device),
                      background=batch.background, identity=batch.identity, valid=batch.valid)
    N = schedule.num_timesteps
    if opts.amp:  # the k sampling passes of L_side cost k forwards: they want bf16 as much as the training pass
        model, sampling_model = Autocast(model, device.type), Autocast(sampling_model, device.type)
    if batch.side:
        x0 = pseudo_ground_truth(sampling_model, cond, schedule, opts.k_steps, generator)
        cond = cond.with_first_frame(x0[:, 0])
        t = sample_timesteps(generator, B, N, opts.late_stage_noise)
    else:
        x0 = batch.target
        t = sample_timesteps(generator, B, N, late=False)
    cond = drop_conditions(cond, generator, drop_first_frame, drop_portrait)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = t.to(device)
    x_t = q_sample(x0, t, noise, schedule)
    pred, gate = model(x_t, t, cond.coords, cond.mesh_alpha, cond.portrait, cond.first_frame, cond.first_frame_flag,
                       cond.identity, cond.background, with_gate=True)
    pred = MPIPrediction(*(p.float() for p in pred)).inside(batch.valid)
    rendering = render_in_targets(pred, batch, recompute)
    weights = opts.loss_weights if opts.variant.alpha_source == "network" else opts.loss_weights.for_fixed_geometry()
    valid = batch.valid[:, None].expand(B, T, *batch.valid.shape[1:]).flatten(0, 1)
    loss, terms = mpi_losses(rendering, batch.target.flatten(0, 1), batch.matte.flatten(0, 1),
                             batch.mesh_disparity.flatten(0, 1), batch.mesh_coverage.flatten(0, 1), lpips, weights, valid)
    if batch.identity is not None and weights.gate > 0:
        # a gate opened to paint over the portrait's pixels costs a little: copying wins where it is nearly as good
        loss = loss + weights.gate * gate
        terms["gate"] = float(gate.detach())
    terms["total"] = float(loss.detach())
    shape = (B, T, *rendering.rgb.shape[1:])
    return StepOutput(loss, terms, MPIPrediction(*(p.detach() for p in pred)), rendering.rgb.detach().reshape(shape), t)
