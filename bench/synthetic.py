"""Synthetic MPI frames for tests and benchmarks: a head-like MPI and a random one.

`head_mpi` ray-casts a few ellipsoids (head, neck, shoulders) from the default crop camera and puts
each pixel's surface into the two planes that straddle its disparity (the back one opaque, the
front one with the fractional part), so alpha sits in a few planes per pixel like a trained model's
output; the silhouette is anti-aliased by supersampling. `random_mpi` has random alpha everywhere,
the worst case for a renderer that skips empty space.
"""
from __future__ import annotations

import numpy as np

from model.geometry import camera, mpi
from model.formats.clip import MPIFrame

HEAD_DISTANCE = 1.0  # metres from the MPI camera to the head joint (DESIGN: ~1 m for a 60 % head)

# (centre xyz in the head frame, semi-axes xyz), metres; OpenCV axes: y down, z away from the camera
_ELLIPSOIDS = (
    ((0.0, -0.03, 0.0), (0.080, 0.105, 0.095)),  # cranium + face
    ((0.0, 0.09, 0.01), (0.045, 0.08, 0.045)),  # neck
    ((0.0, 0.20, 0.04), (0.20, 0.07, 0.09)),  # shoulders
)


def default_camera(size: int, distance: float = HEAD_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3), T_cam_from_head (4, 4)) of the default crop camera looking at the head joint."""
    K = camera.crop_intrinsics(size).numpy()
    T = np.eye(4, dtype=np.float32)
    T[2, 3] = distance
    return K, T


def _surface_depth(K: np.ndarray, T_cam_from_head: np.ndarray, h: int, w: int, supersample: int) -> np.ndarray:
    """Depth (h*s, w*s) along the optical axis of the nearest ellipsoid hit, inf where none."""
    s = supersample
    ys, xs = np.meshgrid((np.arange(h * s) + 0.5) / s - 0.5, (np.arange(w * s) + 0.5) / s - 0.5, indexing="ij")
    rays = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)  # z = 1
    head_in_cam = T_cam_from_head[:3, 3].astype(np.float64)
    depth = np.full(xs.shape, np.inf)
    for centre, axes in _ELLIPSOIDS:
        c = head_in_cam + T_cam_from_head[:3, :3].astype(np.float64) @ np.asarray(centre)
        inv = 1.0 / np.asarray(axes)  # axis-aligned in the camera frame (head faces the camera)
        d = rays * inv
        o = -c * inv
        a = (d * d).sum(-1)
        b = 2.0 * (d * o).sum(-1)
        cc = (o * o).sum() - 1.0
        disc = b * b - 4.0 * a * cc
        hit = disc >= 0.0
        t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a), np.inf)
        depth = np.minimum(depth, np.where(t > 0.0, t, np.inf))
    return depth


def _texture(h: int, w: int, rng: np.random.Generator, base: tuple[float, float, float], amount: float) -> np.ndarray:
    """(3, h, w) float in [0, 1]: a base colour with smooth blotches and fine noise."""
    ys, xs = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((3, h, w))
    for ch in range(3):
        fx, fy, ph = rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(0, 2 * np.pi)
        smooth = np.sin(2 * np.pi * fx * xs + ph) * np.cos(2 * np.pi * fy * ys)
        out[ch] = base[ch] + amount * (0.6 * smooth + 0.4 * rng.standard_normal((h, w)))
    return np.clip(out, 0.0, 1.0)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def head_mpi(size: int = 512, num_planes: int = 24, seed: int = 0, supersample: int = 2) -> MPIFrame:
    """A head-and-shoulders MPI (size x size, num_planes) in the default crop camera, with background."""
    if size < 8 or num_planes < 2:
        raise ValueError(f"head_mpi needs size >= 8 and num_planes >= 2, got {size} and {num_planes}")
    rng = np.random.default_rng(seed)
    K, T = default_camera(size)
    near, far = (float(v) for v in mpi.near_far(HEAD_DISTANCE))
    disparities = 1.0 / mpi.plane_depths(near, far, num_planes).numpy().astype(np.float64)  # increasing
    depth = _surface_depth(K, T, size, size, supersample)
    disp = np.where(np.isfinite(depth), 1.0 / depth, 0.0)
    inside = np.isfinite(depth)
    # plane k just behind the surface (disparity <= surface), k + 1 just in front
    k = np.clip(np.searchsorted(disparities, disp, side="right") - 1, 0, num_planes - 1)
    k1 = np.minimum(k + 1, num_planes - 1)
    step = disparities[k1] - disparities[k]
    frac = np.where(step > 0, np.clip((disp - disparities[k]) / np.where(step > 0, step, 1.0), 0.0, 1.0), 0.0)
    hi = size * supersample
    alpha = np.zeros((num_planes, hi, hi))
    rows, cols = np.nonzero(inside)
    alpha[k[rows, cols], rows, cols] = 1.0
    front = k1[rows, cols] != k[rows, cols]
    alpha[k1[rows, cols][front], rows[front], cols[front]] = frac[rows, cols][front]
    # box-filter the supersamples: anti-aliased silhouette and soft plane transitions
    alpha = alpha.reshape(num_planes, size, supersample, size, supersample).mean((2, 4))
    skin = _texture(size, size, rng, (0.80, 0.60, 0.50), 0.12)
    shade = np.clip(disp.reshape(size, supersample, size, supersample).mean((1, 3)) * HEAD_DISTANCE, 0.0, 1.2)
    frontal = np.clip(skin * (0.55 + 0.45 * shade)[None], 0.0, 1.0)
    residual = _texture(size, size, rng, (0.35, 0.25, 0.22), 0.10)  # what the frontal view hides
    background = _texture(size, size, rng, (0.30, 0.45, 0.60), 0.20)
    return MPIFrame(
        frontal=_to_u8(frontal), residual=_to_u8(residual), alpha=_to_u8(alpha), K=K, T_cam_from_head=T,
        near=near, far=far, background=_to_u8(background),
    )


def random_mpi(size: int | tuple[int, int] = 512, num_planes: int = 24, seed: int = 0, background: bool = True) -> MPIFrame:
    """An MPI of uniform random colours and alpha on every plane (no empty space), size = S or (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    K = camera.intrinsics(2.5 * w, 2.5 * w, (w - 1) / 2.0, (h - 1) / 2.0).numpy()
    _, T = default_camera(w)
    near, far = (float(v) for v in mpi.near_far(HEAD_DISTANCE))
    u8 = lambda *shape: rng.integers(0, 256, size=shape, dtype=np.uint8)  # noqa: E731
    return MPIFrame(
        frontal=u8(3, h, w), residual=u8(3, h, w), alpha=u8(num_planes, h, w), K=K, T_cam_from_head=T,
        near=near, far=far, background=u8(3, h, w) if background else None,
    )
