"""The torch-free twin of `model/geometry/raster.py`: the same batched z-buffer triangle rasteriser in
NumPy, kept equal to it by tests/test_coldstart_conditions.py, so that the viewer's worker can make a
clip without importing torch.

Same algorithm and the same float32 operations in the same order (bucketed bounding boxes, edge
functions, screen-space disparity, perspective-correct barycentrics); only the z-buffer differs in
how, not in what: instead of torch's `scatter_reduce(amax)` followed by a last-write-wins scatter
of the winners, the candidates are sorted by (pixel, disparity) with a stable sort and the last one
of each pixel is taken. That is the same winner, ties included (the last candidate in candidate
order among those of the largest disparity), and faster than `np.maximum.at`.

The two tolerances are the torch module's (this one must not import it; a test checks they agree).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EDGE_EPS = 1e-5  # pixel centres this close outside an edge still count: no cracks from rounding
MIN_DEPTH = 1e-3  # triangles with a vertex closer than this (or behind the camera) are dropped


@dataclass
class Fragments:
    """The nearest surface per pixel. face (B, H, W) int64, -1 where no triangle covers the pixel;
    bary (B, H, W, 3) float32 perspective-correct barycentrics of that face (0 where empty);
    disparity (B, H, W) float32 1/z in 1/metres (0 where empty)."""

    face: np.ndarray
    bary: np.ndarray
    disparity: np.ndarray

    @property
    def coverage(self) -> np.ndarray:
        """(B, 1, H, W) float32: 1 where a triangle is visible."""
        return (self.face >= 0).astype(np.float32)[:, None]

    def interpolate(self, attributes: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Per-pixel attributes (B, C, H, W) float32 from per-vertex ones (V, C) or (B, V, C); 0 where empty."""
        B, H, W = self.face.shape
        attributes = np.asarray(attributes, np.float32)
        C = attributes.shape[-1]
        face = self.face.reshape(-1)
        hit = np.flatnonzero(face >= 0)  # only covered pixels do any work
        corner = np.asarray(faces, np.int64)[face[hit]]  # (n, 3) vertex ids
        if attributes.ndim == 2:
            vals = attributes[corner]  # (n, 3, C)
        else:
            vals = attributes[(hit // (H * W))[:, None], corner]
        w = self.bary.reshape(-1, 3)[hit]
        # summed corner by corner, in torch's order
        out = np.zeros((B * H * W, C), np.float32)
        out[hit] = (vals[:, 0] * w[:, 0, None] + vals[:, 1] * w[:, 1, None]) + vals[:, 2] * w[:, 2, None]
        return np.ascontiguousarray(out.reshape(B, H, W, C).transpose(0, 3, 1, 2))


def apply_matrix(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """points (..., 3) @ M^T for M (..., 3, 3) broadcasting over the leading axes, float32 like the points.

    Summed term by term, ((x m0 + y m1) + z m2), as the torch code does (model.geometry.camera.apply_matrix):
    a matmul's rounding depends on the BLAS kernel a CPU picks (with fused multiply-adds or not)."""
    M = M[..., None, :, :]
    x, y, z = points[..., 0:1], points[..., 1:2], points[..., 2:3]
    return (x * M[..., 0] + y * M[..., 1]) + z * M[..., 2]


def _bucket_sizes(extent: np.ndarray) -> np.ndarray:
    """Power-of-two box side (>= extent) per triangle: triangles of one bucket share a pixel grid."""
    return np.power(2.0, np.ceil(np.log2(np.maximum(extent, 1).astype(np.float32)))).astype(np.int64)


def _nearest(pix: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Index of the winning candidate of each covered pixel: the largest disparity d (n,) float32 > 0
    among the candidates of one pixel pix (n,) int64 >= 0, the last one on ties.

    One stable sort on an int64 key (pixel, bits of d): positive float32s order like their bit
    patterns, and stability keeps candidate order among equal keys."""
    key = pix * np.int64(1 << 31) + d.view(np.int32).astype(np.int64)
    order = np.argsort(key, kind="stable")
    sorted_pix = pix[order]
    last = np.ones(len(order), bool)
    last[:-1] = sorted_pix[1:] != sorted_pix[:-1]
    return order[last]


def rasterize(vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> Fragments:
    """Rasterise meshes given in camera coordinates.

    vertices_cam (B, V, 3) metres, OpenCV camera frame; faces (F, 3) int; K (B, 3, 3) or (3, 3);
    hw = (H, W). Both facings are drawn (the face mesh is an open surface)."""
    verts = np.asarray(vertices_cam, np.float32)
    B = verts.shape[0]
    H, W = hw
    dt = np.float32
    K = np.broadcast_to(np.asarray(K, dt), (B, 3, 3))
    faces = np.asarray(faces, np.int64)

    z = verts[..., 2]
    uvw = apply_matrix(verts, K)
    zc = np.maximum(z, dt(MIN_DEPTH))
    xy = uvw[..., :2] / zc[..., None]
    txy = xy[:, faces]  # (B, F, 3, 2)
    tinvz = (dt(1.0) / zc)[:, faces]  # (B, F, 3)
    x0, y0 = txy[..., 0, 0], txy[..., 0, 1]
    x1, y1 = txy[..., 1, 0], txy[..., 1, 1]
    x2, y2 = txy[..., 2, 0], txy[..., 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    xmin = np.maximum(np.ceil(txy[..., 0].min(-1)), dt(0))
    xmax = np.minimum(np.floor(txy[..., 0].max(-1)), dt(W - 1))
    ymin = np.maximum(np.ceil(txy[..., 1].min(-1)), dt(0))
    ymax = np.minimum(np.floor(txy[..., 1].max(-1)), dt(H - 1))
    keep = (z[:, faces] > dt(MIN_DEPTH)).all(-1) & (np.abs(area) > dt(1e-9)) & (xmax >= xmin) & (ymax >= ymin)
    b_idx, f_idx = np.nonzero(keep)

    cand_pix, cand_tri, cand_l, cand_d = [], [], [], []
    if b_idx.size:
        bw = (xmax - xmin + 1)[b_idx, f_idx].astype(np.int64)
        bh = (ymax - ymin + 1)[b_idx, f_idx].astype(np.int64)
        # bucket by power-of-two box width and height: one pixel grid per bucket, little waste
        span = 4 * max(H, W)
        key = _bucket_sizes(bw) * span + _bucket_sizes(bh)
        # edge functions are affine in the pixel position: l = a * x + b * y + c, area-normalised
        inv_area = dt(1.0) / area
        a0, b0 = (y1 - y2) * inv_area, (x2 - x1) * inv_area
        c0 = (x1 * y2 - x2 * y1) * inv_area
        a1, b1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area
        c1 = (x2 * y0 - x0 * y2) * inv_area
        per_tri = np.stack([a0, b0, c0, a1, b1, c1, xmin, xmax, ymin, ymax], -1)[b_idx, f_idx]  # (n, 10)
        order = np.argsort(key, kind="stable")  # buckets in increasing key, triangles in (b, f) order: torch's order
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for sel in np.split(order, bounds):
            k = int(key[sel[0]])
            gw, gh = k // span, k % span
            bb, ff = b_idx[sel], f_idx[sel]
            A0, B0, C0, A1, B1, C1, X0, X1, Y0, Y1 = per_tri[sel][:, :, None, None].transpose(1, 0, 2, 3)  # (m, 1, 1) each
            px = X0 + np.arange(gw, dtype=dt)[None, None, :]  # (m, 1, gw)
            py = Y0 + np.arange(gh, dtype=dt)[None, :, None]  # (m, gh, 1)
            l0 = (A0 * px + C0) + B0 * py
            l1 = (A1 * px + C1) + B1 * py
            l2 = dt(1.0) - l0 - l1
            inside = (l0 >= dt(-EDGE_EPS)) & (l1 >= dt(-EDGE_EPS)) & (l2 >= dt(-EDGE_EPS))
            if gw > 1 or gh > 1:
                inside &= (px <= X1) & (py <= Y1)
            flat = np.flatnonzero(inside)
            m_i = flat // (gh * gw)
            y_i = (flat // gw) % gh
            x_i = flat % gw
            l0f, l1f = l0.reshape(-1)[flat], l1.reshape(-1)[flat]
            lam = np.maximum(np.stack([l0f, l1f, dt(1.0) - l0f - l1f], -1), dt(0))
            lam = lam / ((lam[:, 0] + lam[:, 1]) + lam[:, 2])[:, None]
            bm, fm = bb[m_i], ff[m_i]
            iz = tinvz[bm, fm]  # (n, 3)
            liz = lam * iz
            d = (liz[:, 0] + liz[:, 1]) + liz[:, 2]  # 1/z interpolates linearly in screen space
            pix = (bm * H + Y0.reshape(-1)[m_i].astype(np.int64) + y_i) * W + X0.reshape(-1)[m_i].astype(np.int64) + x_i
            cand_pix.append(pix)
            cand_tri.append(fm)
            cand_l.append(liz / d[:, None])  # perspective-correct barycentrics
            cand_d.append(d)
    face = np.full(B * H * W, -1, np.int64)
    bary = np.zeros((B * H * W, 3), dt)
    disparity = np.zeros(B * H * W, dt)
    if cand_pix:
        pix, tri, lam, d = (np.concatenate(c) for c in (cand_pix, cand_tri, cand_l, cand_d))
        win = _nearest(pix, d)
        face[pix[win]] = tri[win]
        bary[pix[win]] = lam[win]
        disparity[pix[win]] = d[win]
    return Fragments(face=face.reshape(B, H, W), bary=bary.reshape(B, H, W, 3), disparity=disparity.reshape(B, H, W))
