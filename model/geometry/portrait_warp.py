"""The pixel-aligned identity condition: the portrait's own colours carried into the MPI camera
through the tracked meshes (beyond the paper; `ModelConfig.identity_warp`).

Few training videos cannot teach a network to carry an identity from one portrait through
cross-attention alone; this condition hands it the portrait's pixels where they belong, so that it
can copy them and only has to paint what the portrait does not show.

For each driving frame (the retargeted mesh posed in the MPI camera):

- where the driving mesh is visible, each pixel takes the portrait's colour of the same surface
  point: the per-vertex position of the portrait's *own* mesh projected into the portrait's camera
  is interpolated over the driving mesh's triangles (perspective-correct barycentrics from the
  rasteriser) and the portrait is sampled there;
- a confidence channel says how far to trust that colour: 0 inside the mouth (the triangles that
  close it stand for what a closed-mouth photo does not show), 0 where the portrait's mesh point is
  hidden in the portrait (its z-buffer) and falling to 0 where the portrait sees the surface at a
  grazing angle (the side of the head turned away);
- what the mesh does not cover (hair, ears, neck, shoulders) comes from the portrait's matted
  foreground moved rigidly with the head, on a proxy of the head's surface
  (`head_proxy_positions`): a plane through the head joint, parallel to the portrait's image,
  below the eyes' height, and above it a plane leaning towards the camera (hair over the forehead
  lies in front of the joint), with its warped matte as a separate channel. Next to the mesh the
  proxy's sampling positions start from the mesh's own and fade into the proxy's over a few pixels
  (`seam_shift`): the mesh surface lies in front of the proxy, so the two map the border
  differently, and a hard switch showed as a seam at the hairline and the jaw.

Channels (`IDENTITY_CHANNELS` = 5) of the result (n, 5, H, W): RGB in [-1, 1] premultiplied by
the alpha channel (the mesh colour on the mesh, black inside the mouth; off the mesh the warped
foreground), alpha in [0, 1] (1 on the mesh, the warped foreground matte off it), and the mesh
confidence in [0, 1] (0 off the mesh and inside the mouth).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from model.geometry import continuation, mpi
from model.geometry.camera import apply_matrix, apply_pose
from model.geometry.raster import rasterize

IDENTITY_CHANNELS = 5
GRAZING_COS = (0.15, 0.45)  # confidence 0 below the first cos(view angle), 1 above the second
DEPTH_TOLERANCE = 0.01  # relative disparity: a vertex this much behind the portrait's z-buffer is hidden
NECK_BAND = 0.04  # m below the chin over which the off-mesh person turns from head to body
# beside the neck, farther than NECK_SIDE from the face's midline, the body begins SHOULDER_RISE
# above the chin (both in nose bridge-to-chin lengths): shoulders as high as the chin stayed with
# the head and rolled with it, up on one side and down on the other. The warp baseline on the 14
# tuning videos (model card): 22.79 dB with the chin's line alone, 23.01 with these; side 0.4 or
# rise 0.75 23.02, side 0.7 or rise 0.25 22.93 (a rise of 0.75 starts to take long hair off the head)
NECK_SIDE = 0.5
SHOULDER_RISE = 0.5
# within the neck's width the body's neck runs on up behind the chin this far (bridge-to-chin
# lengths), its top row continued, under the head's cover: a head that rises or turns away from the
# body showed a gap of background between chin and collar (male_face under d20's driving)
NECK_BEHIND = 0.5
# above the eyes' height the head's proxy plane leans towards the camera by HAIR_LEAN m of depth
# per m of height. With one plane through the joint, the hair above the forehead lagged the head
# by 0.12-0.18 px per degree of yaw and 0.12-0.22 px per degree of pitch in four held-out videos
# (optical flow from the real frames to the generated ones, regressed on the tracked pose): it lies
# ~2 cm in front of the joint. On the 14 tuning videos (model card) the warp baseline gave 23.04 dB
# with one plane, 23.32 with a lean of 0.3, 23.35 with 0.6 (which loses on 3 videos), one plane
# 3 cm nearer 23.12; the shipped student 23.63, 23.91 (0.3) and 23.96 (0.45)
HAIR_LEAN = 0.45
# where the lean begins: the eyes' height above the head joint, in the head frame (the tracker's
# model.tracking.shape.JOINT_BELOW_EYES; geometry does not import tracking, a test checks they agree)
EYES_ABOVE_JOINT = 0.03
# how far past the mesh's border its sampling positions carry into the head plane's: 2 halvings
# reach ~4 px. Chosen on the held-out self-reenactment (6 videos x 100 frames): the warp baseline
# gave 21.41, 21.37 and 21.03 dB with 2, 3 and 5 halvings against 21.30 dB without, the shipped
# student 22.25, 22.28 and 22.23 dB with 1, 2 and 3 against 22.18; farther, the face's motion
# drags hair that moves with the skull
SEAM_LEVELS = 2


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit normals (V, 3) of a mesh (V, 3) with faces (F, 3) wound counter-clockwise as seen from
    the side the normals point to (area-weighted face normals summed per vertex)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    n_face = torch.cross(b - a, c - a, dim=-1)
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), n_face.repeat_interleave(3, 0))
    return F.normalize(n, dim=-1, eps=1e-12)


def portrait_vertex_samples(vertices_cam: Tensor, faces: Tensor, K: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where the portrait shows each vertex of its own mesh, and how well.

    vertices_cam (V, 3) the portrait's mesh in its camera (metres); faces (F, 3); K (3, 3); hw the
    portrait image's size. Returns (pixel positions (V, 2), confidence (V,) in [0, 1]): 0 for
    points hidden by the portrait's own surface, outside the image or seen edge-on."""
    H, W = hw
    z = vertices_cam[:, 2].clamp(min=1e-3)
    uv = apply_matrix(vertices_cam, K)[:, :2] / z[:, None]
    frags = rasterize(vertices_cam[None], faces, K, hw)
    zbuf = frags.disparity[0]  # (H, W) 1/z of the nearest surface
    px = uv.round().long()
    inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
    pxc = torch.stack([px[:, 0].clamp(0, W - 1), px[:, 1].clamp(0, H - 1)], -1)
    nearest = zbuf[pxc[:, 1], pxc[:, 0]]
    visible = (1.0 / z) >= nearest * (1.0 - DEPTH_TOLERANCE)
    # faces are wound so that normals point towards the camera: cos of the view angle = -n . ray
    n = vertex_normals(vertices_cam, faces.long())
    cos = -(n * F.normalize(vertices_cam, dim=-1)).sum(-1)
    lo, hi = GRAZING_COS
    facing = ((cos - lo) / (hi - lo)).clamp(0.0, 1.0)
    return uv, facing * (visible & inside).to(facing)


def _sample(image: Tensor, uv: Tensor) -> Tensor:
    """Bilinear samples (n, C, H, W) of image (C, h, w) at pixel positions uv (n, 2, H, W)
    (pixel centres at integers, zero outside)."""
    C, h, w = image.shape
    gx = (2.0 * uv[:, 0] + 1.0) / w - 1.0
    gy = (2.0 * uv[:, 1] + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(image[None].expand(len(uv), C, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def fill_in(values: Tensor, weight: Tensor, levels: int) -> Tensor:
    """values (n, C, H, W), known where weight (n, 1, H, W) in [0, 1] is positive, continued past
    them and faded out to 0 over ~2^levels pixels (pull-push: averaged over `levels` halvings, then
    pushed back down where the finer level knows too little; the coarsest level's unknown cells are
    0, hence the fade)."""
    sums, weights = [values * weight], [weight]
    for _ in range(levels):
        sums.append(F.avg_pool2d(sums[-1], 2))
        weights.append(F.avg_pool2d(weights[-1], 2))
    est = sums[-1] / weights[-1].clamp(min=1e-6)
    for k in range(levels - 1, -1, -1):
        coarse = F.interpolate(est, size=sums[k].shape[-2:], mode="bilinear", align_corners=False)
        known = (4.0 * weights[k]).clamp(max=1.0)  # a quarter-covered pixel trusts its own average
        est = known * sums[k] / weights[k].clamp(min=1e-6) + (1.0 - known) * coarse
    return est


def head_proxy_positions(K: Tensor, T_portrait: Tensor, T_mpi_from_head: Tensor, hw: tuple[int, int],
                         lean: float = HAIR_LEAN) -> Tensor:
    """Portrait pixel positions (n, 2, H, W) of what each MPI pixel sees on the head's proxy surface,
    moved with the head: in the portrait's camera (metres, y down) the plane z = z_k below the
    height y_k of the kink point k (the head joint's depth, the eyes' height) and above it the plane
    z = z_k - lean (y_k - y). A ray takes the leaning plane where it meets it above the kink, else
    the upright one (the two meet at the kink's height: no seam).

    K (3, 3) of both cameras; T_portrait (4, 4) the portrait's camera from its head frame;
    T_mpi_from_head (n, 4, 4); hw the MPI image's size. Points behind the portrait's camera go far
    outside (sampled as 0)."""
    n = T_mpi_from_head.shape[0]
    h, w = hw
    dt = T_mpi_from_head.dtype
    rays = mpi._pixel_grid(h, w, T_mpi_from_head).reshape(h * w, 3) @ torch.linalg.inv(K).T  # (P, 3), z = 1
    T_pm = T_portrait @ torch.linalg.inv(T_mpi_from_head)  # (n, 4, 4) portrait camera from MPI camera
    d = rays @ T_pm[:, :3, :3].transpose(1, 2)  # (n, P, 3) rays in the portrait's camera
    o = T_pm[:, None, :3, 3]  # (n, 1, 3) the MPI camera's centre there
    kink = T_portrait[:3, :3] @ torch.tensor([0.0, -EYES_ABOVE_JOINT, 0.0], dtype=dt) + T_portrait[:3, 3]

    def along(z_of_y: float) -> Tensor:  # ray parameter where z - z_of_y * y = kink_z - z_of_y * kink_y
        denom = d[..., 2] - z_of_y * d[..., 1]
        denom = torch.where(denom.abs() > 1e-9, denom, torch.full_like(denom, 1e-9))
        return (kink[2] - z_of_y * kink[1] - (o[..., 2] - z_of_y * o[..., 1])) / denom

    upright, leaning = along(0.0), along(lean)
    above = (o[..., 1] + leaning * d[..., 1] < kink[1]) & (leaning > 0)
    X = o + torch.where(above, leaning, upright)[..., None] * d
    z = X[..., 2:3]
    ahead = z > 1e-8
    uv = (X @ K.T)[..., :2] / torch.where(ahead, z, torch.ones_like(z))
    xy = torch.where(ahead, uv, torch.full_like(uv, -4.0 * max(hw)))
    return xy.reshape(n, h, w, 2).permute(0, 3, 1, 2)


def seam_shift(mesh_uv: Tensor, proxy_uv: Tensor, coverage: Tensor) -> Tensor:
    """(n, 2, H, W): what to add to the head proxy's sampling positions proxy_uv (n, 2, H, W) so
    that, near the mesh, they continue the mesh's own mesh_uv (portrait pixels of the surface
    points, valid where coverage (n, 1, H, W) is 1): the mesh's offset to the proxy, faded out
    over ~2^SEAM_LEVELS pixels past the mesh's border."""
    return fill_in((mesh_uv - proxy_uv) * coverage, coverage, SEAM_LEVELS)


@dataclass(frozen=True)
class FaceTopology:
    """What the warp needs to know of the face mesh: faces (F, 3) long; mouth (F,) bool, the
    triangles closing the mouth; bridge and chin, two vertex indices whose image direction is the
    face's "down" (model.tracking.facemesh.face_topology builds it for MediaPipe's mesh)."""

    faces: Tensor
    mouth: Tensor
    bridge: int
    chin: int


def _chin_frame(bridge: Tensor, chin: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(along, across) (H, W): each pixel's distance below the chin along the face's down direction
    (bridge -> chin, pixels (2,)) and beside its line; that direction (2,), the bridge-to-chin
    length, and the pixel grid (xs, ys) (H, W)."""
    H, W = hw
    down = F.normalize(chin - bridge, dim=0)
    length = torch.linalg.vector_norm(chin - bridge)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=chin.dtype), torch.arange(W, dtype=chin.dtype), indexing="ij")
    along = (xs - chin[0]) * down[0] + (ys - chin[1]) * down[1]
    across = (ys - chin[1]) * down[0] - (xs - chin[0]) * down[1]
    return along, across, down, length, xs, ys


def body_weight(uv: Tensor, bridge: Tensor, chin: Tensor, band_px: float, hw: tuple[int, int]) -> Tensor:
    """(1, H, W) in [0, 1]: how much each portrait pixel belongs to the body rather than the head:
    0 above the chin, rising to 1 `band_px` pixels below it along the face's down direction
    (bridge -> chin, pixels (2,)); beside the neck (NECK_SIDE) from SHOULDER_RISE above the chin."""
    along, across, _, length, _, _ = _chin_frame(bridge.to(uv.dtype), chin.to(uv.dtype), hw)
    below = (along / band_px).clamp(0.0, 1.0)
    beside = ((across.abs() - NECK_SIDE * length) / band_px).clamp(0.0, 1.0) * \
        ((along + SHOULDER_RISE * length) / band_px).clamp(0.0, 1.0)
    return torch.maximum(below, beside)[None]


def body_layer(rgba: Tensor, body: Tensor, bridge: Tensor, chin: Tensor, band_px: float) -> tuple[Tensor, Tensor]:
    """The body's layer (4, H, W) of the portrait's matted rgba (4, H, W), under the head, and its
    opacity `under` (1, H, W) (the head covers it by 1 - body / under, which gives the portrait
    back where neither moved). Beside the neck the body lies at sqrt(body): a whole body showed
    the band's edges as straight steps in long hair. Within the neck's width (NECK_SIDE) the neck
    is whole from the chin down, and above the chin, where the portrait shows the person and the
    head alone (body 0), its row under the chin runs on up NECK_BEHIND, hidden by the head until it
    moves away. rgba, body (1, H, W): body_weight; bridge, chin (2,) pixels; band_px as there."""
    along, across, down, length, xs, ys = _chin_frame(bridge, chin, tuple(rgba.shape[-2:]))
    column = 1.0 - ((across.abs() - NECK_SIDE * length) / band_px).clamp(0.0, 1.0)
    under = torch.maximum(body[0].sqrt(), column * (along >= 0).to(rgba.dtype))
    # only where the head alone shows (body 0): there it covers the layer whole
    hidden = (along < 0) & (rgba[3] > 0) & (body[0] == 0)
    behind = column * ((along + NECK_BEHIND * length) / band_px).clamp(0.0, 1.0) * hidden.to(rgba.dtype)
    step = 1.0 - along  # to the row one pixel under the chin
    top = _sample(rgba, torch.stack([xs + step * down[0], ys + step * down[1]])[None])[0]
    return torch.where(hidden, top * behind, rgba * under), under[None]


def portrait_warp(portrait: Tensor, matte: Tensor, portrait_vertices_head: Tensor, T_portrait: Tensor,
                  vertices_head: Tensor, T_mpi_from_head: Tensor, topology: FaceTopology, K: Tensor,
                  hw: tuple[int, int], torso_shift: Tensor | None = None, hair_poses: Tensor | None = None) -> Tensor:
    """The identity condition (n, 5, H, W) of n driving frames (see the module docstring).

    portrait (3, h, w) in [-1, 1] and matte (1, h, w) in [0, 1], seen by camera K (3, 3) with the
    head at T_portrait (4, 4); portrait_vertices_head (V, 3) the portrait's own mesh (template +
    its expression) in its head frame; vertices_head (n, V, 3) the driving meshes (retargeted onto
    the portrait) posed at T_mpi_from_head (n, 4, 4) in the MPI camera, which has the same
    intrinsics K and image size hw; topology: the mesh's faces, mouth triangles and down line;
    torso_shift (n, 2) or None: how far the body below the neck moves in each frame (x right, y
    down, fractions of the image's size: model/data/body_motion.py), else it stays; hair_poses (n, 4, 4)
    or None: the poses the hair and ears follow off the mesh (model/data/hair_motion.py), else
    T_mpi_from_head."""
    dt = portrait.dtype
    K = K.to(dt)
    T_p = T_portrait.to(dt)
    faces = topology.faces.long()
    pv_cam = apply_pose(portrait_vertices_head.to(dt), T_p)
    uv_p, conf_v = portrait_vertex_samples(pv_cam, faces, K, tuple(portrait.shape[-2:]))

    T = T_mpi_from_head.to(dt)
    verts_cam = apply_pose(vertices_head.to(dt), T)
    frags = rasterize(verts_cam, faces, K, hw)
    attrs = frags.interpolate(torch.cat([uv_p, conf_v[:, None]], -1), faces)  # (n, 3, H, W)
    cov = frags.coverage
    in_mouth = topology.mouth.to(frags.face.device)[frags.face.clamp(min=0)] & (frags.face >= 0)
    mouth_px = in_mouth.unsqueeze(1).to(dt)
    mesh_rgb = _sample(portrait, attrs[:, :2]) * cov * (1.0 - mouth_px) - mouth_px  # black inside the mouth
    mesh_conf = attrs[:, 2:3] * cov * (1.0 - mouth_px)

    # the rest of the person: above the chin (hair, ears) on the head's proxy surface
    # (head_proxy_positions), moved rigidly with the head; below it (neck, shoulders)
    # where it is in the portrait, since the body does not turn with the head (the MPI camera is
    # the portrait's fixed crop camera, in training and at generation), moved only by the driver's
    # own torso motion (torso_shift: its matte's outline, not its head's)
    hp = tuple(portrait.shape[-2:])
    band = float(K[0, 0]) * NECK_BAND / float(pv_cam[topology.chin, 2])
    body = body_weight(uv_p, uv_p[topology.bridge], uv_p[topology.chin], band, hp)
    rgba = torch.cat([portrait * matte, matte], 0)
    proxy_uv = head_proxy_positions(K, T_p, T if hair_poses is None else hair_poses.to(dt), hw)
    # the body lies under the head (body_layer), which covers it where the portrait has a person
    # (exact where neither moved: 1 - body + (body / under) under): where the head moves away from
    # the body, the body's own pixels show rather than a translucent gap
    layer, under = body_layer(rgba, body, uv_p[topology.bridge], uv_p[topology.chin], band)
    cover = (1.0 - body / under.clamp(min=1e-6)) * (matte > 0).to(dt)
    head = _sample(torch.cat([rgba * (1.0 - body), cover], 0), proxy_uv + seam_shift(attrs[:, :2], proxy_uv, cov))
    torso = moved_torso(layer, torso_shift, hw)
    fg = head[:, :4] + (1.0 - head[:, 4:]) * torso
    fg = fg / fg[:, 3:].clamp(min=1.0)  # moved apart, the head's cover and the body under it need not add up to 1
    off_mesh = 1.0 - cov
    rgb = mesh_rgb + off_mesh * fg[:, :3]
    alpha = cov + off_mesh * fg[:, 3:]
    return torch.cat([rgb, alpha, mesh_conf], 1)


def level_position(sigma: Tensor, levels: list[float]) -> Tensor:
    """Where sigma (...) lies among increasing levels (L,): a float index in [0, L - 1], linear
    between them (np.interp(sigma, levels, range(L)))."""
    pos = torch.zeros_like(sigma)
    for a, b in zip(levels[:-1], levels[1:]):
        pos = pos + ((sigma - a) / (b - a)).clamp(0.0, 1.0)
    return pos


def moved_torso(torso: Tensor, shift: Tensor | None, hw: tuple[int, int]) -> Tensor:
    """The portrait's body part torso (C, h, w) in an image of size hw, moved by shift (n, 2)
    (fractions of the image's size; None or zeros: where it is, (1, C, H, W)), else (n, C, H, W).
    Past the image's sides it continues its edge pixels; past its bottom (a body risen into view
    brings more of itself) its bottom row, blurred the more the farther (model/geometry/continuation.py,
    as a portrait's person is continued past its photo), not repeated as streaks."""
    hp = tuple(torso.shape[-2:])
    if shift is None or not bool(torch.any(shift != 0)):
        return F.interpolate(torso[None], size=hw, mode="bilinear", align_corners=False) if hp != tuple(hw) else torso[None]
    h, w = hw
    dt = torso.dtype
    shift = shift.to(dt)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dt), torch.arange(w, dtype=dt), indexing="ij")
    # the source pixel each output pixel shows, in the portrait's pixels (the same crop, resized)
    u = ((xs[None] - shift[:, 0, None, None] * w + 0.5) * (hp[1] / w) - 0.5).clamp(0.0, hp[1] - 1.0)
    v_at = (ys[None] - shift[:, 1, None, None] * h + 0.5) * (hp[0] / h) - 0.5
    out = _sample(torso, torch.stack([u, v_at.clamp(0.0, hp[0] - 1.0)], 1))
    past = (v_at - (hp[0] - 1.0)).clamp(min=0.0)
    if not bool(torch.any(past > 0)):
        return out
    levels = [s * hp[1] / 128.0 for s in continuation.SPREAD_LEVELS]
    rows = torch.from_numpy(continuation.blur_levels(torso[:, -1].detach().cpu().numpy(), levels)).to(torso)  # (C, L, w): one row
    below = _sample(rows, torch.stack([u, level_position(continuation.SPREAD * past, levels)], 1))
    return torch.where(past[:, None] > 0, below, out)


def mouth_mask(identity: Tensor) -> Tensor:
    """(n, 1, H, W) float, 1 inside the mouth of identity conditions (n, 5, H, W): where
    portrait_warp puts opaque black without confidence (what a closed-mouth photo does not show)."""
    black = (identity[:, :3] <= -1.0 + 1e-6).all(1, keepdim=True)
    return (black & (identity[:, 3:4] >= 1.0 - 1e-6) & (identity[:, 4:5] <= 0.0)).to(identity.dtype)


def warp_composite(identity: Tensor, background: Tensor) -> Tensor:
    """The identity condition (n, 5, H, W) composited over a background (n or 1, 3, H, W): images
    (n, 3, H, W) in [-1, 1]. What a warp that learns nothing shows: the warp baseline of `imp eval`
    and the condition's preview in the training logs."""
    return identity[:, :3] + (1.0 - identity[:, 3:4]) * background
