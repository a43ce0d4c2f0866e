"""The diffusion process on the MPI camera's 2D video: schedules, q_sample, condition dropout,
x0_hat = R(S) against the reference renderer, and a tiny model overfitting one synthetic clip."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from model.geometry import camera, mpi
from model.net.config import DiffusionConfig, get_config
from model.diffusion.process import Conditions, denoise, drop_conditions, eps_from_x0, make_schedule, q_sample, render_frontal
from model.net.unet import MPIUNet


def make_conditions(cfg, batch: int = 1, seed: int = 0, frames: int | None = None) -> Conditions:
    g = torch.Generator().manual_seed(seed)
    B, T, R, Cc = batch, frames or cfg.frames, cfg.res, cfg.coord_channels
    return Conditions(
        coords=torch.rand(B, T, Cc, R, R, generator=g) * 2 - 1,
        mesh_alpha=torch.rand(B, T, cfg.planes, R, R, generator=g),
        portrait=torch.rand(B, 3 + Cc, R, R, generator=g) * 2 - 1,
        first_frame=torch.rand(B, 3, R, R, generator=g) * 2 - 1,
        first_frame_flag=torch.ones(B),
        background=torch.rand(B, 3, R, R, generator=g) * 2 - 1,
    )


@pytest.mark.parametrize("schedule", ["cosine", "scaled_linear"])
def test_schedules_decrease_from_one_to_almost_zero(schedule: str) -> None:
    s = make_schedule(DiffusionConfig(schedule=schedule))
    ab = s.alphas_cumprod
    assert s.num_timesteps == 1000 and (ab[1:] < ab[:-1]).all()
    assert 0.99 < float(ab[0]) < 1 and float(ab[-1]) < 0.01
    assert float(s.abar(torch.tensor(-1))) == 1.0
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_schedule(DiffusionConfig(schedule="quadratic"))


def test_q_sample_and_eps_round_trip() -> None:
    s = make_schedule(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 2, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = q_sample(x0, t, noise, s)
    assert torch.allclose(eps_from_x0(x_t, x0, t, s), noise, atol=2e-4)
    ab = float(s.alphas_cumprod[500])
    assert torch.allclose(x_t[2], ab ** 0.5 * x0[2] + (1 - ab) ** 0.5 * noise[2])


def test_x0_hat_equals_reference_renderer() -> None:
    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = MPIUNet(cfg).eval()
    cond = make_conditions(cfg)
    x_t = torch.randn(1, cfg.frames, 3, cfg.res, cfg.res)
    with torch.no_grad():
        pred, x0 = denoise(model, x_t, torch.tensor([300]), cond)
    # the full reference renderer with an identity pose: the MPI camera looking at itself
    T, R = cfg.frames, cfg.res
    K = camera.crop_intrinsics(R).expand(T, 3, 3)
    depths = mpi.plane_depths(*mpi.near_far(1.0), cfg.planes).expand(T, cfg.planes)
    ref = mpi.render(pred.frontal[0], pred.residual[0], pred.alpha[0], depths, K, K, torch.eye(4).expand(T, 4, 4),
                     cond.background.expand(T, 3, R, R))
    assert torch.allclose(x0[0], ref.rgb, atol=1e-5)
    assert x0.min() >= -1 and x0.max() <= 1
    # without background: the premultiplied foreground
    assert torch.allclose(render_frontal(pred, None)[0], ref.foreground, atol=1e-5)


def test_condition_dropout_rates_and_masking() -> None:
    cfg = dataclasses.replace(get_config("tiny"), res=16, stem_strides=(1, 1), frames=2, temporal_downsample=(False, False))
    cond = make_conditions(cfg, batch=4000)
    out = drop_conditions(cond, torch.Generator().manual_seed(3), p_first_frame=0.7, p_portrait=0.1)
    dropped_f = out.first_frame_flag == 0
    dropped_p = out.portrait.flatten(1).abs().sum(1) == 0
    assert abs(float(dropped_f.float().mean()) - 0.7) < 0.03
    assert abs(float(dropped_p.float().mean()) - 0.1) < 0.02
    assert (out.first_frame[dropped_f] == 0).all() and torch.equal(out.first_frame[~dropped_f], cond.first_frame[~dropped_f])
    assert torch.equal(out.portrait[~dropped_p], cond.portrait[~dropped_p])
    assert torch.equal(out.coords, cond.coords) and torch.equal(out.background, cond.background)
    again = drop_conditions(cond, torch.Generator().manual_seed(3), 0.7, 0.1)
    assert torch.equal(again.first_frame_flag, out.first_frame_flag) and torch.equal(again.portrait, out.portrait)


def test_tiny_model_overfits_one_synthetic_clip() -> None:
    """A few dozen steps of L_mpi (eq. 6) on one clip: the x0 loss must fall clearly."""
    cfg = dataclasses.replace(get_config("tiny"), res=32, frames=4, planes=4)  # smaller still: keep the suite fast
    torch.manual_seed(0)
    model = MPIUNet(cfg)
    sched = make_schedule(cfg.diffusion)
    cond = make_conditions(cfg)
    # a smooth moving blob over the background: learnable, not noise
    R, T = cfg.res, cfg.frames
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, R), torch.linspace(-1, 1, R), indexing="ij")
    frames = [torch.stack([torch.exp(-((xs - 0.4 * torch.tensor(t / T - 0.5)) ** 2 + ys ** 2) * 6)] * 3) * 1.6 - 0.8
              for t in range(T)]
    video = torch.stack(frames)[None]
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(20):
        t = torch.randint(0, 300, (1,), generator=g)
        x_t = q_sample(video, t, torch.randn(video.shape, generator=g), sched)
        _, x0 = denoise(model, x_t, t, cond)
        loss = (x0 - video).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"overfit loss {first:.4f} -> {last:.4f}")
    assert last < 0.3 * first, (first, last)
