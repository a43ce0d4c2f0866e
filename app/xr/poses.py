"""OpenXR <-> OpenCV camera math, pure numpy.

OpenXR spaces are right-handed with y up and -z forward (the OpenGL convention); our cameras are
OpenCV (x right, y down, z forward). `CV_FROM_GL` flips y and z between the two.
Shapes: quaternions (x, y, z, w); poses 4x4 float64.
"""
from __future__ import annotations

import math

import numpy as np

CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def quaternion_to_matrix(q: tuple[float, float, float, float]) -> np.ndarray:
    """Rotation (3, 3) of a unit quaternion given as (x, y, z, w)."""
    x, y, z, w = q
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def pose_to_matrix(orientation: tuple[float, float, float, float], position: tuple[float, float, float]) -> np.ndarray:
    """T_space_from_pose (4, 4) of an XrPosef (orientation (x, y, z, w), position (x, y, z))."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(orientation)
    T[:3, 3] = position
    return T


def view_matrix(orientation, position) -> np.ndarray:
    """OpenGL view matrix (4, 4) = T_eyeGL_from_space for an eye at XrPosef (orientation, position)."""
    return np.linalg.inv(pose_to_matrix(orientation, position))


def cv_eye_from_space(orientation, position) -> np.ndarray:
    """T_eyeCV_from_space (4, 4): the same eye as an OpenCV camera (y down, z forward)."""
    return CV_FROM_GL @ view_matrix(orientation, position)


def projection_from_fov(angle_left: float, angle_right: float, angle_up: float, angle_down: float,
                        near: float = 0.05, far: float = 100.0) -> np.ndarray:
    """OpenGL projection (4, 4, row-major) of an XrFovf, as XrMatrix4x4f_CreateProjectionFov builds it
    (angles in radians; left and down are negative for a symmetric view)."""
    tl, tr, tu, td = math.tan(angle_left), math.tan(angle_right), math.tan(angle_up), math.tan(angle_down)
    w, h = tr - tl, tu - td
    return np.array(
        [
            [2.0 / w, 0.0, (tr + tl) / w, 0.0],
            [0.0, 2.0 / h, (tu + td) / h, 0.0],
            [0.0, 0.0, -(far + near) / (far - near), -2.0 * far * near / (far - near)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )


def intrinsics_from_fov(angle_left: float, angle_right: float, angle_up: float, angle_down: float,
                        width: int, height: int) -> np.ndarray:
    """OpenCV K (3, 3) in pixels of a width x height image covering an XrFovf.

    The image's left edge (x = -0.5, pixel centres at integers) is at tan(angle_left), its top edge
    (y = -0.5) at tan(angle_up)."""
    tl, tr, tu, td = math.tan(angle_left), math.tan(angle_right), math.tan(angle_up), math.tan(angle_down)
    fx = width / (tr - tl)
    fy = height / (tu - td)
    return np.array([[fx, 0.0, -tl * fx - 0.5], [0.0, fy, tu * fy - 0.5], [0.0, 0.0, 1.0]])


def place_head_in_front(T_space_from_view_gl: np.ndarray, T_cam_from_head: np.ndarray, distance: float) -> np.ndarray:
    """T_space_from_head (4, 4): put the MPI's head in front of the user's initial head pose.

    The MPI camera is laid on the user's initial view, turned only about the vertical (gravity) axis so
    that a tilted head at start does not tilt the portrait, and moved along its optical axis so that the
    head joint is `distance` metres away. T_space_from_view_gl is the VIEW space in the reference space
    (OpenXR, y up); T_cam_from_head is the MPI camera's pose of the head (OpenCV)."""
    forward = -T_space_from_view_gl[:3, 2]  # OpenXR looks down -z
    yaw = math.atan2(-forward[0], -forward[2])
    c, s = math.cos(yaw), math.sin(yaw)
    upright = np.eye(4)
    upright[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
    upright[:3, 3] = T_space_from_view_gl[:3, 3]
    T_space_from_cam = upright @ np.linalg.inv(CV_FROM_GL)  # MPI camera = upright user view, OpenCV axes
    T = np.array(T_cam_from_head, dtype=np.float64).copy()
    T[:3, 3] *= distance / np.linalg.norm(T[:3, 3])  # same direction, joint at `distance`
    return T_space_from_cam @ T
