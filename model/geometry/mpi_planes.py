"""Where an MPI's planes are, without torch: the viewer's generation worker makes its first clip
with NumPy and ONNX Runtime alone (model/coldstart), and decoding any clip into MPIFrames needs
the planes' near / far. `model.geometry.mpi.near_far` / `plane_depths` are these as tensors."""
from __future__ import annotations

import numpy as np

NEAR_OFFSET = 0.15  # near plane at r - 0.15 m, r = distance from MPI camera to head joint (supp. A)
FAR_OFFSET = 0.05  # far plane at r + 0.05 m


def near_far(r: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(near, far) float32 depths in metres (...) for a head joint at distance r (...)."""
    r = np.asarray(r, dtype=np.float32)
    return r - np.float32(NEAR_OFFSET), r + np.float32(FAR_OFFSET)


def _linspace01(n: int) -> np.ndarray:
    """(n,) torch.linspace(0, 1, n) float32 bit for bit: the lower half counts up from 0, the upper
    half down from 1 with a fused multiply-add."""
    if n == 1:
        return np.zeros(1, np.float32)
    step = np.float32(1.0) / np.float32(n - 1)
    i = np.arange(n)
    up = step * i.astype(np.float32)
    down = (1.0 - np.float64(step) * (n - 1 - i)).astype(np.float32)
    return np.where(i < n // 2, up, down)


def plane_depths(near: np.ndarray | float, far: np.ndarray | float, num_planes: int) -> np.ndarray:
    """Depths (..., D) float32 equally spaced in disparity, index 0 = far, index D-1 = near."""
    near, far = np.broadcast_arrays(np.asarray(near, np.float32), np.asarray(far, np.float32))
    s = _linspace01(num_planes)
    disparity = (np.float32(1.0) / far)[..., None] * (np.float32(1.0) - s) + (np.float32(1.0) / near)[..., None] * s
    return np.float32(1.0) / disparity
