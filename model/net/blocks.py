"""Building blocks of the Space-Time U-Net (Lumiere, supp. A).

Video features travel as (B*T, C, H, W) ("frames folded into the batch") so spatial layers are
plain 2D layers; temporal layers unfold them with the frame count T they are given. Residual
branches end in zero-initialised projections (lucidrains' lumiere-pytorch habit), so a freshly
built block is the identity on its skip path and the temporal layers start as no-ops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def to_time_major(x: Tensor, frames: int) -> Tensor:
    """(B*T, C, H, W) -> (B*H*W, C, T) for 1D layers over time."""
    BT, C, H, W = x.shape
    return x.reshape(BT // frames, frames, C, H, W).permute(0, 3, 4, 2, 1).reshape(-1, C, frames)


def from_time_major(x: Tensor, batch: int, hw: tuple[int, int]) -> Tensor:
    """(B*H*W, C, T) -> (B*T, C, H, W), inverse of `to_time_major`."""
    _, C, T = x.shape
    H, W = hw
    return x.reshape(batch, H, W, C, T).permute(0, 4, 3, 1, 2).reshape(batch * T, C, H, W)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of the (integer) diffusion timestep followed by an MLP: (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim, self.max_period = dim, max_period
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], -1))


class ResBlock2D(nn.Module):
    """Spatial residual block with a timestep scale/shift (FiLM); x (N, C, H, W), emb (N, E)."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_ch, 2 * out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, 1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class TemporalConv(nn.Module):
    """Residual 1D convolution over time (kernel 3), zero-initialised output projection."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.conv = nn.Conv1d(ch, ch, 3, padding=1)
        self.proj = zero_init(nn.Conv1d(ch, ch, 1))

    def forward(self, x: Tensor, frames: int) -> Tensor:
        B, hw = x.shape[0] // frames, x.shape[-2:]
        h = to_time_major(x, frames)
        h = self.proj(F.silu(self.conv(F.silu(self.norm(h)))))
        return x + from_time_major(h, B, hw)


class InflationBlock(nn.Module):
    """Lumiere's convolution-based inflation block: a spatial ResBlock then a temporal conv."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, groups: int):
        super().__init__()
        self.spatial = ResBlock2D(in_ch, out_ch, emb_ch, groups)
        self.temporal = TemporalConv(out_ch, groups)

    def forward(self, x: Tensor, emb: Tensor, frames: int) -> Tensor:
        return self.temporal(self.spatial(x, emb), frames)


class Downsample(nn.Module):
    """Halve H, W with a strided conv (changing channels) and optionally T (Lumiere's temporal
    downsampling: average frame pairs, then a zero-initialised residual temporal conv)."""

    def __init__(self, in_ch: int, out_ch: int, temporal: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.temporal = temporal
        self.tconv = zero_init(nn.Conv1d(out_ch, out_ch, 3, padding=1)) if temporal else None

    def forward(self, x: Tensor, frames: int) -> tuple[Tensor, int]:
        x = self.conv(x)
        if not self.temporal:
            return x, frames
        B, hw = x.shape[0] // frames, x.shape[-2:]
        h = F.avg_pool1d(to_time_major(x, frames), 2)
        h = h + self.tconv(h)
        return from_time_major(h, B, hw), frames // 2


class Upsample(nn.Module):
    """Double H, W (nearest + conv) and optionally T (linear interpolation + residual temporal conv)."""

    def __init__(self, in_ch: int, out_ch: int, temporal: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temporal = temporal
        self.tconv = zero_init(nn.Conv1d(in_ch, in_ch, 3, padding=1)) if temporal else None

    def forward(self, x: Tensor, frames: int) -> tuple[Tensor, int]:
        if self.temporal:
            B, hw = x.shape[0] // frames, x.shape[-2:]
            h = F.interpolate(to_time_major(x, frames), scale_factor=2, mode="linear", align_corners=False)
            h = h + self.tconv(h)
            x, frames = from_time_major(h, B, hw), frames * 2
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest")), frames


class PixelShuffleUp(nn.Module):
    """conv -> pixel shuffle by `factor` -> conv (the output heads of supp. A)."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, factor: int, groups: int):
        super().__init__()
        self.pre = nn.Conv2d(in_ch, hidden * factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        self.norm = group_norm(hidden, groups)
        self.post = nn.Conv2d(hidden, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.post(F.silu(self.norm(self.shuffle(self.pre(x)))))
