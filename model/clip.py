"""MPI videos in memory (and, below, on disk).

An MPI frame (../shared/DESIGN.md): frontal (3, H, W), residual (3, H, W) and alpha (D, H, W) in
the MPI camera, plus that camera (K, T_cam_from_head) and near / far. Colours are 8-bit sRGB and
alpha 8-bit (0..255) in memory as on disk; `MPIFrame.tensors()` gives the float view the torch
renderer takes. Plane index 0 is the farthest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model import mpi


@dataclass
class MPIFrame:
    frontal: np.ndarray  # (3, H, W) uint8
    residual: np.ndarray  # (3, H, W) uint8
    alpha: np.ndarray  # (D, H, W) uint8
    K: np.ndarray  # (3, 3) float32, pixels
    T_cam_from_head: np.ndarray  # (4, 4) float32
    near: float
    far: float
    background: np.ndarray | None = None  # (3, H, W) uint8, drawn as a plane at `far`

    @property
    def num_planes(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the MPI images."""
        return int(self.alpha.shape[1]), int(self.alpha.shape[2])

    def depths(self) -> np.ndarray:
        """Plane depths (D,) in metres, index 0 = far."""
        return mpi.plane_depths(self.near, self.far, self.num_planes).numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Batched float tensors for `model.mpi.render` (colours in [0, 1], batch of 1)."""
        out = {
            "frontal": torch.from_numpy(self.frontal).float().div(255.0)[None],
            "residual": torch.from_numpy(self.residual).float().div(255.0)[None],
            "alpha": torch.from_numpy(self.alpha).float().div(255.0)[None],
            "depths": torch.from_numpy(self.depths()).float()[None],
            "K_src": torch.from_numpy(np.asarray(self.K, np.float32))[None],
        }
        if self.background is not None:
            out["background"] = torch.from_numpy(self.background).float().div(255.0)[None]
        return out


@dataclass
class MPIClip:
    """N MPI frames sharing size, plane count and background."""

    frontal: np.ndarray  # (N, 3, H, W) uint8
    residual: np.ndarray  # (N, 3, H, W) uint8
    alpha: np.ndarray  # (N, D, H, W) uint8
    K: np.ndarray  # (N, 3, 3) float32
    T_cam_from_head: np.ndarray  # (N, 4, 4) float32
    near: np.ndarray  # (N,) float32
    far: np.ndarray  # (N,) float32
    fps: float
    background: np.ndarray | None = None  # (3, H, W) uint8

    def __len__(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def num_planes(self) -> int:
        return int(self.alpha.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.alpha.shape[2]), int(self.alpha.shape[3])

    def frame(self, i: int) -> MPIFrame:
        return MPIFrame(
            frontal=self.frontal[i],
            residual=self.residual[i],
            alpha=self.alpha[i],
            K=self.K[i],
            T_cam_from_head=self.T_cam_from_head[i],
            near=float(self.near[i]),
            far=float(self.far[i]),
            background=self.background,
        )

    @classmethod
    def from_frames(cls, frames: list[MPIFrame], fps: float) -> "MPIClip":
        if not frames:
            raise ValueError("an MPI clip needs at least one frame")
        return cls(
            frontal=np.stack([f.frontal for f in frames]),
            residual=np.stack([f.residual for f in frames]),
            alpha=np.stack([f.alpha for f in frames]),
            K=np.stack([np.asarray(f.K, np.float32) for f in frames]),
            T_cam_from_head=np.stack([np.asarray(f.T_cam_from_head, np.float32) for f in frames]),
            near=np.array([f.near for f in frames], np.float32),
            far=np.array([f.far for f in frames], np.float32),
            fps=float(fps),
            background=frames[0].background,
        )
