"""Mesh conditions for the diffusion model (paper sec. 3.2): what the posed face mesh looks like
from a camera, as pixel-aligned maps.

For a camera (K, T_cam_from_head, image size) and the MPI planes of that camera
(`mpi.plane_depths(*mpi.near_far(r), D)`, r = distance camera -> head joint) we rasterise the mesh
(`model/geometry/raster.py`, a torch z-buffer) into:

- a coordinate map (the paper's "UV coordinate map" C^mpi): per pixel the canonical code of the
  visible surface point. The code of a vertex is its position on a fixed reference shape (the
  identity template), each axis normalised to [-1, 1] (`canonical_code`), so a pixel says
  *which* point of the face it sees, independently of pose and expression, like a 3DMM UV map but
  with a third coordinate that tells apart points a 2D unwrap would fold together. Convention:
  the code comes from the *portrait's* template (`canonical_code(track.template)`), for the
  portrait's own map and for every driving frame retargeted onto it, so both name points alike
  (the bounding-box normalisation removes most of the size differences between identities).
  Pixels that see no mesh hold 0 (the middle of the code range, neutral for a convolution) and a
  separate coverage channel (1 on the mesh, 0 off it) tells them apart: `coordinate_map()` is the
  4-channel (code xyz, coverage) tensor the network takes;
- D mesh alpha planes: each covered pixel's surface disparity 1/z is split linearly between the
  two neighbouring MPI planes (plane 0 = far). The split is "over"-consistent: compositing the
  planes back to front gives exactly the coverage, and the expected disparity the MPI renderer
  computes from them equals the surface disparity (clamped to [1/far, 1/near]);
- a mesh disparity map 1/z (0 off the mesh), for the disparity loss.

`reference_input` concatenates the portrait with its own coordinate map (the model's identity
input). Everything is batched over B frames with per-frame cameras.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.geometry import camera, mpi
from model.geometry.raster import rasterize


@dataclass
class MeshConditions:
    """coords (B, 3, H, W) canonical code in [-1, 1], 0 off the mesh; coverage (B, 1, H, W) in {0, 1}
    (fractional with supersampling); alpha (B, D, H, W) mesh alpha planes (index 0 = far);
    disparity (B, 1, H, W) 1/z in 1/metres, 0 off the mesh; depths (B, D) the plane depths used."""

    coords: Tensor
    coverage: Tensor
    alpha: Tensor
    disparity: Tensor
    depths: Tensor

    def coordinate_map(self) -> Tensor:
        """(B, 4, H, W): code xyz and coverage, the pixel-aligned condition C^mpi."""
        return torch.cat([self.coords, self.coverage], 1)


def canonical_code(reference_vertices: Tensor) -> Tensor:
    """Per-vertex code (V, 3) in [-1, 1]: the reference shape (V, 3) with each axis mapped from its
    bounding box onto [-1, 1]. Fixed per vertex, so it names surface points like UV coordinates."""
    lo = reference_vertices.amin(0)
    hi = reference_vertices.amax(0)
    return (2.0 * (reference_vertices - lo) / (hi - lo).clamp(min=1e-9) - 1.0).to(torch.float32)


def mpi_depths(T_cam_from_head: Tensor, num_planes: int) -> Tensor:
    """Plane depths (B, D) of the MPI of each camera: near/far from the head distance (supp. A)."""
    near, far = mpi.near_far(camera.head_distance(T_cam_from_head))
    return mpi.plane_depths(near, far, num_planes).to(T_cam_from_head.device)


def alpha_planes(disparity: Tensor, coverage: Tensor, depths: Tensor) -> Tensor:
    """Bin a disparity map into MPI alpha planes.

    disparity (B, 1, H, W) 1/z; coverage (B, 1, H, W) in [0, 1]; depths (B, D) equally spaced in
    disparity, index 0 = far. Returns alpha (B, D, H, W): a pixel of disparity q between planes k
    and k+1 gets weight w = (q - q_k) / (q_{k+1} - q_k) on the nearer plane k+1; with coverage m the
    nearer plane holds m*w and the farther one m(1-w)/(1-m*w), so that "over" compositing gives m
    and splits it w : (1-w) between the two planes."""
    B, D = depths.shape
    if D < 2:
        return coverage.expand(B, D, *coverage.shape[-2:]).clone()
    q_planes = 1.0 / depths  # (B, D) increasing
    q0 = q_planes[:, :1, None, None]
    step = (q_planes[:, -1:, None, None] - q0) / (D - 1)
    t = ((disparity - q0) / step).clamp(0.0, D - 1)  # (B, 1, H, W) fractional plane index
    # a surface on a plane (up to rounding) goes to that plane alone, not half-opaque onto its neighbour
    t = torch.where((t - t.round()).abs() < 1e-3, t.round(), t)
    k = t.floor().clamp(max=D - 2)
    w = t - k
    m = coverage
    front = m * w
    denom = 1.0 - front
    back = torch.where(denom > 1e-6, m * (1.0 - w) / denom.clamp(min=1e-6), torch.zeros_like(m))
    alpha = torch.zeros(B, D, *disparity.shape[-2:], dtype=disparity.dtype, device=disparity.device)
    k = k.long()
    alpha.scatter_(1, k, back)
    alpha.scatter_add_(1, k + 1, front)
    return alpha


def mesh_conditions(
    vertices_head: Tensor,
    faces: Tensor,
    code: Tensor,
    K: Tensor,
    T_cam_from_head: Tensor,
    hw: tuple[int, int],
    num_planes: int,
    depths: Tensor | None = None,
    supersample: int = 1,
) -> MeshConditions:
    """Rasterise posed meshes into coordinate map, alpha planes and disparity.

    vertices_head (B, V, 3) metres in the head frame; faces (F, 3); code (V, 3) or (B, V, 3) per-vertex
    canonical code (`canonical_code`); K (B, 3, 3) or (3, 3) for an image of size hw = (H, W);
    T_cam_from_head (B, 4, 4); depths (B, D) overrides the MPI planes (default: `mpi_depths`).
    supersample s > 1 rasterises at s x the size and box-filters down (soft, anti-aliased edges)."""
    B = vertices_head.shape[0]
    T = T_cam_from_head.to(vertices_head)
    if depths is None:
        depths = mpi_depths(T, num_planes)
    depths = depths.to(vertices_head)
    K = K.to(vertices_head).expand(B, 3, 3)
    H, W = hw
    s = int(supersample)
    Ks = K
    if s > 1:
        scale = torch.tensor([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]], dtype=K.dtype, device=K.device)
        Ks = scale @ K
    verts_cam = camera.apply_pose(vertices_head, T)
    frags = rasterize(verts_cam, faces, Ks, (H * s, W * s))
    coverage = frags.coverage
    coords = frags.interpolate(code, faces)
    disparity = frags.disparity.unsqueeze(1)
    alpha = alpha_planes(disparity, coverage, depths)
    if s > 1:
        pool = torch.nn.functional.avg_pool2d
        cov = pool(coverage, s)
        # colour-like maps are averaged over covered samples only, so edges keep their values
        coords = pool(coords, s) / cov.clamp(min=1e-6) * (cov > 0)
        disparity = pool(disparity, s) / cov.clamp(min=1e-6) * (cov > 0)
        alpha = pool(alpha, s)
        coverage = cov
    return MeshConditions(coords=coords, coverage=coverage, alpha=alpha, disparity=disparity, depths=depths)


def reference_input(portrait: Tensor, conditions: MeshConditions) -> Tensor:
    """The identity input (B, 7, H, W): portrait (B, 3, H, W) in [-1, 1] and its coordinate map."""
    return torch.cat([portrait, conditions.coordinate_map().to(portrait)], 1)
