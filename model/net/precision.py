"""Reduced-precision execution of the network: `Autocast` runs a model under autocast and hands its
prediction back in float32, so the renderer, the sampler's update and the losses stay in float32.
Training uses it with bf16 (`--amp`); generation on a GPU with fp16 (`for_inference`)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from model.net.unet import MPIPrediction


class Autocast(nn.Module):
    """`model` called under `dtype` autocast on `device_type`; same call signature and `.cfg`."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype
        self.cfg = getattr(model, "cfg", None)

    def forward(self, *args, **kwargs) -> MPIPrediction | tuple[MPIPrediction, Tensor]:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        if isinstance(out, MPIPrediction):
            return MPIPrediction(*(p.float() for p in out))
        pred, gate = out
        return MPIPrediction(*(p.float() for p in pred)), gate.float()


def for_inference(model: nn.Module, device: str | torch.device, half: bool | None = None) -> nn.Module:
    """The model to sample with on `device`: under fp16 autocast on a GPU (half=None: on CUDA only;
    fp16 halves the memory traffic that bounds a small denoiser there), as it is on the CPU, where
    half=True means bf16, the reduced type CPU autocast supports."""
    device = torch.device(device)
    if half is None:
        half = device.type == "cuda"
    if not half:
        return model
    return Autocast(model, device.type, torch.float16 if device.type == "cuda" else torch.bfloat16)
