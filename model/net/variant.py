"""How a trained network's MPI prediction is turned into the MPI that is rendered: the model
variants of training (sec. 3.3) and of the paper's ablations (table 1), and loading a trained
checkpoint with its variant for inference.

- alpha source "network": the geometry branch's alphas (the full model after stage 2);
- alpha source "mesh": the bootstrap stage's alphas. Supp. A trains only the colour branch in
  stage 1, so the geometry branch is untrained then and its alphas are arbitrary; we render with
  the driving mesh's alpha planes (a condition, so also available at inference) plus an opaque
  farthest plane. The face then sits at the mesh's depth and everything else (hair, torso,
  background) on the back plane, and the colour branch learns to paint frontal views that are
  sharp under a sensible, fixed geometry. A bootstrap-only checkpoint keeps this variant.
- no residual (ablation "w/o residual"): the residual image is replaced by the frontal one, i.e. a
  single-image MPI.

`VariantModel` wraps an `MPIUNet` with the same forward signature, so the sampler, the training
loop and DistributedDataParallel use it like the bare network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.net.unet import MPIPrediction, MPIUNet

ALPHA_SOURCES = ("network", "mesh")


@dataclass(frozen=True)
class Variant:
    alpha_source: str = "network"  # "network" (geometry branch) or "mesh" (bootstrap)
    residual: bool = True  # False: residual image := frontal (ablation)

    def __post_init__(self) -> None:
        if self.alpha_source not in ALPHA_SOURCES:
            raise ValueError(f"alpha_source must be one of {ALPHA_SOURCES}, got {self.alpha_source!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any] | None) -> "Variant":
        return Variant(**(data or {}))


def mesh_alpha_with_back_plane(mesh_alpha: Tensor) -> Tensor:
    """(..., D, H, W): the mesh alpha planes with plane 0 (the farthest) made opaque."""
    out = mesh_alpha.clone()
    out[..., 0, :, :] = 1.0
    return out


def apply_variant(pred: MPIPrediction, mesh_alpha: Tensor, variant: Variant) -> MPIPrediction:
    """The MPI to render for a raw network prediction (shapes as in MPIPrediction)."""
    frontal, residual, alpha = pred
    if variant.alpha_source == "mesh":
        alpha = mesh_alpha_with_back_plane(mesh_alpha.to(alpha))
    if not variant.residual:
        residual = frontal
    return MPIPrediction(frontal, residual, alpha)


class VariantModel(nn.Module):
    """An MPIUNet whose prediction goes through `apply_variant`; same call signature."""

    def __init__(self, net: MPIUNet, variant: Variant = Variant()):
        super().__init__()
        self.net = net
        self.variant = variant
        self.cfg = net.cfg

    def forward(self, x_t: Tensor, t: Tensor, coords: Tensor, mesh_alpha: Tensor, portrait: Tensor,
                first_frame: Tensor, first_frame_flag: Tensor, identity: Tensor | None = None,
                background: Tensor | None = None, with_gate: bool = False,
                guidance: Tensor | None = None) -> MPIPrediction | tuple[MPIPrediction, Tensor]:
        out = self.net(x_t, t, coords, mesh_alpha, portrait, first_frame, first_frame_flag, identity, background, with_gate,
                       guidance)
        if with_gate:
            return apply_variant(out[0], mesh_alpha, self.variant), out[1]
        return apply_variant(out, mesh_alpha, self.variant)


def variant_of_state(state: dict[str, Any]) -> Variant:
    """The variant recorded in a checkpoint's training state (older / foreign files: the full model)."""
    return Variant.from_dict(state.get("variant"))


def load_trained(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[VariantModel, dict[str, Any]]:
    """(VariantModel in eval mode, checkpoint training state) for a checkpoint written by
    `imp train` (default: the demo model)."""
    from model.net.checkpoint import demo_checkpoint, load_model

    net, ckpt = load_model(path if path is not None else demo_checkpoint(), device=device)
    return VariantModel(net, variant_of_state(ckpt.state)).to(device).eval(), ckpt.state
