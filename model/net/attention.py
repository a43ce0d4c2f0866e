"""Attention layers of the Space-Time U-Net: spatial and temporal self-attention, and
cross-attention from video features to the portrait's features.

All are pre-norm residual layers whose output projection starts at zero. Attention runs in
chunks of at most `chunk` (batch x heads) rows so that the 32-frame 512^2 `paper` config does not
materialise every attention matrix at once on a CPU (torch's CPU kernel is already
memory-efficient per call; chunking bounds the number of calls in flight).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.net.blocks import group_norm, zero_init


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, chunk: int) -> Tensor:
    """softmax(q k^T / sqrt(d)) v for q (N, h, Lq, d), k, v (N, h, Lk, d), `chunk` rows of N*h at a time."""
    N, h, Lq, d = q.shape
    q2, k2, v2 = (t.reshape(N * h, t.shape[2], d) for t in (q, k, v))
    step = max(1, chunk)
    out = [F.scaled_dot_product_attention(q2[i:i + step], k2[i:i + step], v2[i:i + step]) for i in range(0, N * h, step)]
    return torch.cat(out, 0).reshape(N, h, Lq, d)


class Attention(nn.Module):
    """Multi-head attention on token sequences x (N, L, C) attending to context (N, Lc, Cc)."""

    def __init__(self, ch: int, head_ch: int, chunk: int, context_ch: int | None = None):
        super().__init__()
        self.heads = max(1, ch // head_ch)
        self.chunk = chunk
        self.to_q = nn.Linear(ch, ch, bias=False)
        self.to_kv = nn.Linear(context_ch or ch, 2 * ch, bias=False)
        self.out = zero_init(nn.Linear(ch, ch))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        N, L, C = x.shape
        ctx = x if context is None else context
        q = self.to_q(x)
        k, v = self.to_kv(ctx).chunk(2, -1)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, C // self.heads).transpose(1, 2)
        k, v = split(k), split(v)
        if k.shape[0] != N:  # one context shared by several query rows (e.g. all frames of a clip)
            k, v = (t.repeat_interleave(N // t.shape[0], 0) for t in (k, v))
        o = chunked_attention(split(q), k, v, self.chunk)
        return self.out(o.transpose(1, 2).reshape(N, L, C))


class SpatialSelfAttention(nn.Module):
    """Self-attention over the H*W positions of each frame; x (B*T, C, H, W)."""

    def __init__(self, ch: int, head_ch: int, chunk: int, groups: int):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.attn = Attention(ch, head_ch, chunk)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        N, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(tokens).transpose(1, 2).reshape(N, C, H, W)


class TemporalSelfAttention(nn.Module):
    """Self-attention over the T frames at each position; x (B*T, C, H, W)."""

    def __init__(self, ch: int, head_ch: int, chunk: int, groups: int):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.attn = Attention(ch, head_ch, chunk * 64)  # sequences are short (T tokens): bigger chunks

    def forward(self, x: Tensor, frames: int) -> Tensor:
        N, C, H, W = x.shape
        B = N // frames
        tokens = self.norm(x).reshape(B, frames, C, H * W).permute(0, 3, 1, 2).reshape(B * H * W, frames, C)
        h = self.attn(tokens).reshape(B, H * W, frames, C).permute(0, 2, 3, 1).reshape(N, C, H, W)
        return x + h


class CrossAttention(nn.Module):
    """Video features (B*T, C, H, W) attend to portrait tokens (B, L, Cp), shared by all T frames."""

    def __init__(self, ch: int, context_ch: int, head_ch: int, chunk: int, groups: int):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.attn = Attention(ch, head_ch, chunk, context_ch)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        N, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        return x + self.attn(tokens, context).transpose(1, 2).reshape(N, C, H, W)
