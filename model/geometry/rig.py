"""Poses and pinhole intrinsics without torch, for the viewer's camera rig: imp-viewer's main
process (window, GL render loop) only needs a few 4x4 / 3x3 products a frame, and importing torch
for them took 2.5 s of the ~3 s before its first frame. These are NumPy twins of the functions of
the same names in `model.geometry.camera` (the torch reference, differentiable and used by the
model): same conventions (OpenCV axes, metres, `T_a_from_b` 4x4 with `x_a = T_a_from_b @ x_b`,
pixel centres at integer coordinates), same formulas in the same order, so the same numbers up to
float rounding (tests/test_rig.py).

Every function is pure and batched over leading dimensions (`...`). Results are float64 unless
the caller gives float32: float32 when every array argument is float32 (Python numbers do not
count), or when asked with `dtype`.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

DEFAULT_BASELINE = 0.05  # metres between the eyes of the stereo rig


def _float_dtype(*values: ArrayLike, dtype: DTypeLike | None = None) -> np.dtype:
    """`dtype` if given, else float32 when every array among `values` is float32, else float64."""
    if dtype is not None:
        return np.dtype(dtype)
    # np.float64 scalars are Python floats too: they count as numbers, which is what they are
    arrays = [np.asarray(v).dtype for v in values if not isinstance(v, (int, float))]
    return np.dtype(np.float32 if arrays and all(d == np.float32 for d in arrays) else np.float64)


def intrinsics(fx: ArrayLike, fy: ArrayLike, cx: ArrayLike, cy: ArrayLike, dtype: DTypeLike | None = None) -> np.ndarray:
    """K (..., 3, 3) from focal lengths and principal point in pixels (broadcast together).

    The torch twin always gives float32; pass dtype=np.float32 for its numbers from Python floats."""
    dt = _float_dtype(fx, fy, cx, cy, dtype=dtype)
    fx, fy, cx, cy = np.broadcast_arrays(*(np.asarray(v, dt) for v in (fx, fy, cx, cy)))
    K = np.zeros(fx.shape + (3, 3), dt)
    K[..., 0, 0], K[..., 0, 2] = fx, cx
    K[..., 1, 1], K[..., 1, 2] = fy, cy
    K[..., 2, 2] = 1.0
    return K


def scale_intrinsics(K: ArrayLike, sx: float, sy: float | None = None) -> np.ndarray:
    """K (..., 3, 3) of the same camera after resizing the image by (sx, sy), pixel centres kept."""
    sy = sx if sy is None else sy
    K = np.asarray(K)
    dt = _float_dtype(K)
    # pixel centres at integer coordinates: u' + 0.5 = sx (u + 0.5)
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dt)
    return S @ K.astype(dt, copy=False)


def make_pose(R: ArrayLike, t: ArrayLike) -> np.ndarray:
    """T (..., 4, 4) from rotation R (..., 3, 3) and translation t (..., 3)."""
    R, t = np.asarray(R), np.asarray(t)
    T = np.zeros(R.shape[:-2] + (4, 4), _float_dtype(R, t))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: ArrayLike) -> np.ndarray:
    """Inverse of a rigid transform T (..., 4, 4)."""
    T = np.asarray(T)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    return make_pose(Rt, -(Rt @ t[..., None])[..., 0])


def translation(t: ArrayLike) -> np.ndarray:
    """Pure translation T (..., 4, 4) from t (..., 3)."""
    t = np.asarray(t)
    eye = np.broadcast_to(np.eye(3, dtype=_float_dtype(t)), t.shape[:-1] + (3, 3))
    return make_pose(eye, t)


def _axis_rotation(angle: np.ndarray, axis: int) -> np.ndarray:
    """R (..., 3, 3) about one OpenCV axis (0 = x, 1 = y, 2 = z) by `angle` (...) radians."""
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    if axis == 0:
        m = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        m = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        m = [c, -s, zero, s, c, zero, zero, zero, one]
    return np.stack(m, -1).reshape(angle.shape + (3, 3))


def euler_rotation(yaw: ArrayLike, pitch: ArrayLike, roll: ArrayLike, dtype: DTypeLike | None = None) -> np.ndarray:
    """R (..., 3, 3) = Ry(yaw) @ Rx(pitch) @ Rz(roll), radians, about the OpenCV axes
    (yaw turns about y (down), pitch about x (right), roll about z (forward)).

    The torch twin always works in float32; pass dtype=np.float32 for its numbers."""
    dt = _float_dtype(yaw, pitch, roll, dtype=dtype)
    yaw, pitch, roll = np.broadcast_arrays(*(np.asarray(v, dt) for v in (yaw, pitch, roll)))
    return _axis_rotation(yaw, 1) @ _axis_rotation(pitch, 0) @ _axis_rotation(roll, 2)


def orbit(T_cam_from_head: ArrayLike, yaw: ArrayLike, pitch: ArrayLike = 0.0) -> np.ndarray:
    """Rotate the camera about the head joint: yaw about the camera's y axis, pitch about its x
    axis, both through the joint, keeping the joint at the same place in the image when it is on
    the optical axis. T_cam_from_head (..., 4, 4) -> T' (..., 4, 4), in T's float dtype.

    The torch twin builds the rotation in float32 whatever T's dtype; here it follows T's, so
    float64 poses get a float64 rotation."""
    T = np.asarray(T_cam_from_head)
    T = T.astype(_float_dtype(T), copy=False)
    R = euler_rotation(yaw, pitch, 0.0, dtype=T.dtype)
    joint = T[..., :3, 3]
    # x' = R^T (x - joint) + joint : the world turns by R^T about the joint, i.e. the camera by R.
    batch = np.broadcast_shapes(R.shape[:-2], T.shape[:-2])
    Rt = np.broadcast_to(np.swapaxes(R, -1, -2), batch + (3, 3))
    joint = np.broadcast_to(joint, batch + (3,))
    about = translation(joint) @ make_pose(Rt, np.zeros_like(joint)) @ translation(-joint)
    return about @ T


def stereo_pair(T_cam_from_x: ArrayLike, baseline: float = DEFAULT_BASELINE) -> tuple[np.ndarray, np.ndarray]:
    """(T_left_from_x, T_right_from_x) (..., 4, 4): eyes at -/+ baseline/2 along the camera's x axis."""
    T = np.asarray(T_cam_from_x)
    T = T.astype(_float_dtype(T), copy=False)
    half = np.array([baseline / 2.0, 0.0, 0.0], T.dtype)
    # The left eye sits at x = -b/2 in camera coordinates, so points move by +b/2 in its frame.
    return translation(half) @ T, translation(-half) @ T
