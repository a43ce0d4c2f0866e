"""A batched z-buffer triangle rasteriser in torch (CPU or GPU, no GL context needed).

It is what `model/geometry/conditions.py` uses to turn posed face meshes into pixel-aligned maps at training
time: it runs in DataLoader workers and on the training device alike, where a GL context may not.

Method: every triangle enumerates the pixels of its bounding box (triangles are bucketed by box
size so that a few large ones do not blow up the work of the many small ones), keeps the pixel
centres inside it (edge functions, pixel centres at integer coordinates), interpolates disparity
1/z linearly in screen space (exact under perspective) and keeps, per pixel, the candidate with the
largest disparity (nearest surface) through `scatter_reduce(amax)`. Barycentrics are returned
perspective-correct, so attributes interpolate as they would on the 3D surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.geometry.camera import apply_matrix

EDGE_EPS = 1e-5  # pixel centres this close outside an edge still count: no cracks from rounding
MIN_DEPTH = 1e-3  # triangles with a vertex closer than this (or behind the camera) are dropped


@dataclass
class Fragments:
    """The nearest surface per pixel. face (B, H, W) long, -1 where no triangle covers the pixel;
    bary (B, H, W, 3) perspective-correct barycentrics of that face (0 where empty);
    disparity (B, H, W) 1/z in 1/metres (0 where empty)."""

    face: Tensor
    bary: Tensor
    disparity: Tensor

    @property
    def coverage(self) -> Tensor:
        """(B, 1, H, W) float: 1 where a triangle is visible."""
        return (self.face >= 0).float().unsqueeze(1)

    def interpolate(self, attributes: Tensor, faces: Tensor) -> Tensor:
        """Per-pixel attributes (B, C, H, W) from per-vertex ones (V, C) or (B, V, C); 0 where empty."""
        B, H, W = self.face.shape
        if attributes.dim() == 2:
            attributes = attributes.unsqueeze(0).expand(B, -1, -1)
        attributes = attributes.to(self.bary.dtype)
        C = attributes.shape[-1]
        face = self.face.reshape(-1)
        hit = (face >= 0).nonzero(as_tuple=True)[0]  # only covered pixels do any work
        b = hit // (H * W)
        corner = faces.to(face.device)[face[hit]]  # (n, 3) vertex ids
        vals = attributes[b[:, None], corner]  # (n, 3, C)
        out = torch.zeros(B * H * W, C, dtype=attributes.dtype, device=attributes.device)
        out[hit] = (vals * self.bary.reshape(-1, 3)[hit, :, None]).sum(1)
        return out.reshape(B, H, W, C).permute(0, 3, 1, 2)


def _bucket_sizes(extent: Tensor) -> Tensor:
    """Power-of-two box side (>= extent) per triangle: triangles of one bucket share a pixel grid."""
    return torch.pow(2.0, torch.ceil(torch.log2(extent.clamp(min=1).float()))).long()


def rasterize(vertices_cam: Tensor, faces: Tensor, K: Tensor, hw: tuple[int, int]) -> Fragments:
    """Rasterise meshes given in camera coordinates.

    vertices_cam (B, V, 3) metres, OpenCV camera frame; faces (F, 3) long; K (B, 3, 3) or (3, 3);
    hw = (H, W). Both facings are drawn (the face mesh is an open surface)."""
    B, V, _ = vertices_cam.shape
    H, W = hw
    dev, dt = vertices_cam.device, torch.float32
    verts = vertices_cam.to(dt)
    K = K.to(device=dev, dtype=dt).expand(B, 3, 3)
    faces = faces.to(device=dev, dtype=torch.long)

    z = verts[..., 2]
    uvw = apply_matrix(verts, K)
    xy = uvw[..., :2] / z.clamp(min=MIN_DEPTH).unsqueeze(-1)
    txy = xy[:, faces]  # (B, F, 3, 2)
    tinvz = 1.0 / z.clamp(min=MIN_DEPTH)[:, faces]  # (B, F, 3)
    x0, y0 = txy[..., 0, 0], txy[..., 0, 1]
    x1, y1 = txy[..., 1, 0], txy[..., 1, 1]
    x2, y2 = txy[..., 2, 0], txy[..., 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    xmin = torch.ceil(txy[..., 0].amin(-1)).clamp(min=0)
    xmax = torch.floor(txy[..., 0].amax(-1)).clamp(max=W - 1)
    ymin = torch.ceil(txy[..., 1].amin(-1)).clamp(min=0)
    ymax = torch.floor(txy[..., 1].amax(-1)).clamp(max=H - 1)
    keep = (z[:, faces] > MIN_DEPTH).all(-1) & (area.abs() > 1e-9) & (xmax >= xmin) & (ymax >= ymin)
    b_idx, f_idx = keep.nonzero(as_tuple=True)

    zbuf = torch.full((B * H * W,), -1.0, device=dev, dtype=dt)
    cand_pix, cand_tri, cand_l, cand_d = [], [], [], []
    if b_idx.numel():
        bw = (xmax - xmin + 1)[b_idx, f_idx].long()
        bh = (ymax - ymin + 1)[b_idx, f_idx].long()
        # bucket by power-of-two box width and height: one pixel grid per bucket, little waste
        sw, sh = _bucket_sizes(bw), _bucket_sizes(bh)
        key = sw * (4 * max(H, W)) + sh
        # edge functions are affine in the pixel position: l = a * x + b * y + c, area-normalised
        inv_area = 1.0 / area
        a0, b0 = (y1 - y2) * inv_area, (x2 - x1) * inv_area
        c0 = (x1 * y2 - x2 * y1) * inv_area
        a1, b1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area
        c1 = (x2 * y0 - x0 * y2) * inv_area
        per_tri = torch.stack([a0, b0, c0, a1, b1, c1, xmin, xmax, ymin, ymax, area], -1)  # (B, F, 11)
        for k in torch.unique(key).tolist():
            sel = (key == k).nonzero(as_tuple=True)[0]
            gw, gh = k // (4 * max(H, W)), k % (4 * max(H, W))
            bb, ff = b_idx[sel], f_idx[sel]
            p = per_tri[bb, ff][:, :, None, None]  # (m, 11, 1, 1): one gather for the bucket
            A0, B0, C0, A1, B1, C1, X0, X1, Y0, Y1 = p[:, :10].unbind(1)
            px = X0 + torch.arange(gw, device=dev, dtype=dt)[None, None, :]  # (m, 1, gw)
            py = Y0 + torch.arange(gh, device=dev, dtype=dt)[None, :, None]  # (m, gh, 1)
            l0 = (A0 * px + C0) + B0 * py
            l1 = (A1 * px + C1) + B1 * py
            l2 = 1.0 - l0 - l1
            inside = (l0 >= -EDGE_EPS) & (l1 >= -EDGE_EPS) & (l2 >= -EDGE_EPS)
            if gw > 1 or gh > 1:
                inside &= (px <= X1) & (py <= Y1)
            flat = inside.reshape(-1).nonzero(as_tuple=True)[0]  # 1-D indexing: much faster than 3-D
            m_i = flat // (gh * gw)
            y_i = (flat // gw) % gh
            x_i = flat % gw
            l0f, l1f = l0.reshape(-1)[flat], l1.reshape(-1)[flat]
            lam = torch.stack([l0f, l1f, 1.0 - l0f - l1f], -1).clamp(min=0)
            lam = lam / lam.sum(-1, keepdim=True)
            bm, fm = bb[m_i], ff[m_i]
            iz = tinvz[bm, fm]  # (n, 3)
            d = (lam * iz).sum(-1)  # 1/z interpolates linearly in screen space
            pix = (bm * H + Y0.reshape(-1)[m_i].long() + y_i) * W + X0.reshape(-1)[m_i].long() + x_i
            cand_pix.append(pix)
            cand_tri.append(fm)
            cand_l.append(lam * iz / d[:, None])  # perspective-correct barycentrics
            cand_d.append(d)
    face = torch.full((B * H * W,), -1, device=dev, dtype=torch.long)
    bary = torch.zeros(B * H * W, 3, device=dev, dtype=dt)
    if cand_pix:
        pix, tri, lam, d = (torch.cat(c) for c in (cand_pix, cand_tri, cand_l, cand_d))
        zbuf.scatter_reduce_(0, pix, d, reduce="amax")
        win = d >= zbuf[pix]  # ties (shared edges, same depth) pick any: same surface point
        face[pix[win]] = tri[win]
        bary[pix[win]] = lam[win]
    disparity = torch.where(face >= 0, zbuf, torch.zeros_like(zbuf))
    return Fragments(face=face.reshape(B, H, W), bary=bary.reshape(B, H, W, 3), disparity=disparity.reshape(B, H, W))


def ellipsoid_mesh(radii: tuple[float, float, float] = (0.08, 0.11, 0.1), rings: int = 16, segments: int = 32,
                   centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[Tensor, Tensor]:
    """A closed UV-sphere mesh scaled to an ellipsoid: (vertices (V, 3), faces (F, 3) long).

    A known surface for tests and benchmarks (a head-sized ellipsoid by default, metres)."""
    theta = torch.linspace(0.0, torch.pi, rings + 1)[1:-1]  # polar angles without the poles
    phi = torch.linspace(0.0, 2 * torch.pi, segments + 1)[:-1]
    st, ct = torch.sin(theta)[:, None], torch.cos(theta)[:, None]
    ring = torch.stack([st * torch.cos(phi), ct.expand(-1, segments), st * torch.sin(phi)], -1).reshape(-1, 3)
    poles = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    unit = torch.cat([ring, poles])
    verts = unit * torch.tensor(radii) + torch.tensor(centre)
    faces = []
    n = rings - 1
    for r in range(n - 1):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            c, d = a + segments, b + segments
            faces += [(a, c, b), (b, c, d)]
    top, bottom = n * segments, n * segments + 1
    for s in range(segments):
        faces.append((top, s, (s + 1) % segments))
        last = (n - 1) * segments
        faces.append((bottom, last + (s + 1) % segments, last + s))
    return verts, torch.tensor(faces, dtype=torch.long)
