"""LPIPS (Zhang et al. 2018, AlexNet variant) for the perceptual loss, with weights from a local file.

The backbone's pretrained weights cannot be downloaded at run time, so the user gives a file: the
state dict of the reference `lpips` package's model, saved once on a machine that has it:

    python -c "import lpips, torch; torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pth')"

(or the same tensors in a .safetensors file). The module mirrors that package's key layout
(`net.sliceK.N.weight`, `linK.model.1.weight`, `scaling_layer.*`) so the file loads as it is.
`.pth` files are read with `torch.load(weights_only=True)`: tensors only, nothing is unpickled.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

_CHANNELS = (64, 192, 384, 256, 256)


class _AlexSlices(nn.Module):
    """torchvision AlexNet `features` cut after each ReLU, indices kept as in torchvision."""

    def __init__(self):
        super().__init__()
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, 64, 11, stride=4, padding=2))
        self.slice1.add_module("1", nn.ReLU())
        self.slice2 = nn.Sequential()
        self.slice2.add_module("2", nn.MaxPool2d(3, 2))
        self.slice2.add_module("3", nn.Conv2d(64, 192, 5, padding=2))
        self.slice2.add_module("4", nn.ReLU())
        self.slice3 = nn.Sequential()
        self.slice3.add_module("5", nn.MaxPool2d(3, 2))
        self.slice3.add_module("6", nn.Conv2d(192, 384, 3, padding=1))
        self.slice3.add_module("7", nn.ReLU())
        self.slice4 = nn.Sequential()
        self.slice4.add_module("8", nn.Conv2d(384, 256, 3, padding=1))
        self.slice4.add_module("9", nn.ReLU())
        self.slice5 = nn.Sequential()
        self.slice5.add_module("10", nn.Conv2d(256, 256, 3, padding=1))
        self.slice5.add_module("11", nn.ReLU())

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for s in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = s(x)
            feats.append(x)
        return feats


class _ScalingLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class _Linear(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Perceptual distance (B,) between images (B, 3, H, W) in [-1, 1]. Frozen."""

    def __init__(self):
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _AlexSlices()
        for k, c in enumerate(_CHANNELS):
            setattr(self, f"lin{k}", _Linear(c))
        self.requires_grad_(False)
        self.eval()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        fa, fb = self.net(self.scaling_layer(a)), self.net(self.scaling_layer(b))
        total = a.new_zeros(a.shape[0])
        for k, (x, y) in enumerate(zip(fa, fb)):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = getattr(self, f"lin{k}").model[1]((x - y) ** 2)
            total = total + d.mean(dim=(1, 2, 3))
        return total


def load_lpips(path: str | Path) -> LPIPS:
    """LPIPS with the weights in `path` (.pth state dict or .safetensors); clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights not found: {path} (see model/training/lpips.py for how to make the file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a plain tensor file"
            raise ValueError(f"{path}: not a tensor state dict that can be read safely ({exc})") from exc
    model = LPIPS()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(
            f"{path}: not LPIPS-alex weights: missing {len(missing)} tensors, e.g. {', '.join(missing[:3])}"
        )
    return model
