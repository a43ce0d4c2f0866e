"""DDIM sampling with two-scale classifier-free guidance, and long videos chained clip by clip."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from model.net.config import DiffusionConfig, get_config
from model.diffusion.process import denoise, make_schedule, q_sample
from model.diffusion.sampler import (DDIMScheduler, Guidance, chain_clips, clip_starts, first_frame_guidance_scales,
                           guided_prediction, sample_clip, sample_video)
from model.net.unet import MPIUNet
from tests.test_diffusion import make_conditions

MICRO = dataclasses.replace(get_config("tiny"), name="micro", res=32, frames=4, planes=4)


@pytest.fixture(scope="module")
def model() -> MPIUNet:
    torch.manual_seed(0)
    m = MPIUNet(MICRO).eval()
    # move the zero-initialised output projections off zero so that every condition matters
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1 and float(p.abs().sum()) == 0:
                p.normal_(0, 0.05)
    return m


def scheduler(steps: int = 2, eta: float = 0.0) -> DDIMScheduler:
    s = DDIMScheduler(make_schedule(DiffusionConfig()), eta=eta)
    s.set_timesteps(steps)
    return s


def test_first_frame_scale_schedule_exact() -> None:
    s = first_frame_guidance_scales(32)
    expected = torch.tensor([1 - i / 15 for i in range(16)] + [0.0] * 16)
    assert torch.allclose(s, expected, atol=1e-7)
    assert s[0] == 1 and s[15] == 0 and (s[16:] == 0).all()
    assert torch.allclose(first_frame_guidance_scales(8), torch.tensor([1, 2 / 3, 1 / 3, 0, 0, 0, 0, 0]))
    assert torch.equal(first_frame_guidance_scales(4, 0.5), torch.tensor([0.5, 0.0, 0.0, 0.0]))


def test_ddim_timesteps_and_oracle_recovery() -> None:
    s = scheduler(10)
    assert s.timesteps.tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    # with the true x0 at every step, deterministic DDIM lands exactly on x0
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 2, 3, 8, 8, generator=g) * 2 - 1
    x = torch.randn(x0.shape, generator=g)
    for t in s.timesteps.tolist():
        x = s.step(x0, t, x)
    assert torch.allclose(x, x0, atol=1e-5)
    # one step from a forward-noised sample with the true x0 reproduces the DDIM posterior mean
    sch = s.schedule
    noise = torch.randn(x0.shape, generator=g)
    x_t = q_sample(x0, torch.tensor([599]), noise, sch)
    ab_prev = float(sch.alphas_cumprod[499])
    assert torch.allclose(s.step(x0, 599, x_t), ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * noise, atol=1e-4)


def test_guided_prediction_matches_instructpix2pix_formula(model: MPIUNet) -> None:
    cond = make_conditions(MICRO)
    x_t = torch.randn(1, MICRO.frames, 3, MICRO.res, MICRO.res, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700])
    guidance = Guidance(1.5, torch.tensor([1.0, 0.5, 0.0, 0.0]))
    with torch.no_grad():
        pred, x0 = guided_prediction(model, x_t, t, cond, guidance)
        _, e00 = denoise(model, x_t, t, cond.without_portrait().without_first_frame())
        _, ep0 = denoise(model, x_t, t, cond.without_first_frame())
        _, epf = denoise(model, x_t, t, cond)
    s_f = guidance.first_frame.view(1, -1, 1, 1, 1)
    expected = e00 + 1.5 * (ep0 - e00) + s_f * (epf - ep0)
    assert torch.allclose(x0, expected.clamp(-1, 1), atol=1e-5)
    assert (epf - ep0).abs().max() > 1e-4 and (ep0 - e00).abs().max() > 1e-4  # the conditions matter
    assert pred.alpha.min() >= 0 and pred.alpha.max() <= 1


def test_zero_scales_sample_the_unconditional_branch(model: MPIUNet) -> None:
    cond = make_conditions(MICRO)
    sched = scheduler(3)
    out = sample_clip(model, cond, sched, Guidance.none(MICRO.frames), torch.Generator().manual_seed(5))
    # by hand: the network without portrait and first frame drives DDIM alone
    uncond = cond.without_portrait().without_first_frame()
    g = torch.Generator().manual_seed(5)
    x = torch.randn((1, MICRO.frames, 3, MICRO.res, MICRO.res), generator=g)
    with torch.no_grad():
        for t in sched.timesteps.tolist():
            pred, x0 = denoise(model, x, torch.tensor([t]), uncond)
            x = sched.step(x0, t, x, g)
    assert torch.allclose(out.mpi.frontal, pred.frontal, atol=1e-6)
    assert torch.allclose(out.mpi.alpha, pred.alpha, atol=1e-6)
    guided = sample_clip(model, cond, sched, Guidance.paper(MICRO.frames), torch.Generator().manual_seed(5))
    assert (guided.video - out.video).abs().max() > 1e-4


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_seeded_sampling_is_reproducible(model: MPIUNet, eta: float) -> None:
    cond = make_conditions(MICRO)
    run = lambda seed: sample_clip(model, cond, scheduler(2, eta), Guidance.paper(MICRO.frames), torch.Generator().manual_seed(seed))
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a.video, b.video) and torch.equal(a.mpi.alpha, b.mpi.alpha)
    assert (a.video - c.video).abs().max() > 1e-4
    assert a.video.shape == (1, MICRO.frames, 3, MICRO.res, MICRO.res)


def test_clip_starts_share_one_frame() -> None:
    assert clip_starts(7, 4) == [0, 3]
    assert clip_starts(4, 4) == [0]
    assert clip_starts(8, 4) == [0, 3, 6]
    with pytest.raises(ValueError):
        clip_starts(10, 1)


class FirstFrameSpy(torch.nn.Module):
    """Wraps the model and records the first-frame condition of every call."""

    def __init__(self, inner: MPIUNet):
        super().__init__()
        self.inner, self.cfg, self.seen = inner, inner.cfg, []

    def forward(self, x_t, t, coords, mesh_alpha, portrait, first_frame, first_frame_flag, identity=None, background=None):
        self.seen.append((first_frame.clone(), first_frame_flag.clone(), coords.clone()))
        return self.inner(x_t, t, coords, mesh_alpha, portrait, first_frame, first_frame_flag)


def test_chaining_two_clips_through_the_first_frame(model: MPIUNet) -> None:
    N = MICRO.frames
    cond = make_conditions(MICRO, frames=2 * N - 1).without_first_frame()
    spy = FirstFrameSpy(model)
    out = sample_video(spy, cond, scheduler(2), clip_frames=N, generator=torch.Generator().manual_seed(3))
    assert out.video.shape[1] == 2 * N - 1 and out.mpi.alpha.shape[1] == 2 * N - 1
    # clip 1 alone with the same generator state is the video's first N frames
    first = sample_clip(model, cond.frame_range(0, N), scheduler(2), Guidance.paper(N), torch.Generator().manual_seed(3))
    assert torch.allclose(out.video[:, :N], first.video, atol=1e-6)
    # the joint frame is clip 1's last frame, and clip 2 was conditioned on exactly that frame
    assert torch.equal(out.video[:, N - 1], first.video[:, -1])
    clip2_calls = [s for s in spy.seen if torch.equal(s[2][:, 0], cond.coords[:, N - 1])]
    assert clip2_calls and any(bool(flag.all()) and torch.allclose(ff, first.video[:, -1], atol=1e-6) for ff, flag, _ in clip2_calls)
    # the driving frames of clip 2 are frames N-1 .. 2N-2
    assert torch.equal(clip2_calls[0][2], cond.coords[:, N - 1:])


def test_chain_clips_drops_the_repeated_frame(model: MPIUNet) -> None:
    cond = make_conditions(MICRO)
    a = sample_clip(model, cond, scheduler(1), Guidance.none(MICRO.frames), torch.Generator().manual_seed(0))
    b = sample_clip(model, cond, scheduler(1), Guidance.none(MICRO.frames), torch.Generator().manual_seed(1))
    joined = chain_clips([a, b])
    assert joined.video.shape[1] == 2 * MICRO.frames - 1
    assert torch.equal(joined.video[:, :MICRO.frames], a.video) and torch.equal(joined.video[:, MICRO.frames:], b.video[:, 1:])
    assert torch.equal(joined.mpi.residual[:, MICRO.frames - 1], a.mpi.residual[:, -1])
