"""The default square crop camera without torch: dataset preparation's worker processes track,
crop and matte with NumPy, OpenCV and MediaPipe only, and importing torch (about 1.4 s) would be
most of a spawned worker's start-up. `model.geometry.camera.crop_intrinsics` is this matrix as a
tensor."""
from __future__ import annotations

import numpy as np

DEFAULT_FOCAL_FACTOR = 2.5  # f = 2.5 * S: a head filling ~60 % of the crop sits about 1 m away


def crop_camera_K(size: int, focal_factor: float = DEFAULT_FOCAL_FACTOR) -> np.ndarray:
    """K (3, 3) float64 of the default S-pixel square crop camera: f = focal_factor * size, principal
    point at the centre (size - 1) / 2 (pixel centres at integer coordinates)."""
    f, c = focal_factor * size, (size - 1) / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
