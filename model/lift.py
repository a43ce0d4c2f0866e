"""A non-learned 3D baseline: one portrait lifted into an MPI from its face mesh and its matte.

Steps (all real parts: tracking, rasterising, MediaPipe matte, OpenCV inpainting):
1. track the face (model.tracking.track_image) and cut the tracker's square head crop at `res`;
   the MPI camera is the crop camera (f = 2.5 res) with the tracked head pose;
2. depth per person pixel: on the face, the rasterised mesh depth; elsewhere on the matte a
   plausible guess, because the mesh has no hair, ears, neck or clothes: above the chin the hair
   and the back of the head sit `HAIR_BEHIND_JOINT` behind the head joint's depth, below the chin
   the neck and torso sit `TORSO_BEFORE_JOINT` in front of it; near the face the guess blends
   into the depth of the nearest face pixel, so the face's outline does not tear in side views;
3. alpha planes: the matte split between the two MPI planes around each pixel's disparity
   (model.geometry.conditions.alpha_planes, "over"-consistent), so the frontal composite has exactly the
   matte as coverage;
4. colours: the foreground colour solves the matting equation I = m F + (1 - m) B against the
   inpainted background B, so that the MPI rendered from its own camera over B gives back the
   portrait; frontal = residual = F (one image holds no hidden surface); background = B.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.geometry import camera, conditions, mpi
from model.formats.clip import MPIClip, MPIFrame

HAIR_BEHIND_JOINT = 0.01  # m: hair / back of the head, just behind the joint's depth
TORSO_BEFORE_JOINT = 0.02  # m: neck and shoulders, a little in front of it
BLEND_SCALE = 0.06  # fraction of the crop over which the guess blends into the face's edge depth
CRACK_RADIUS = 2  # px: opaque pixels are made solid down to their deepest neighbour within this radius


def _read_rgb(image: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        rgb = image
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, -1)
    else:
        from PIL import Image

        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such portrait image")
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(f"portrait must be an RGB(A) uint8 image (H, W, 3|4), got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb[..., :3])


def guess_depth(face_depth: np.ndarray, face: np.ndarray, chin_y: float, joint_depth: float) -> np.ndarray:
    """Depth (H, W) for every pixel: the face's own depth on `face` (H, W) bool, and elsewhere the
    hair / torso guess blended into the depth of the nearest face pixel.

    face_depth (H, W) metres (valid on `face`); chin_y: image row of the chin; joint_depth: z of
    the head joint in the camera."""
    import cv2

    H, W = face.shape
    rows = np.arange(H, dtype=np.float32)[:, None]
    # hair above the chin, torso below, with a soft step (width ~ 4 % of the crop)
    below = 1.0 / (1.0 + np.exp(-(rows - chin_y) / (0.04 * H)))
    base = (1.0 - below) * (joint_depth + HAIR_BEHIND_JOINT) + below * (joint_depth - TORSO_BEFORE_JOINT)
    base = np.broadcast_to(base, (H, W)).astype(np.float32)
    if not face.any():
        return base
    # depth of the nearest face pixel, and the distance to it
    dist, labels = cv2.distanceTransformWithLabels((~face).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(face)
    label_depth = np.zeros(labels.max() + 1, np.float32)
    label_depth[labels[ys, xs]] = face_depth[ys, xs]
    nearest = label_depth[labels]
    w = np.exp(-dist / (BLEND_SCALE * max(H, W)))
    out = w * nearest + (1.0 - w) * base
    return np.where(face, face_depth, out).astype(np.float32)


def fill_cracks(alpha: torch.Tensor, depth: np.ndarray, person: np.ndarray, plane_depths: torch.Tensor,
                radius: int = CRACK_RADIUS) -> torch.Tensor:
    """Make opaque pixels solid down to the deepest neighbour within `radius` px.

    Where the depth jumps by several planes between neighbouring pixels (the side of the face,
    face to hair), a side view would look through the gap at the background. Behind an opaque
    pixel nothing is seen from the MPI camera, so filling the planes between its own depth and
    its deepest neighbour's changes nothing in the frontal view and closes those cracks.
    alpha (D, H, W), depth and person (H, W), plane_depths (D,) index 0 = far."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    solid = person >= 0.99
    # deepest depth among solid neighbours (non-solid pixels do not pull the wall back)
    back = cv2.dilate(np.where(solid, depth, 0.0).astype(np.float32), kernel)
    # an opaque pixel's solid sheet is on the plane just behind its surface (floor of its fractional
    # plane index, see conditions.alpha_planes): fill from its own sheet back to its neighbour's
    q = 1.0 / plane_depths.double()
    step = (q[-1] - q[0]) / max(len(q) - 1, 1)
    own = torch.floor((1.0 / torch.from_numpy(depth).double() - q[0]) / step)
    deepest = torch.floor((1.0 / torch.from_numpy(np.maximum(back, depth)).double() - q[0]) / step)
    i = torch.arange(len(q), dtype=torch.float64).view(-1, 1, 1)
    fill = (i >= deepest[None]) & (i < own[None]) & torch.from_numpy(solid)[None]
    return torch.where(fill, torch.ones_like(alpha), alpha)


def lift_portrait(image: str | Path | np.ndarray, res: int = 256, num_planes: int = 24) -> MPIFrame:
    """Lift a portrait (path or RGB uint8 array) into an MPIFrame of res x res and num_planes planes,
    in the tracker's head-crop camera (K = crop_intrinsics(res), T_cam_from_head tracked)."""
    from model.data import matting
    from model.tracking.crop import crop_affine, crop_image
    from model.tracking.track import track_image

    rgb = _read_rgb(image)
    track = track_image(rgb)
    A = crop_affine(track.K, res)
    crop = crop_image(rgb, A, res, border="replicate")
    matte = np.clip(crop_image(matting.matte_image(rgb), A, res, border="replicate"), 0.0, 1.0)
    background = matting.inpaint_background(crop, matte)

    K = camera.crop_intrinsics(res)
    T = torch.from_numpy(track.T_cam_from_head[:1]).float()
    verts = torch.from_numpy(track.vertices_head(0))[None]
    faces = torch.from_numpy(track.faces).long()
    code = conditions.canonical_code(verts[0])
    cond = conditions.mesh_conditions(verts, faces, code, K, T, (res, res), num_planes, supersample=2)
    cov = cond.coverage[0, 0].numpy()
    disp = cond.disparity[0, 0].numpy()
    face = cov > 0.5
    face_depth = np.where(face, 1.0 / np.maximum(disp, 1e-6), 0.0).astype(np.float32)
    lm = track.landmarks[0] @ A[:2, :2].T + A[:2, 2]
    chin_y = float(lm[152, 1])  # MediaPipe landmark 152: the chin
    joint_depth = float(track.T_cam_from_head[0, 2, 3])
    depth = guess_depth(face_depth, face, chin_y, joint_depth)
    # the person's coverage: the selfie matte, and the mesh where the matte misses the face
    person = np.maximum(matte, cov).astype(np.float32)

    depths = cond.depths  # (1, D) from the head distance
    alpha = conditions.alpha_planes(torch.from_numpy(1.0 / depth)[None, None], torch.from_numpy(person)[None, None], depths)[0]
    alpha = fill_cracks(alpha, depth, person, depths[0])
    colour = matting.unmix_foreground(crop, person, background)
    near, far = (float(v) for v in mpi.near_far(float(T[0, :3, 3].norm())))
    return MPIFrame(
        frontal=colour.transpose(2, 0, 1).copy(),
        residual=colour.transpose(2, 0, 1).copy(),
        alpha=np.clip(np.round(alpha.numpy() * 255.0), 0, 255).astype(np.uint8),
        K=K.numpy().astype(np.float32),
        T_cam_from_head=track.T_cam_from_head[0].astype(np.float32),
        near=near,
        far=far,
        background=background.transpose(2, 0, 1).copy(),
    )


def lift_clip(image: str | Path | np.ndarray, res: int = 256, num_planes: int = 24, frames: int = 1, fps: float = 25.0) -> MPIClip:
    """`frames` identical copies of the lifted portrait as an MPIClip."""
    frame = lift_portrait(image, res, num_planes)
    return MPIClip.from_frames([frame] * max(1, int(frames)), fps=fps)


def render_view(frame: MPIFrame, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """The frame rendered (torch reference renderer) from its camera orbited by yaw / pitch radians
    about the head joint: (H, W, 3) uint8."""
    T = torch.from_numpy(np.asarray(frame.T_cam_from_head, np.float32))[None]
    out = frame.render_reference(frame.K, camera.orbit(T, yaw, pitch)[0].numpy())
    return np.clip(np.round(out.rgb[0].permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)
