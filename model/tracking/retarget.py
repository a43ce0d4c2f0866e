"""Cross-identity driving: the portrait's identity with the driver's expressions and head poses."""
from __future__ import annotations

import numpy as np

from model.tracking.track import Track


def retarget(portrait: Track, driver: Track) -> tuple[np.ndarray, np.ndarray]:
    """(vertices_head (N, 478, 3), T_cam_from_head (N, 4, 4)), float32, N = len(driver).

    The portrait's neutral template plus the driver's per-frame expression offsets (both in their
    metric head frames, whose scale is the same eye-distance prior, so offsets transfer), posed by
    the driver's head poses. Self-driving (portrait is driver) gives back the driver's own mesh."""
    vertices = portrait.template[None].astype(np.float32) + driver.expression.astype(np.float32)
    return vertices, driver.T_cam_from_head.astype(np.float32).copy()
