"""Training losses of sec. 3.3 / supplement A, on renderings of predicted MPIs.

All images are (B, 3, H, W) in [-1, 1] (flatten video time into B); mattes and masks (B, 1, H, W)
in [0, 1]; disparities (B, 1, H, W) in 1/metres. Weights (supp. A): L2 on foreground and full
renderings 1, LPIPS 0.1 (foreground), mask L2 0.01, edge-aware depth smoothness (Laplacian) 0.01,
disparity vs mesh 0.001.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from model.geometry.mpi import Rendering

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


@dataclass(frozen=True)
class LossWeights:
    l2_full: float = 1.0
    l2_foreground: float = 1.0
    lpips: float = 0.1
    mask: float = 0.01
    smoothness: float = 0.01
    disparity: float = 0.001
    gate: float = 0.01  # identity condition only: mean gate of the DetailHead (copy unless painting pays)

    def for_fixed_geometry(self) -> "LossWeights":
        """The weights when the MPI's geometry is not learned (bootstrap: mesh alpha planes in front
        of an opaque back plane). Only the full rendering stays: the foreground / mask / smoothness /
        disparity terms judge the alphas, and against that fixed, fully opaque geometry they cannot
        be met; they would pull the colours towards black outside the person instead."""
        return LossWeights(l2_full=self.l2_full, l2_foreground=0.0, lpips=0.0, mask=0.0, smoothness=0.0, disparity=0.0,
                           gate=self.gate)


def laplacian(x: Tensor) -> Tensor:
    """Per-channel 3x3 Laplacian (B, C, H, W) -> (B, C, H, W), replicate padding."""
    C = x.shape[1]
    k = _LAPLACIAN.to(x).expand(C, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=C)


def edge_aware_smoothness(disparity: Tensor, image: Tensor, edge_sharpness: float = 10.0) -> Tensor:
    """Mean |Laplacian of disparity| damped where the image has edges (Tucker & Snavely).

    Disparity is divided by its per-image mean first, so the loss does not favour flattening the
    whole scene away."""
    disp = disparity / disparity.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    edges = laplacian(image).abs().mean(1, keepdim=True)
    return (laplacian(disp).abs() * torch.exp(-edge_sharpness * edges)).mean()


def disparity_loss(disparity: Tensor, mesh_disparity: Tensor, coverage: Tensor) -> Tensor:
    """Relative L1 between rendered and mesh disparity where the mesh covers the pixel."""
    weight = coverage.clamp(0, 1)
    rel = (disparity - mesh_disparity).abs() / mesh_disparity.clamp_min(1e-6)
    return (rel * weight).sum() / weight.sum().clamp_min(1.0)


def masked_mse(a: Tensor, b: Tensor, weight: Tensor | None) -> Tensor:
    """Mean squared error of (B, C, H, W) images over the pixels weighted by weight (B, 1, H, W)
    (all pixels when None: then it is F.mse_loss)."""
    if weight is None:
        return F.mse_loss(a, b)
    w = weight.expand_as(a)
    return ((a - b).square() * w).sum() / w.sum().clamp_min(1.0)


def mpi_losses(
    render: Rendering,
    target: Tensor,
    matte: Tensor,
    mesh_disparity: Tensor | None = None,
    mesh_coverage: Tensor | None = None,
    lpips=None,
    weights: LossWeights = LossWeights(),
    valid: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the losses of one rendering against its target frame, and each term.

    render: model.geometry.mpi.Rendering in the target camera (rgb with background, premultiplied
    foreground, mask, disparity); target (B, 3, H, W); matte (B, 1, H, W) foreground matte of the
    target; mesh_disparity / mesh_coverage from the conditions (optional); lpips: a model.training.lpips.LPIPS
    or None (then that term is left out); valid (B, 1, H, W): 1 where the target's pixels are real
    (inside the source video's frame), 0 where the crop was filled; the image terms count real
    pixels only."""
    target_fg = target * matte
    terms = {
        "l2_full": masked_mse(render.rgb, target, valid),
        "l2_foreground": masked_mse(render.foreground, target_fg, valid),
        "mask": masked_mse(render.mask, matte, valid),
        "smoothness": edge_aware_smoothness(render.disparity, target),
    }
    if lpips is not None:
        terms["lpips"] = lpips(render.foreground, target_fg).mean()
    if mesh_disparity is not None and mesh_coverage is not None:
        terms["disparity"] = disparity_loss(render.disparity, mesh_disparity, mesh_coverage)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
