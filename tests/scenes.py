"""Built-in placeholder scenes: MPIs made from a still portrait without any network.

`astronaut_frame()` turns assets/astronaut.png into a layered MPI: the person (a hand-made mask:
ellipses for the hair / face and the neck ring, the orange suit by colour) on the plane nearest
her face, and the picture with the person inpainted on the far plane, seen by the default crop
camera (f = 2.5 S). It stands in for generated MPIs until the model produces them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from model.geometry import camera, mpi
from model.formats.clip import MPIClip, MPIFrame
from model.resources import asset_path

HEAD_WIDTH = 0.155  # metres, an adult head's width (bitragion breadth + hair)
FACE_OFFSET = 0.08  # metres from the head joint to the face plane, towards the camera

# Hand-measured on the 512 x 512 asset: (centre x, centre y, half width, half height) in pixels.
_HAIR_AND_FACE = (226.0, 103.0, 76.0, 92.0)
_NECK_RING = (210.0, 222.0, 96.0, 72.0)
_CHEST = (225.0, 275.0, 110.0, 45.0)  # between the neck ring and the suit


def _ellipse(h: int, w: int, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0


def _suit_mask(rgb: np.ndarray) -> np.ndarray:
    """The orange suit: saturated, red-dominant pixels below the shoulders, closed and filled."""
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    orange = (hue <= 20) & (sat >= 110) & (val >= 90)
    orange[:200] = False  # the flag's red stripes above the shoulders
    orange[:, 365:] = False  # the shuttle model and table on the right
    orange[:, :12] = False  # the flag's edge
    mask = cv2.morphologyEx(orange.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((25, 25), np.uint8))
    # keep the largest blob (the suit), dropping flag stripes that survived the tests above
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n > 1:
        mask = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    # fill holes (badges, straps) from the outer contour
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled.astype(bool)


def person_alpha(rgb: np.ndarray) -> np.ndarray:
    """Soft foreground matte (H, W) float32 in [0, 1] of the astronaut image (H, W, 3) uint8."""
    import cv2

    h, w = rgb.shape[:2]
    sx, sy = w / 512.0, h / 512.0
    person = _suit_mask(rgb)
    for cx, cy, ax, ay in (_HAIR_AND_FACE, _NECK_RING, _CHEST):
        person |= _ellipse(h, w, cx * sx, cy * sy, ax * sx, ay * sy)
    return cv2.GaussianBlur(person.astype(np.float32), (0, 0), 1.5 * sx)


def inpaint_person(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The picture with the person removed (H, W, 3) uint8: OpenCV inpainting at quarter size
    (fast; the hole is large and smooth anyway), pasted back into a slightly dilated hole."""
    import cv2

    h, w = rgb.shape[:2]
    hole = cv2.dilate((alpha > 0.02).astype(np.uint8), np.ones((9, 9), np.uint8))
    small = cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole, (w // 4, h // 4), interpolation=cv2.INTER_NEAREST)
    filled = cv2.inpaint(small, cv2.dilate(small_hole, np.ones((3, 3), np.uint8)), 5, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 2.0)
    return np.where(hole[..., None] > 0, filled, rgb)


def astronaut_frame(num_planes: int = 4, image: Path | None = None) -> MPIFrame:
    """The astronaut portrait as a `num_planes`-plane MPI frame (>= 2) in the default crop camera.

    The head joint is placed on the ray through the head's centre at the distance that gives her
    head a real width (HEAD_WIDTH) under f = 2.5 S: about 1.3 m for this picture."""
    if num_planes < 2:
        raise ValueError(f"the astronaut scene needs at least 2 planes, got {num_planes}")
    rgb = np.asarray(Image.open(image or asset_path("astronaut.png")).convert("RGB"))
    size = rgb.shape[0]
    if rgb.shape[1] != size:
        raise ValueError(f"the portrait must be square, got {rgb.shape[1]}x{size} ({image})")
    K = camera.crop_intrinsics(size)
    f, c = float(K[0, 0]), float(K[0, 2])
    s = size / 512.0
    cx, cy, ax, _ = (v * s for v in _HAIR_AND_FACE)
    r = f * HEAD_WIDTH / (2.0 * ax)
    joint = np.array([(cx - c) / f * r, (cy - c) / f * r, r], np.float32)
    T_cam_from_head = np.eye(4, dtype=np.float32)
    T_cam_from_head[:3, 3] = joint

    near, far = (float(v) for v in mpi.near_far(r))
    depths = mpi.plane_depths(near, far, num_planes).numpy()
    person_plane = 1 + int(np.argmin(np.abs(depths[1:] - (r - FACE_OFFSET))))
    matte = person_alpha(rgb)
    alpha = np.zeros((num_planes, size, size), np.uint8)
    alpha[0] = 255  # the far plane is opaque: the whole picture
    alpha[person_plane] = np.round(matte * 255.0).astype(np.uint8)
    background = inpaint_person(rgb, matte).transpose(2, 0, 1).copy()
    return MPIFrame(
        frontal=rgb.transpose(2, 0, 1).copy(),  # what the camera sees: the picture itself
        residual=background,  # what is behind the person: the inpainted picture
        alpha=alpha,
        K=K.numpy().astype(np.float32),
        T_cam_from_head=T_cam_from_head,
        near=near,
        far=far,
        background=background,
    )


def astronaut_clip(num_planes: int = 4, fps: float = 30.0) -> MPIClip:
    """A one-frame clip of `astronaut_frame()`, what `imp-viewer` shows with no arguments."""
    return MPIClip.from_frames([astronaut_frame(num_planes)], fps=fps)
