"""model/net/precision.py: reduced-precision inference. On a GPU generation runs under fp16
autocast; the same code path is checked here on the CPU (bf16, the CPU's autocast type): the
prediction comes back in float32 and close to the full-precision one, and the Generator applies it
by device (off on the CPU unless asked)."""
from __future__ import annotations

import torch

from model.diffusion.pipeline import Generator
from model.net.config import TINY
from model.net.precision import Autocast, for_inference
from model.net.unet import MPIUNet


def _inputs(cfg):
    g = torch.Generator().manual_seed(0)
    B, T, R, D, Cc = 1, cfg.frames, cfg.res, cfg.planes, cfg.coord_channels
    return dict(x_t=torch.randn(B, T, 3, R, R, generator=g), t=torch.tensor([500]),
                coords=torch.rand(B, T, Cc, R, R, generator=g) * 2 - 1, mesh_alpha=torch.rand(B, T, D, R, R, generator=g),
                portrait=torch.rand(B, 3 + Cc, R, R, generator=g) * 2 - 1, first_frame=torch.rand(B, 3, R, R, generator=g) * 2 - 1,
                first_frame_flag=torch.ones(B))


def test_half_precision_inference_returns_float32_close_to_full_precision() -> None:
    torch.manual_seed(0)
    net = MPIUNet(TINY).eval()
    assert for_inference(net, "cpu") is net  # the CPU keeps float32 unless asked
    half = for_inference(net, "cpu", half=True)
    assert isinstance(half, Autocast) and half.dtype == torch.bfloat16 and half.cfg is net.cfg
    inputs = _inputs(TINY)
    with torch.no_grad():
        full, reduced = net(**inputs), half(**inputs)
    for a, b in zip(full, reduced):
        assert b.dtype == torch.float32
        assert (a - b).abs().max() < 0.05  # bf16 keeps ~3 significant digits; the outputs live in [-1, 1]
        assert (a - b).abs().max() > 0  # it did run in reduced precision


def test_generator_picks_precision_by_device(tiny_checkpoint) -> None:
    assert not isinstance(Generator.from_checkpoint(tiny_checkpoint, "cpu").model, Autocast)
    assert isinstance(Generator.from_checkpoint(tiny_checkpoint, "cpu", half=True).model, Autocast)
