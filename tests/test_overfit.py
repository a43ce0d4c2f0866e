"""Overfitting a tiny denoiser on a few frames of real footage: the training signal (x0_hat =
R(S) against the frames, eq. 6) must be learnable end to end, and DDIM sampling with guidance must
then reproduce the clip. The driving mesh conditions are zeros here (they come from the
conditions module); the portrait and the first frame are the clip's first frame."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.net.config import get_config
from model.diffusion.process import Conditions, denoise, make_schedule, q_sample
from model.diffusion.sampler import DDIMScheduler, Guidance, sample_clip
from model.net.unet import MPIUNet
from model.formats.video import read_video

CFG = dataclasses.replace(get_config("tiny"), name="tiny32", res=32, frames=4, planes=4)
STEPS = 150


def clip_tensor(path, frames: int, res: int) -> torch.Tensor:
    """(1, frames, 3, res, res) in [-1, 1]: every second frame of the video's start, resized."""
    video, _ = read_video(path, max_frames=2 * frames)
    x = torch.from_numpy(np.ascontiguousarray(video[::2][:frames])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(x, size=(res, res), mode="area")[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1]."""
    mse = float(((a - b) / 2).square().mean())
    return 10 * math.log10(1 / mse)


@pytest.mark.slow
def test_tiny_model_overfits_real_footage(shared_data) -> None:
    torch.manual_seed(0)
    video = clip_tensor(shared_data / "videos" / "dreamtalk" / "M030_front_neutral_level1_001.mp4", CFG.frames, CFG.res)
    B, T, R = 1, CFG.frames, CFG.res
    first = video[:, 0]
    cond = Conditions(
        coords=torch.zeros(B, T, CFG.coord_channels, R, R), mesh_alpha=torch.zeros(B, T, CFG.planes, R, R),
        portrait=torch.cat([first, torch.zeros(B, CFG.coord_channels, R, R)], 1),
        first_frame=first, first_frame_flag=torch.ones(B), background=torch.zeros(B, 3, R, R))
    model = MPIUNet(CFG)
    sched = make_schedule(CFG.diffusion)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, start = [], time.perf_counter()
    for step in range(STEPS):
        t = torch.randint(0, CFG.diffusion.train_timesteps, (B,), generator=g)
        x_t = q_sample(video, t, torch.randn(video.shape, generator=g), sched)
        _, x0 = denoise(model, x_t, t, cond)
        loss = (x0 - video).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first_loss, last_loss = np.mean(losses[:10]), np.mean(losses[-10:])
    model.eval()
    ddim = DDIMScheduler(sched)
    ddim.set_timesteps(10)
    out = sample_clip(model, cond, ddim, Guidance.paper(T), torch.Generator().manual_seed(1))
    quality = psnr(out.video, video)
    print(f"overfit on real footage: loss {first_loss:.4f} -> {last_loss:.4f} in {STEPS} steps "
          f"({time.perf_counter() - start:.0f} s), DDIM sample PSNR {quality:.1f} dB")
    assert last_loss * 10 <= first_loss
    assert quality >= 20.0
