"""The torch-free twins of the clip conditions: `model.geometry.conditions` (canonical code, mesh
alpha planes), the plane depths and plane warp of `model.geometry.mpi`, `model.diffusion.pipeline
.mesh_inputs` and `model.geometry.portrait_warp.portrait_warp` (the identity condition), in NumPy
and kept equal to them by tests/test_coldstart_conditions.py, so that the viewer's worker can make
a clip without importing torch.

Each function does the torch original's float32 operations in the same order; where torch's CPU
kernels fuse a multiply-add (vector norms, the upper half of `linspace`) the twin rounds the same
way through float64. What stays different: matrix inverses (LAPACK's float32 routines of NumPy and
torch differ in the last bits), which move the identity condition's plane warp by ~1e-5 px.
Shapes as in the torch modules; every array is float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.coldstart.raster import Fragments, apply_matrix, rasterize
from model.geometry import continuation
from model.geometry.crop_camera import crop_camera_K
from model.geometry.mpi_planes import near_far, plane_depths
from model.geometry.pull_push import fill_in
from model.net.config import ModelConfig
from model.tracking.facemesh import CHIN, NOSE_BRIDGE, mesh_faces, mouth_faces

# the same constants as the torch modules (tests check they agree)
GRAZING_COS = (0.15, 0.45)  # model.geometry.portrait_warp
DEPTH_TOLERANCE = 0.01
NECK_BAND = 0.04
NECK_SIDE = 0.5
SHOULDER_RISE = 0.5
NECK_BEHIND = 0.5
SEAM_LEVELS = 2
HAIR_LEAN = 0.45
EYES_ABOVE_JOINT = 0.03
RASTER_CHUNK = 8  # frames per rasteriser call, as model.diffusion.pipeline.RASTER_CHUNK (bounds memory)

_f32 = np.float32


# ------------------------------------------------------------------------------- small float32 maths

def vector_norm(v: np.ndarray, fused: bool = True) -> np.ndarray:
    """Euclidean norm (...) over the last axis of v (..., n) as torch's CPU kernel rounds it: over
    contiguous rows a fused multiply-add chain x0^2 -> + x1^2 -> + x2^2 (emulated in float64: the
    products are exact); over strided rows (fused=False, e.g. the translation column of 4x4 poses)
    plain float32 squares summed in order."""
    if not fused:
        sq = v * v
        acc = sq[..., 0]
        for k in range(1, v.shape[-1]):
            acc = acc + sq[..., k]
        return np.sqrt(acc)
    v64 = v.astype(np.float64)
    acc = v[..., 0] * v[..., 0]
    for k in range(1, v.shape[-1]):
        acc = (v64[..., k] * v64[..., k] + acc).astype(_f32)
    return np.sqrt(acc)


def normalize(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """v (..., n) divided by its norm over the last axis (at least eps): F.normalize(v, dim=-1)."""
    return v / np.maximum(vector_norm(v), _f32(eps))[..., None]


def _inverse(M: np.ndarray) -> np.ndarray:
    """(..., k, k) float32 inverse (LAPACK's float32 rounding differs from torch's in the last bits)."""
    return np.linalg.inv(M).astype(_f32)


# --------------------------------------------------------------------------- model.geometry.mpi twins

def mpi_depths(T_cam_from_head: np.ndarray, num_planes: int) -> np.ndarray:
    """Plane depths (B, D) of the MPI of each camera (B, 4, 4): near/far from the head distance."""
    # torch takes the norm of a strided column here: its unfused kernel
    return plane_depths(*near_far(vector_norm(T_cam_from_head[..., :3, 3], fused=False)), num_planes)


def pixel_grid(h: int, w: int) -> np.ndarray:
    """(h, w, 3) homogeneous pixel centres (x, y, 1), pixel centres at integers."""
    ys, xs = np.meshgrid(np.arange(h, dtype=_f32), np.arange(w, dtype=_f32), indexing="ij")
    return np.stack([xs, ys, np.ones_like(xs)], -1)


def padded_table(image: np.ndarray) -> np.ndarray:
    """(C, (h + 2) (w + 2)) of image (C, h, w): zero-bordered and flattened for `sample_bilinear`.
    The zero border makes "zeros padding" a plain gather: every corner outside the image is clamped
    onto the border (0 * weight adds nothing, as torch's masked corners do)."""
    return np.ascontiguousarray(np.pad(image, [(0, 0), (1, 1), (1, 1)]).reshape(image.shape[0], -1))


def sample_bilinear(table: np.ndarray, hw: tuple[int, int], gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Bilinear samples (C, ...) of an image (C, h, w) given as its `padded_table`, at normalised
    positions gx, gy (...) in [-1, 1]: F.grid_sample(mode="bilinear", padding_mode="zeros",
    align_corners=False) with torch's CPU kernel's roundings (un-normalise as (g + 1) * size / 2 -
    0.5, corner weights from the distances to the floor, corners summed nw, ne, sw, se)."""
    h, w = hw
    ix = (gx + _f32(1.0)) * _f32(w / 2) - _f32(0.5)
    iy = (gy + _f32(1.0)) * _f32(h / 2) - _f32(0.5)
    x0, y0 = np.floor(ix), np.floor(iy)
    wx = ix - x0
    ex = _f32(1.0) - wx
    ny = iy - y0
    sy = _f32(1.0) - ny
    xs = [np.clip(x0 + dx, -1, w).astype(np.int64) + 1 for dx in (0, 1)]
    ys = [np.clip(y0 + dy, -1, h).astype(np.int64) + 1 for dy in (0, 1)]
    out = None
    for dx, dy, weight in ((0, 0, sy * ex), (1, 0, sy * wx), (0, 1, ny * ex), (1, 1, ny * wx)):  # nw, ne, sw, se
        # np.take of single floats per channel is several times faster than fancy indexing
        term = np.take(table, ys[dy] * (w + 2) + xs[dx], axis=1) * weight
        out = term if out is None else out + term
    return out


def head_proxy_positions(K: np.ndarray, T_portrait: np.ndarray, T_mpi_from_head: np.ndarray, hw: tuple[int, int],
                         lean: float = HAIR_LEAN) -> np.ndarray:
    """Portrait pixel positions (n, 2, H, W) of what each MPI pixel sees on the head's proxy surface
    (model.geometry.portrait_warp.head_proxy_positions): the upright plane through the kink (the
    joint's depth, the eyes' height) below it, the plane leaning towards the camera above it."""
    n = T_mpi_from_head.shape[0]
    h, w = hw
    rays = pixel_grid(h, w).reshape(h * w, 3) @ _inverse(np.asarray(K, _f32)).T  # (P, 3)
    T_pm = np.asarray(T_portrait, _f32) @ _inverse(np.asarray(T_mpi_from_head, _f32))  # (n, 4, 4)
    d = rays @ T_pm[:, :3, :3].transpose(0, 2, 1)  # (n, P, 3) (a batched matmul: einsum took 30x as long)
    o = T_pm[:, None, :3, 3]  # (n, 1, 3)
    kink = T_portrait[:3, :3] @ np.array([0.0, -EYES_ABOVE_JOINT, 0.0], _f32) + T_portrait[:3, 3]

    def along(z_of_y: float) -> np.ndarray:
        k = _f32(z_of_y)
        denom = d[..., 2] - k * d[..., 1]
        return (kink[2] - k * kink[1] - (o[..., 2] - k * o[..., 1])) / np.where(np.abs(denom) > _f32(1e-9), denom, _f32(1e-9))

    upright, leaning = along(0.0), along(lean)
    above = (o[..., 1] + leaning * d[..., 1] < kink[1]) & (leaning > 0)
    X = o + np.where(above, leaning, upright)[..., None] * d
    z = X[..., 2:3]
    ahead = z > _f32(1e-8)
    uv = (X @ np.asarray(K, _f32).T)[..., :2] / np.where(ahead, z, _f32(1.0))
    xy = np.where(ahead, uv, _f32(-4.0 * max(hw)))
    return xy.reshape(n, h, w, 2).transpose(0, 3, 1, 2).astype(_f32)


# ------------------------------------------------------------------- model.geometry.conditions twins

def canonical_code(template: np.ndarray) -> np.ndarray:
    """Per-vertex code (V, 3) in [-1, 1]: the reference shape (V, 3) with each axis mapped from its
    bounding box onto [-1, 1] (model.data.pairs.mesh_code of an identity template)."""
    v = np.asarray(template, _f32)
    lo, hi = v.min(0), v.max(0)
    return (_f32(2.0) * (v - lo) / np.maximum(hi - lo, _f32(1e-9)) - _f32(1.0)).astype(_f32)


def alpha_planes(disparity: np.ndarray, coverage: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Bin a disparity map (B, 1, H, W) with coverage (B, 1, H, W) into MPI alpha planes (B, D, H, W)
    at depths (B, D) (index 0 = far): the surface's 1/z split linearly between the two neighbouring
    planes, "over"-consistent (see model.geometry.conditions.alpha_planes)."""
    B, D = depths.shape
    if D < 2:
        return np.broadcast_to(coverage, (B, D, *coverage.shape[-2:])).copy()
    q_planes = _f32(1.0) / depths  # (B, D) increasing
    q0 = q_planes[:, :1, None, None]
    step = (q_planes[:, -1:, None, None] - q0) / _f32(D - 1)
    t = np.clip((disparity - q0) / step, _f32(0.0), _f32(D - 1))  # (B, 1, H, W) fractional plane index
    # a surface on a plane (up to rounding) goes to that plane alone, not half-opaque onto its neighbour
    t = np.where(np.abs(t - np.round(t)) < _f32(1e-3), np.round(t), t)
    k = np.minimum(np.floor(t), _f32(D - 2))
    w = t - k
    m = coverage
    front = m * w
    denom = _f32(1.0) - front
    back = np.where(denom > _f32(1e-6), m * (_f32(1.0) - w) / np.maximum(denom, _f32(1e-6)), _f32(0.0))
    k = k.astype(np.int64)
    # torch scatters back onto plane k and adds front onto plane k + 1 (of zeros): the same values
    alpha = np.zeros((B, D, *disparity.shape[-2:]), _f32)
    np.put_along_axis(alpha, k, back.astype(_f32), axis=1)
    np.put_along_axis(alpha, k + 1, (front + _f32(0.0)).astype(_f32), axis=1)
    return alpha


def coordinate_channels(coords: np.ndarray, coverage: np.ndarray, channels: int) -> np.ndarray:
    """The network's coordinate input (..., channels, H, W): code alone (3) or code + coverage (4)."""
    if channels == 3:
        return coords
    if channels == 4:
        return np.concatenate([coords, coverage], -3)
    raise ValueError(f"coord_channels must be 3 or 4, got {channels}")


def pose(vertices: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Vertices (..., V, 3) moved by rigid transforms T (..., 4, 4): vertices @ R^T + t (model.geometry.camera.apply_pose)."""
    return apply_matrix(vertices, T[..., :3, :3]) + T[..., None, :3, 3]


def mesh_inputs(vertices_head: np.ndarray, T_cam_from_head: np.ndarray, code: np.ndarray, cfg: ModelConfig,
                K: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords (n, Cc, R, R), mesh alpha (n, D, R, R), plane depths (n, D)) of n posed meshes seen by
    the MPI camera K (default: the crop camera at cfg.res), each frame's planes between its own
    near / far: model.diffusion.pipeline.mesh_inputs. vertices_head (n, 478, 3) head frame, metres;
    T_cam_from_head (n, 4, 4); code (478, 3) from `canonical_code` of the identity template."""
    return clip_conditions(vertices_head, T_cam_from_head, code, cfg, None, K)[:3]


def clip_conditions(vertices_head: np.ndarray, T_cam_from_head: np.ndarray, code: np.ndarray, cfg: ModelConfig,
                    side: "PortraitSide | None", K: np.ndarray | None = None, torso_shift: np.ndarray | None = None,
                    hair_poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """`mesh_inputs` and, with the portrait's `side`, the identity condition (n, 5, R, R) of the same
    frames (else None; its body moved by torso_shift (n, 2), its hair following hair_poses (n, 4, 4)),
    from one rasterisation of the driving
    meshes: the torch pipeline rasterises them twice, into the same fragments (same poses, camera
    and size)."""
    verts = np.asarray(vertices_head, _f32)
    T = np.asarray(T_cam_from_head, _f32)
    K = crop_camera_K(cfg.res).astype(_f32) if K is None else np.asarray(K, _f32)
    code = np.asarray(code, _f32)
    faces = mesh_faces().astype(np.int64)
    R = cfg.res
    coords, alpha, depths, identity = [], [], [], []
    for i in range(0, len(verts), RASTER_CHUNK):
        chunk = slice(i, i + RASTER_CHUNK)
        Tc = T[chunk]
        d = mpi_depths(Tc, cfg.planes)
        frags = rasterize(pose(verts[chunk], Tc), faces, K, (R, R))
        coverage = frags.coverage
        coords.append(coordinate_channels(frags.interpolate(code, faces), coverage, cfg.coord_channels))
        alpha.append(alpha_planes(frags.disparity[:, None], coverage, d))
        depths.append(d)
        if side is not None:
            identity.append(identity_of(side, frags, Tc, None if torso_shift is None else torso_shift[chunk],
                                        None if hair_poses is None else hair_poses[chunk]))
    return (np.concatenate(coords), np.concatenate(alpha), np.concatenate(depths),
            np.concatenate(identity) if side is not None else None)


# ------------------------------------------------------------- model.geometry.portrait_warp twins

def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (V, 3) of a mesh (V, 3) with faces (F, 3) wound counter-clockwise as seen from
    the side the normals point to (area-weighted face normals summed per vertex, in face order)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    n_face = np.cross(b - a, c - a)
    n = np.zeros_like(vertices)
    np.add.at(n, faces.reshape(-1), np.repeat(n_face, 3, 0))  # sequential, like torch's index_add_
    return normalize(n)


def portrait_vertex_samples(vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray,
                            hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where the portrait shows each vertex of its own mesh (pixel positions (V, 2)), and how well
    (confidence (V,) in [0, 1]: 0 hidden by its own surface, outside the image or edge-on).
    vertices_cam (V, 3) the portrait's mesh in its camera; faces (F, 3); K (3, 3); hw its size."""
    H, W = hw
    z = np.maximum(vertices_cam[:, 2], _f32(1e-3))
    uv = apply_matrix(vertices_cam, K)[:, :2] / z[:, None]
    zbuf = rasterize(vertices_cam[None], faces, K, hw).disparity[0]  # (H, W) 1/z of the nearest surface
    px = np.round(uv).astype(np.int64)
    inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
    nearest = zbuf[np.clip(px[:, 1], 0, H - 1), np.clip(px[:, 0], 0, W - 1)]
    visible = (_f32(1.0) / z) >= nearest * _f32(1.0 - DEPTH_TOLERANCE)
    # faces are wound so that normals point towards the camera: cos of the view angle = -n . ray
    n = vertex_normals(vertices_cam, faces)
    prod = n * normalize(vertices_cam)
    cos = -((prod[:, 0] + prod[:, 1]) + prod[:, 2])
    lo, hi = GRAZING_COS
    facing = np.clip((cos - _f32(lo)) / _f32(hi - lo), _f32(0.0), _f32(1.0))
    return uv, facing * (visible & inside).astype(_f32)


def _chin_frame(bridge: np.ndarray, chin: np.ndarray, hw: tuple[int, int]):
    """model.geometry.portrait_warp._chin_frame: (along, across, down, length, xs, ys)."""
    H, W = hw
    down = normalize(chin - bridge)
    length = vector_norm(chin - bridge)
    ys, xs = np.meshgrid(np.arange(H, dtype=_f32), np.arange(W, dtype=_f32), indexing="ij")
    along = (xs - chin[0]) * down[0] + (ys - chin[1]) * down[1]
    across = (ys - chin[1]) * down[0] - (xs - chin[0]) * down[1]
    return along, across, down, length, xs, ys


def body_weight(bridge: np.ndarray, chin: np.ndarray, band_px: float, hw: tuple[int, int]) -> np.ndarray:
    """(1, H, W) in [0, 1]: how much each portrait pixel belongs to the body rather than the head:
    0 above the chin, rising to 1 `band_px` pixels below it along the face's down direction
    (bridge -> chin, pixels (2,)); beside the neck (NECK_SIDE) from SHOULDER_RISE above the chin."""
    along, across, _, length, _, _ = _chin_frame(bridge, chin, hw)
    band = _f32(band_px)
    below = np.clip(along / band, _f32(0.0), _f32(1.0))
    beside = np.clip((np.abs(across) - _f32(NECK_SIDE) * length) / band, _f32(0.0), _f32(1.0)) * \
        np.clip((along + _f32(SHOULDER_RISE) * length) / band, _f32(0.0), _f32(1.0))
    return np.maximum(below, beside)[None]


def body_layer(rgba: np.ndarray, body: np.ndarray, bridge: np.ndarray, chin: np.ndarray,
               band_px: float) -> tuple[np.ndarray, np.ndarray]:
    """model.geometry.portrait_warp.body_layer: the body's layer (4, H, W) under the head and its
    opacity (1, H, W); the neck whole below the chin, its top row run on up behind it."""
    hw = rgba.shape[-2:]
    along, across, down, length, xs, ys = _chin_frame(bridge, chin, hw)
    band = _f32(band_px)
    column = _f32(1.0) - np.clip((np.abs(across) - _f32(NECK_SIDE) * length) / band, _f32(0.0), _f32(1.0))
    under = np.maximum(np.sqrt(body[0]), column * (along >= 0).astype(_f32))
    hidden = (along < 0) & (rgba[3] > 0) & (body[0] == 0)
    behind = column * np.clip((along + _f32(NECK_BEHIND) * length) / band, _f32(0.0), _f32(1.0)) * hidden.astype(_f32)
    step = _f32(1.0) - along
    top = sample_bilinear(padded_table(rgba), hw, *pixel_positions(np.stack([xs + step * down[0], ys + step * down[1]]), hw))
    return np.where(hidden, top * behind, rgba * under), under[None]


def pixel_positions(uv: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised positions (gx, gy) of pixel positions uv (2, ...) in an image of size hw (pixel
    centres at integers), as torch's warp normalises them for grid_sample."""
    h, w = hw
    return (_f32(2.0) * uv[0] + _f32(1.0)) / _f32(w) - _f32(1.0), (_f32(2.0) * uv[1] + _f32(1.0)) / _f32(h) - _f32(1.0)


@dataclass(frozen=True)
class PortraitSide:
    """What the identity condition takes from the portrait alone, made once per portrait
    (`portrait_side`) and used for every clip (`identity_of`)."""

    colours: np.ndarray  # padded_table of the portrait (3, h, w) in [-1, 1]
    head: np.ndarray  # padded_table of its matted RGBA above the neck and its share of the person: moves with the head
    torso: np.ndarray  # (4, h, w) its matted RGBA below the neck (body_layer): under the head, moved by the torso
    vertex_attrs: np.ndarray  # (V, 3): each vertex's pixel position in the portrait and its confidence
    T_portrait: np.ndarray  # (4, 4) its head in its camera
    K: np.ndarray  # (3, 3) its camera, the MPI camera's intrinsics too
    hw: tuple[int, int]


def portrait_side(portrait: np.ndarray, matte: np.ndarray, portrait_vertices_head: np.ndarray,
                  T_portrait: np.ndarray, K: np.ndarray) -> PortraitSide:
    """The portrait's part of model.geometry.portrait_warp.portrait_warp: portrait (3, h, w) in
    [-1, 1], matte (1, h, w), its own mesh (V, 3) in its head frame at T_portrait (4, 4), camera K."""
    portrait, matte = np.asarray(portrait, _f32), np.asarray(matte, _f32)
    hp = tuple(portrait.shape[-2:])
    K = np.asarray(K, _f32)
    T_p = np.asarray(T_portrait, _f32)
    pv_cam = pose(np.asarray(portrait_vertices_head, _f32), T_p)
    uv_p, conf_v = portrait_vertex_samples(pv_cam, mesh_faces().astype(np.int64), K, hp)
    # the rest of the person: above the chin on the head's proxy surface (head_proxy_positions),
    # moved rigidly with the head; below it where it is in the portrait
    band = float(K[0, 0]) * NECK_BAND / float(pv_cam[CHIN, 2])
    body = body_weight(uv_p[NOSE_BRIDGE], uv_p[CHIN], band, hp)
    rgba = np.concatenate([portrait * matte, matte], 0)
    # the body under the head, which covers it by the rest (portrait_warp)
    layer, under = body_layer(rgba, body, uv_p[NOSE_BRIDGE], uv_p[CHIN], band)
    cover = (_f32(1.0) - body / np.maximum(under, _f32(1e-6))) * (matte > 0).astype(_f32)
    return PortraitSide(padded_table(portrait), padded_table(np.concatenate([rgba * (_f32(1.0) - body), cover], 0)),
                        layer,
                        np.concatenate([uv_p, conf_v[:, None]], -1), T_p, K, hp)


def identity_of(side: PortraitSide, frags: Fragments, T_mpi_from_head: np.ndarray,
                torso_shift: np.ndarray | None = None, hair_poses: np.ndarray | None = None) -> np.ndarray:
    """The identity condition (n, 5, H, W) of n driving frames whose posed meshes (at T_mpi_from_head
    (n, 4, 4) in the MPI camera) were rasterised into `frags` (n, H, W) with the portrait's K, the
    body moved by torso_shift (n, 2) (fractions of the image; None: it stays), the hair following
    hair_poses (n, 4, 4) (None: T_mpi_from_head).

    The portrait is sampled only where its samples are kept (its colours on the mesh outside the
    mouth, its head plane off the mesh): the other pixels multiply them by 0, so the result is
    portrait_warp's, at half the gathers."""
    n, H, W = frags.face.shape
    hw = (H, W)
    if side.hw != hw:
        # torch resizes the body part with F.interpolate; the MPI camera is the portrait's crop camera
        raise NotImplementedError(f"portrait size {side.hw} differs from the MPI camera's {hw}")
    faces = mesh_faces().astype(np.int64)
    attrs = frags.interpolate(side.vertex_attrs, faces)  # (n, 3, H, W)
    cov = frags.coverage
    mouth = (mouth_faces()[np.maximum(frags.face, 0)] & (frags.face >= 0))[:, None]
    mouth_px = mouth.astype(_f32)
    on = np.nonzero((cov[:, 0] > 0) & ~mouth[:, 0])  # (frame, y, x) of the mesh pixels shown in colour
    samples = np.zeros((3, n, H, W), _f32)
    samples[:, on[0], on[1], on[2]] = sample_bilinear(side.colours, hw, *pixel_positions(attrs[on[0], :2, on[1], on[2]].T, hw))
    mesh_rgb = samples.transpose(1, 0, 2, 3) * cov * (_f32(1.0) - mouth_px) - mouth_px  # black inside the mouth
    mesh_conf = attrs[:, 2:3] * cov * (_f32(1.0) - mouth_px)

    T_hair = T_mpi_from_head if hair_poses is None else hair_poses
    proxy_uv = head_proxy_positions(side.K, side.T_portrait, np.asarray(T_hair, _f32), hw)
    # near the mesh the proxy's sampling positions continue the mesh's (portrait_warp.seam_shift)
    uv = proxy_uv + fill_in((attrs[:, :2] - proxy_uv) * cov, cov, SEAM_LEVELS)
    head = np.zeros((n, 5, H * W), _f32)
    for i in range(n):
        off = np.flatnonzero(cov[i, 0].reshape(-1) == 0)
        head[i][:, off] = sample_bilinear(side.head, side.hw, *pixel_positions(uv[i].reshape(2, -1)[:, off], side.hw))
    head = head.reshape(n, 5, H, W)
    fg = head[:, :4] + (_f32(1.0) - head[:, 4:]) * moved_torso(side.torso, torso_shift)  # the body under the head
    fg = fg / np.maximum(fg[:, 3:], _f32(1.0))
    off_mesh = _f32(1.0) - cov
    rgb = mesh_rgb + off_mesh * fg[:, :3]
    alpha = cov + off_mesh * fg[:, 3:]
    return np.concatenate([rgb, alpha, mesh_conf], 1)


def moved_torso(torso: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """model.geometry.portrait_warp.moved_torso at the portrait's own size: torso (C, H, W) moved by
    shift (n, 2) (fractions of the image; None or zeros: (1, C, H, W) as it is), its side pixels
    continued past the image's sides, its bottom row blurred the more past its bottom."""
    if shift is None or not np.any(shift):
        return torso[None]
    C, H, W = torso.shape
    shift = np.asarray(shift, _f32)
    ys, xs = np.meshgrid(np.arange(H, dtype=_f32), np.arange(W, dtype=_f32), indexing="ij")
    u = np.clip(xs[None] - shift[:, 0, None, None] * _f32(W), _f32(0.0), _f32(W - 1))
    v_at = ys[None] - shift[:, 1, None, None] * _f32(H)
    out = sample_bilinear(padded_table(torso), (H, W), *pixel_positions(np.stack([u, np.clip(v_at, _f32(0.0), _f32(H - 1))]), (H, W)))
    past = np.maximum(v_at - _f32(H - 1), _f32(0.0))
    if not np.any(past > 0):
        return out.transpose(1, 0, 2, 3)
    levels = [s * W / 128.0 for s in continuation.SPREAD_LEVELS]
    rows = continuation.blur_levels(torso[:, -1], levels)  # (C, L, W)
    pos = np.zeros_like(past)
    for a, b in zip(levels[:-1], levels[1:]):
        pos = pos + np.clip((_f32(continuation.SPREAD) * past - _f32(a)) / _f32(b - a), _f32(0.0), _f32(1.0))
    below = sample_bilinear(padded_table(rows), rows.shape[1:], *pixel_positions(np.stack([u, pos]), rows.shape[1:]))
    return np.where(past[None] > 0, below, out).transpose(1, 0, 2, 3)


def identity(portrait: np.ndarray, matte: np.ndarray, portrait_vertices_head: np.ndarray, T_portrait: np.ndarray,
             vertices_head: np.ndarray, T_mpi_from_head: np.ndarray, K: np.ndarray, hw: tuple[int, int],
             torso_shift: np.ndarray | None = None, hair_poses: np.ndarray | None = None) -> np.ndarray:
    """The identity condition (n, 5, H, W) of n driving frames: model.geometry.portrait_warp.portrait_warp
    for MediaPipe's face mesh. portrait (3, h, w) in [-1, 1] and matte (1, h, w) seen by camera K
    (3, 3) with the head at T_portrait (4, 4); portrait_vertices_head (V, 3) its own mesh in its head
    frame; vertices_head (n, V, 3) the driving meshes posed at T_mpi_from_head (n, 4, 4) in the MPI
    camera (intrinsics K, size hw); torso_shift (n, 2) or None: the body's motion; hair_poses
    (n, 4, 4) or None: the poses the hair follows. Channels:
    premultiplied RGB, alpha, mesh confidence."""
    side = portrait_side(portrait, matte, portrait_vertices_head, T_portrait, K)
    T = np.asarray(T_mpi_from_head, _f32)
    frags = rasterize(pose(np.asarray(vertices_head, _f32), T), mesh_faces().astype(np.int64), side.K, hw)
    return identity_of(side, frags, T, torso_shift, hair_poses)
