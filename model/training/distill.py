"""Guidance distillation (`imp train --stage distill --teacher CKPT`, Meng et al. 2023, "On
distillation of guided diffusion models", stage 1): a student that takes the two guidance scales
as inputs and predicts in one network pass what the teacher's guided sampling combines from two
or three passes (model/diffusion/sampler.py: guided_prediction).

The student is the teacher's network with two more input channels per frame (the portrait scale
s_p and the frame's first-frame scale s_f as constant planes, `ModelConfig.guidance_input`); the
stems' weights for them start at zero, so before training the student is exactly the teacher's
fully conditioned branch. Adam moves a weight by about lr per step, so a small lr keeps them near
zero: the shipped student (lr 2e-6, 2 400 steps) ended at ~2e-4 against ~4e-2 for the other inputs
and answers the shipped scales only; distil with a larger lr when other scales matter.

Every step draws a training clip, a timestep, noise and guidance scales; the teacher's guided
prediction (no gradient) is the target of the student's one pass: L1 on the MPI (frontal,
residual, alpha) and on its frontal rendering.

Step reduction: our networks predict x0 through the MPI, and the shipped teacher already samples
with one DDIM step from t = T - 1 (its card measures 1 step against more), so 80 % of the draws use
that timestep and the rest cover [0, T) for students sampled with more steps.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from model.data.pairs import TrainBatch
from model.diffusion.process import Conditions, NoiseSchedule, denoise, drop_conditions, q_sample
from model.diffusion.sampler import Guidance, guided_prediction
from model.net.config import GUIDANCE_CHANNELS, ModelConfig
from model.net.unet import MPIPrediction, MPIUNet
from model.training.step import StepOutput

P_SHIPPED = 0.8  # share of draws at the teacher's own sampling settings (scales and the first timestep): the ones users get
PORTRAIT_RANGE = (1.0, 2.0)  # s_p drawn from here otherwise
FIRST_FRAME_RANGE = (0.0, 2.0)  # s_f at frame 0, falling to 0 at the clip's middle
P_NO_FIRST_FRAME = 0.1  # generation nearly always has a first frame (the portrait, then the previous clip's last frame)


def student_config(teacher: ModelConfig) -> ModelConfig:
    """The student of a teacher config: the same network with the guidance inputs, and the same
    sampling settings (steps, scales), now read as the student's inputs."""
    if teacher.guidance_input:
        raise ValueError(f"config {teacher.name!r} is already a guidance-distilled student")
    return dataclasses.replace(teacher, guidance_input=True)


def student_weights(teacher: dict[str, Tensor], student: MPIUNet) -> dict[str, Tensor]:
    """The student's state dict from the teacher's: every tensor as it is, except the stems' first
    convolutions, which get zero weights for the guidance input channels (the last ones)."""
    own = student.state_dict()
    missing = sorted(set(own) - set(teacher))
    if missing:
        raise ValueError(f"the teacher lacks {len(missing)} of the student's tensors ({', '.join(missing[:4])} ...): "
                         "a student must come from its own config's teacher")
    out = {}
    for name, mine in own.items():
        w = teacher[name]
        if w.shape != mine.shape:
            grown = w.dim() == 4 and w.shape[0] == mine.shape[0] and w.shape[1] + GUIDANCE_CHANNELS == mine.shape[1]
            if not grown:
                raise ValueError(f"{name}: teacher {tuple(w.shape)} does not fit the student's {tuple(mine.shape)}")
            w = torch.cat([w, w.new_zeros(w.shape[0], GUIDANCE_CHANNELS, *w.shape[2:])], 1)
        out[name] = w
    return out


def draw_guidance(generator: torch.Generator, frames: int, shipped: ModelConfig) -> Guidance:
    """The guidance of one step: the shipped scales with probability P_SHIPPED, else scales drawn
    from PORTRAIT_RANGE / FIRST_FRAME_RANGE."""
    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    if u[0] < P_SHIPPED:
        return Guidance.paper(frames, shipped.diffusion.portrait_guidance, shipped.diffusion.first_frame_guidance)
    lo_p, hi_p = PORTRAIT_RANGE
    lo_f, hi_f = FIRST_FRAME_RANGE
    return Guidance.paper(frames, lo_p + (hi_p - lo_p) * u[1], lo_f + (hi_f - lo_f) * u[2])


def draw_timesteps(generator: torch.Generator, batch: int, num_timesteps: int) -> Tensor:
    """t (batch,): the first sampling timestep T - 1 with probability P_SHIPPED, else uniform on [0, T)."""
    first = torch.rand(batch, generator=generator) < P_SHIPPED
    return torch.where(first, torch.full((batch,), num_timesteps - 1), torch.randint(0, num_timesteps, (batch,), generator=generator))


def distill_loss(student: MPIPrediction, student_x0: Tensor, teacher: MPIPrediction, teacher_x0: Tensor) -> tuple[Tensor, dict[str, float]]:
    """L1 between the student's and the teacher's MPIs (B, T, ...) and their frontal renderings."""
    terms = {"frontal": (student.frontal - teacher.frontal).abs().mean(), "residual": (student.residual - teacher.residual).abs().mean(),
             "alpha": (student.alpha - teacher.alpha).abs().mean(), "rendering": (student_x0 - teacher_x0).abs().mean()}
    loss = sum(terms.values())
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def distill_step(model: nn.Module, teacher: nn.Module, batch: TrainBatch, schedule: NoiseSchedule, cfg: ModelConfig,
                 generator: torch.Generator) -> StepOutput:
    """Loss of one distillation iteration. `model` is the student (maybe a DDP wrapper), `teacher`
    the frozen teacher's VariantModel."""
    B, T = batch.target.shape[:2]
    device = batch.target.device
    cond = Conditions(coords=batch.coords, mesh_alpha=batch.mesh_alpha, portrait=batch.portrait,
                      first_frame=batch.target[:, 0], first_frame_flag=torch.ones(B, device=device),
                      background=batch.background, identity=batch.identity, valid=batch.valid)
    cond = drop_conditions(cond, generator, P_NO_FIRST_FRAME, 0.0)
    guidance = draw_guidance(generator, T, cfg)
    t = draw_timesteps(generator, B, schedule.num_timesteps).to(device)
    noise = torch.randn(batch.target.shape, generator=generator).to(device)
    x_t = q_sample(batch.target, t, noise, schedule)
    with torch.no_grad():
        target, target_x0 = guided_prediction(teacher, x_t, t, cond, guidance)
    pred, x0 = denoise(model, x_t, t, cond, guidance.inputs(cond))
    loss, terms = distill_loss(pred, x0, target, target_x0)
    terms["total"] = float(loss.detach())
    terms["portrait_scale"] = float(guidance.portrait)
    return StepOutput(loss, terms, MPIPrediction(*(p.detach() for p in pred)), x0.detach(), t)
