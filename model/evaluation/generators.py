"""What `imp eval` evaluates: functions (Conditions of a whole video, real frames or None) ->
MPIPrediction, so that a trained model, an oracle and a warp that learns nothing go through the
same metrics.

- `model_generator`: DDIM with the config's two-scale guidance, clips chained through the first
  frame (model.diffusion.sampler.sample_video, the one sampling loop);
- `oracle_generator`: the real frames over the tracked mesh's depth (tests pin the metrics with it);
- `warp_generator`: the identity condition alone (the portrait carried by the meshes, black inside
  the mouth) over the background, placed at the mesh's depth (and the rest of the person on the
  plane of the head joint): what the diffusion model adds is measured against it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from model.diffusion.process import Conditions
from model.geometry import mpi
from model.net.unet import MPIPrediction
from model.net.variant import mesh_alpha_with_back_plane

Generator = Callable[[Conditions, Tensor | None], MPIPrediction]


def model_generator(model: torch.nn.Module, sample_steps: int, seed: int, progress: bool = False) -> Generator:
    """Sample MPI videos with DDIM and the config's guidance, clips chained through the first frame."""
    from model.diffusion.process import make_schedule
    from model.diffusion.sampler import DDIMScheduler, Guidance, sample_video

    cfg = model.cfg
    ddim = DDIMScheduler(make_schedule(cfg.diffusion), cfg.diffusion.eta)
    ddim.set_timesteps(sample_steps)
    guidance = lambda frames: Guidance.paper(frames, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance)

    def generate(cond: Conditions, real: Tensor | None) -> MPIPrediction:
        g = torch.Generator().manual_seed(seed)
        return sample_video(model, cond, ddim, cfg.frames, guidance, generator=g, progress=progress).mpi

    return generate


def oracle_generator(cond: Conditions, real: Tensor | None) -> MPIPrediction:
    """Not a model: the real frames as frontal and residual images over the mesh alpha planes and an
    opaque back plane. Its frontal view is exact and its depth is the tracked mesh, so it pins
    down what the metrics give for a perfect 2D generator with mesh geometry (tests)."""
    if real is None:
        raise ValueError("the oracle needs the real frames (self-reenactment only)")
    return MPIPrediction(real, real, mesh_alpha_with_back_plane(cond.mesh_alpha))


def joint_plane(planes: int, r: float = 1.0) -> int:
    """Index of the MPI plane nearest the head joint for a head at distance r (planes between
    r - 0.15 and r + 0.05, equally spaced in disparity; index 0 = far). It hardly depends on r."""
    near, far = mpi.near_far(r)
    s = (1.0 / r - 1.0 / float(far)) / (1.0 / float(near) - 1.0 / float(far))
    return int(round(s * (planes - 1)))


def warp_generator(cond: Conditions, real: Tensor | None = None) -> MPIPrediction:
    """The warp baseline (needs cond.identity, model/geometry/portrait_warp.py). Its frontal view is
    exactly the identity condition composited over the background (within cond.valid): where the
    driving mesh is, its alpha planes (the mesh's depth); the rest of the person on the plane of the
    head joint."""
    if cond.identity is None:
        raise ValueError("the warp baseline needs the identity condition (a config with identity_warp)")
    ident = cond.identity  # (B, T, 5, H, W)
    rgb, alpha = ident[:, :, :3], ident[:, :, 3:4]
    mesh = cond.mesh_alpha
    coverage = 1.0 - torch.prod(1.0 - mesh, dim=2, keepdim=True)
    rest = (alpha - coverage).clamp(0, 1) / (1.0 - coverage).clamp_min(1e-6)  # off-mesh foreground, over what the mesh leaves
    planes = mesh.clone()
    k = joint_plane(mesh.shape[2])
    planes[:, :, k:k + 1] = 1.0 - (1.0 - planes[:, :, k:k + 1]) * (1.0 - rest)
    colour = (rgb / alpha.clamp_min(1e-6)).clamp(-1, 1)  # un-premultiplied: compositing gives back rgb + (1 - alpha) bg
    # transparent where the network's MPI is made so (model.diffusion.process): outside cond.valid
    # the condition may carry a person continued past the portrait's edges (model.data.matting.continue_person)
    return MPIPrediction(colour, colour, planes).inside(cond.valid)
