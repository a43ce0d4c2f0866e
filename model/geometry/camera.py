"""Pinhole cameras and rigid poses (OpenCV convention: x right, y down, z forward; metres).

Pixel centres sit at integer coordinates, so the centre of an S-pixel-wide image is at
(S - 1) / 2. Poses are `T_a_from_b` 4x4 matrices: `x_a = T_a_from_b @ x_b`. Every function is pure,
batched over leading dimensions (`...`) and differentiable. `model.geometry.rig` has NumPy twins
of the pose and intrinsics functions for the viewer, which runs without torch: change both.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from model.geometry import crop_camera
from model.geometry.crop_camera import DEFAULT_FOCAL_FACTOR
from model.geometry.rig import DEFAULT_BASELINE  # the viewer's torch-free twin of this module holds it


def intrinsics(fx: Tensor | float, fy: Tensor | float, cx: Tensor | float, cy: Tensor | float) -> Tensor:
    """K (..., 3, 3) from focal lengths and principal point in pixels (broadcast together)."""
    fx, fy, cx, cy = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32) for v in (fx, fy, cx, cy)))
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, -2)


def crop_intrinsics(size: int, focal_factor: float = DEFAULT_FOCAL_FACTOR) -> Tensor:
    """K (3, 3) of the default square crop camera: f = focal_factor * size, centred principal point."""
    return torch.from_numpy(crop_camera.crop_camera_K(size, focal_factor)).float()


def scale_intrinsics(K: Tensor, sx: float, sy: float | None = None) -> Tensor:
    """K (..., 3, 3) of the same camera after resizing the image by (sx, sy), pixel centres kept."""
    sy = sx if sy is None else sy
    S = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=K.dtype, device=K.device)
    return S @ K


def make_pose(R: Tensor, t: Tensor) -> Tensor:
    """T (..., 4, 4) from rotation R (..., 3, 3) and translation t (..., 3)."""
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: Tensor) -> Tensor:
    """Inverse of a rigid transform T (..., 4, 4)."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_pose(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))


def relative_pose(T_a_from_x: Tensor, T_b_from_x: Tensor) -> Tensor:
    """T_b_from_a (..., 4, 4) for two poses of the same frame x."""
    return T_b_from_x @ invert_pose(T_a_from_x)


def translation(t: Tensor) -> Tensor:
    """Pure translation T (..., 4, 4) from t (..., 3)."""
    eye = torch.eye(3, dtype=t.dtype, device=t.device).expand(*t.shape[:-1], 3, 3)
    return make_pose(eye, t)


def _axis_rotation(angle: Tensor, axis: int) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        m = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        m = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        m = [c, -s, zero, s, c, zero, zero, zero, one]
    return torch.stack(m, -1).reshape(*angle.shape, 3, 3)


def euler_rotation(yaw: Tensor | float, pitch: Tensor | float, roll: Tensor | float) -> Tensor:
    """R (..., 3, 3) = Ry(yaw) @ Rx(pitch) @ Rz(roll), radians, about the OpenCV axes
    (yaw turns about y (down), pitch about x (right), roll about z (forward))."""
    yaw, pitch, roll = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32) for v in (yaw, pitch, roll)))
    return _axis_rotation(yaw, 1) @ _axis_rotation(pitch, 0) @ _axis_rotation(roll, 2)


def rotation_to_euler(R: Tensor) -> Tensor:
    """(yaw, pitch, roll) (..., 3) in radians, inverse of `euler_rotation` for |pitch| < 90 deg."""
    pitch = torch.asin((-R[..., 1, 2]).clamp(-1.0, 1.0))
    yaw = torch.atan2(R[..., 0, 2], R[..., 2, 2])
    roll = torch.atan2(R[..., 1, 0], R[..., 1, 1])
    return torch.stack([yaw, pitch, roll], -1)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """T_cam_from_world (..., 4, 4) of a camera at `eye` (..., 3) looking at `target` (..., 3).

    `up` is the world direction that should appear up in the image (default -y, OpenCV)."""
    if up is None:
        up = torch.tensor([0.0, -1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    x = torch.nn.functional.normalize(torch.cross(-up, z, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], -2)  # rows: camera axes in world coordinates
    return make_pose(R, -(R @ eye.unsqueeze(-1)).squeeze(-1))


def apply_matrix(points: Tensor, M: Tensor) -> Tensor:
    """points (..., N, 3) @ M^T for M (..., 3, 3), summed term by term: ((x m0 + y m1) + z m2).

    A matmul's rounding depends on the BLAS kernel the CPU picks (with or without fused
    multiply-adds); this sum rounds the same everywhere, and so bit for bit like its NumPy twin
    (model.coldstart.raster.apply_matrix), which the viewer's torch-free worker uses."""
    M = M.unsqueeze(-3)
    return (points[..., 0:1] * M[..., 0] + points[..., 1:2] * M[..., 1]) + points[..., 2:3] * M[..., 2]


def apply_pose(points: Tensor, T_b_from_a: Tensor) -> Tensor:
    """Points (..., N, 3) given in frame a, in frame b (T_b_from_a (..., 4, 4)): R x + t, with
    apply_matrix's rounding (NumPy twin: model.coldstart.conditions.pose)."""
    return apply_matrix(points, T_b_from_a[..., :3, :3]) + T_b_from_a[..., None, :3, 3]


def project(K: Tensor, T_cam_from_x: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels (..., N, 2) and depths (..., N) of points (..., N, 3) given in frame x."""
    cam = apply_pose(points, T_cam_from_x)
    z = cam[..., 2]
    uvw = apply_matrix(cam, K)
    return uvw[..., :2] / uvw[..., 2:3], z


def stereo_pair(T_cam_from_x: Tensor, baseline: float = DEFAULT_BASELINE) -> tuple[Tensor, Tensor]:
    """(T_left_from_x, T_right_from_x) (..., 4, 4): eyes at -/+ baseline/2 along the camera's x axis."""
    half = torch.tensor([baseline / 2.0, 0.0, 0.0], dtype=T_cam_from_x.dtype, device=T_cam_from_x.device)
    # The left eye sits at x = -b/2 in camera coordinates, so points move by +b/2 in its frame.
    return translation(half) @ T_cam_from_x, translation(-half) @ T_cam_from_x


def head_distance(T_cam_from_head: Tensor) -> Tensor:
    """Distance (...) from the camera centre to the head joint (the head frame's origin)."""
    return T_cam_from_head[..., :3, 3].norm(dim=-1)


def dolly_zoom(K: Tensor, T_cam_from_head: Tensor, distance: Tensor | float) -> tuple[Tensor, Tensor]:
    """Move the camera along its optical axis until the head joint is at depth `distance` and scale
    the focal length so the head keeps its size in the image.

    K (..., 3, 3), T_cam_from_head (..., 4, 4) -> (K', T') with the same shapes."""
    depth = T_cam_from_head[..., 2, 3]
    distance = torch.as_tensor(distance, dtype=K.dtype, device=K.device)
    shift = torch.zeros_like(T_cam_from_head[..., :3, 3])
    shift[..., 2] = distance - depth
    T = translation(shift) @ T_cam_from_head
    s = (distance / depth)[..., None]
    K2 = K.clone()
    K2[..., 0, 0] = K[..., 0, 0] * s[..., 0]
    K2[..., 1, 1] = K[..., 1, 1] * s[..., 0]
    return K2, T


def orbit(T_cam_from_head: Tensor, yaw: Tensor | float, pitch: Tensor | float = 0.0) -> Tensor:
    """Rotate the camera about the head joint: yaw about the camera's y axis, pitch about its x
    axis, both through the joint, keeping the joint at the same place in the image when it is on
    the optical axis. T_cam_from_head (..., 4, 4) -> T' (..., 4, 4)."""
    R = euler_rotation(yaw, pitch, 0.0).to(T_cam_from_head)
    joint = T_cam_from_head[..., :3, 3]
    # x' = R^T (x - joint) + joint : the world turns by R^T about the joint, i.e. the camera by R.
    Rt = R.transpose(-1, -2).expand(*T_cam_from_head.shape[:-2], 3, 3)
    about = translation(joint) @ make_pose(Rt, torch.zeros_like(joint)) @ translation(-joint)
    return about @ T_cam_from_head


def fov_degrees(K: Tensor, size: int) -> Tensor:
    """Horizontal field of view in degrees of an image `size` px wide."""
    return 2.0 * torch.rad2deg(torch.atan(torch.as_tensor(size / 2.0) / K[..., 0, 0]))


def focal_for_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels giving a horizontal FoV of `fov_deg` over `size` px."""
    return size / 2.0 / math.tan(math.radians(fov_deg) / 2.0)
