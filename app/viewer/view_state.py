"""What the viewer looks through: pure view parameters (distance, focal length, stereo, orbit,
playback) and the per-eye cameras they give.

The viewer's camera rig is defined relative to a reference head pose (the clip's first frame):
it orbits about that head joint, stands `distance` metres from it along its optical axis and has
a focal length of `focal` times the eye viewport's height. Every frame of the clip is then seen
from that fixed rig, so a head that moves in the clip moves in the view as well. Stereo eyes sit
at -/+ baseline/2 along the rig's x axis (`model.geometry.rig.stereo_pair`).

Everything here is a pure function of immutable dataclasses: the panel, the mouse, `--set` and
the tests all change the view through the same setters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# NumPy twins of model.geometry.camera: the viewer's main process stays torch-free (start-up time)
from model.geometry import rig
from model.geometry.crop_camera import DEFAULT_FOCAL_FACTOR

STEREO_MODES = ("mono", "sbs", "anaglyph")
DISTANCE_RANGE = (0.4, 4.0)  # metres; the MPI's near plane sits 0.15 m in front of the joint
FOCAL_RANGE = (0.5, 10.0)  # focal length in units of the eye viewport's height (2.5 = crop camera)
BASELINE_RANGE = (0.0, 0.12)  # metres
# MPIs only hold what the MPI camera saw: beyond small angles the layers visibly separate.
MAX_YAW = math.radians(25.0)
MAX_PITCH = math.radians(15.0)
DRAG_RADIANS_PER_PIXEL = math.radians(0.15)


@dataclass(frozen=True)
class ViewState:
    distance: float = 1.0  # metres from the rig centre to the reference head joint
    focal: float = DEFAULT_FOCAL_FACTOR  # focal length / eye viewport height
    dolly_zoom: bool = False  # when on, distance and focal move together: the head keeps its size
    baseline: float = rig.DEFAULT_BASELINE  # metres between the eyes
    stereo: str = "mono"  # one of STEREO_MODES
    converge: bool = True  # shift the eyes' principal points so the head joint has zero disparity
    yaw: float = 0.0  # radians, orbit about the head joint (camera y axis)
    pitch: float = 0.0  # radians, orbit about the head joint (camera x axis)


@dataclass(frozen=True)
class Playback:
    playing: bool = True
    frame: int = 0
    time: float = 0.0  # seconds since the clip's first frame


def initial_state(K_mpi: np.ndarray, T_cam_from_head: np.ndarray, mpi_height: int, **overrides) -> ViewState:
    """The view that reproduces the MPI camera: same focal length relative to the image height,
    same distance to the head joint. K_mpi (3, 3), T_cam_from_head (4, 4)."""
    state = ViewState(distance=float(T_cam_from_head[2, 3]), focal=float(K_mpi[1, 1]) / mpi_height)
    return replace(state, **overrides)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(float(x), lo), hi)


def _coupled(state: ViewState, distance: float) -> ViewState:
    """Keep focal / distance (the head's size in the image) while clamping both to their ranges."""
    ratio = state.focal / state.distance
    for _ in range(2):  # clamping one may push the other out of range once
        distance = _clamp(distance, *DISTANCE_RANGE)
        focal = ratio * distance
        if FOCAL_RANGE[0] <= focal <= FOCAL_RANGE[1]:
            break
        focal = _clamp(focal, *FOCAL_RANGE)
        distance = focal / ratio
    return replace(state, distance=distance, focal=focal)


def set_distance(state: ViewState, distance: float) -> ViewState:
    """Move the rig; with dolly zoom on, the focal length follows (as in model.geometry.camera.dolly_zoom)."""
    if not state.dolly_zoom:
        return replace(state, distance=_clamp(distance, *DISTANCE_RANGE))
    return _coupled(state, float(distance))


def set_focal(state: ViewState, focal: float) -> ViewState:
    """Change the focal length; with dolly zoom on, the rig moves so the head keeps its size."""
    if not state.dolly_zoom:
        return replace(state, focal=_clamp(focal, *FOCAL_RANGE))
    return _coupled(state, state.distance * float(focal) / state.focal)


def set_orbit(state: ViewState, yaw: float, pitch: float) -> ViewState:
    return replace(state, yaw=_clamp(yaw, -MAX_YAW, MAX_YAW), pitch=_clamp(pitch, -MAX_PITCH, MAX_PITCH))


def drag(state: ViewState, dx: float, dy: float) -> ViewState:
    """Mouse drag by (dx, dy) pixels turns the head with the mouse, like grabbing it: dragging to
    the right shows more of the head's left side (the camera orbits to the left)."""
    return set_orbit(state, state.yaw - dx * DRAG_RADIANS_PER_PIXEL, state.pitch + dy * DRAG_RADIANS_PER_PIXEL)


def set_stereo(state: ViewState, mode: str) -> ViewState:
    if mode not in STEREO_MODES:
        raise ValueError(f"unknown stereo mode {mode!r}: choose one of {', '.join(STEREO_MODES)}")
    return replace(state, stereo=mode)


def set_baseline(state: ViewState, baseline: float) -> ViewState:
    return replace(state, baseline=_clamp(baseline, *BASELINE_RANGE))


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected on/off, got {text!r}")


# name -> how `--set name=value` applies to the view (angles in degrees, baseline in metres).
SETTERS = {
    "distance": lambda s, v: set_distance(s, float(v)),
    "focal": lambda s, v: set_focal(s, float(v)),
    "dolly": lambda s, v: replace(s, dolly_zoom=parse_bool(v)),
    "baseline": lambda s, v: set_baseline(s, float(v)),
    "stereo": lambda s, v: set_stereo(s, v.strip()),
    "converge": lambda s, v: replace(s, converge=parse_bool(v)),
    "yaw": lambda s, v: set_orbit(s, math.radians(float(v)), s.pitch),
    "pitch": lambda s, v: set_orbit(s, s.yaw, math.radians(float(v))),
}


def set_value(state: ViewState, name: str, value: str) -> ViewState:
    """Apply one `name=value` setting (the values the panel shows; angles in degrees)."""
    if name not in SETTERS:
        raise ValueError(f"unknown view setting {name!r}: choose one of {', '.join(SETTERS)} (or frame, play)")
    try:
        return SETTERS[name](state, value)
    except ValueError as exc:
        raise ValueError(f"bad value for {name}: {exc}") from None


def rig_from_camera(state: ViewState, T_cam_from_head_ref: np.ndarray) -> np.ndarray:
    """T_rig_from_cam (4, 4): the rig centre after orbiting about the reference head joint and
    moving along its optical axis to `distance` from it. T_cam_from_head_ref (4, 4)."""
    T_ref = np.asarray(T_cam_from_head_ref, np.float32)
    T = rig.orbit(T_ref, state.yaw, state.pitch)
    T = rig.translation(np.array([0.0, 0.0, state.distance - float(T[2, 3])], np.float32)) @ T
    return T @ rig.invert_pose(T_ref)


def eye_intrinsics(state: ViewState, size: tuple[int, int], eye: int = 0) -> np.ndarray:
    """K (3, 3) of one eye for a viewport `size` = (w, h) px. eye: 0 = centre (mono), -1 = left,
    +1 = right. With `converge`, a point at the head's distance straight ahead projects to the
    viewport centre in both eyes (it appears at screen depth)."""
    w, h = size
    f = state.focal * h
    shift = eye * f * state.baseline / 2.0 / state.distance if state.converge else 0.0
    # The left eye (at -b/2) sees the head right of centre: its principal point moves left.
    return rig.intrinsics(f, f, (w - 1) / 2.0 + shift, (h - 1) / 2.0, dtype=np.float32)


def eye_cameras(
    state: ViewState, T_cam_from_head_ref: np.ndarray, T_cam_from_head: np.ndarray, size: tuple[int, int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(K (3, 3), T_view_from_head (4, 4))] per eye: one for mono, (left, right) for stereo.

    T_cam_from_head_ref: the pose that anchors the rig; T_cam_from_head: the current frame's head
    pose in the MPI camera; size: (w, h) px of one eye's viewport."""
    T_rig_from_head = rig_from_camera(state, T_cam_from_head_ref) @ np.asarray(T_cam_from_head, np.float32)
    if state.stereo == "mono":
        return [(eye_intrinsics(state, size, 0), T_rig_from_head)]
    left, right = rig.stereo_pair(T_rig_from_head, state.baseline)
    return [(eye_intrinsics(state, size, -1), left), (eye_intrinsics(state, size, +1), right)]


# eyes are drawn at most this sharp and scaled up linearly (app.gl.stereo.StereoCompositor): the
# window's eyes at 1 and at 2 pixels per MPI pixel differ by 37 dB PSNR, invisible side by side,
# and at 2 the render loop drew 44 instead of 90 stereo frames/s on one core (`imp bench viewer`)
PIXELS_PER_MPI_PIXEL = 1.0


def render_scale(cameras: list[tuple[np.ndarray, np.ndarray]], K_mpi: np.ndarray, T_cam_from_head: np.ndarray,
                 limit: float = PIXELS_PER_MPI_PIXEL) -> float:
    """Fraction (<= 1) of each eye viewport's width and height to draw the MPI at. At the head an
    MPI pixel spans fx_eye / z_eye / (fx_mpi / z_mpi) eye pixels (z: the head joint's distance from
    each camera); drawn at more than `limit` pixels per MPI pixel, the bilinear taps mostly repeat
    the same texels while the fill rate grows with the square of the size (llvmpipe draws on the CPU).
    cameras: eye_cameras(...); K_mpi (3, 3), T_cam_from_head (4, 4) of the shown MPI frame."""
    mpi_px = K_mpi[0, 0] / float(np.linalg.norm(T_cam_from_head[:3, 3]))
    eye_px = max(K[0, 0] / float(np.linalg.norm(T[:3, 3])) for K, T in cameras)
    return min(1.0, limit * mpi_px / eye_px)


def advance(playback: Playback, dt: float, num_frames: int, fps: float) -> Playback:
    """Playback after `dt` seconds of wall time: loops over the clip at its fps."""
    if not playback.playing or num_frames <= 1:
        return playback
    period = num_frames / fps
    time = (playback.time + dt) % period
    return replace(playback, time=time, frame=min(int(time * fps), num_frames - 1))


def seek(playback: Playback, frame: int, num_frames: int, fps: float) -> Playback:
    frame = int(_clamp(frame, 0, max(num_frames - 1, 0)))
    return replace(playback, frame=frame, time=(frame + 0.5) / fps)


ORBIT_VALID = math.radians(10.0)  # beyond this the MPI's layers visibly separate (paper: small viewpoint changes)
HEAD_RADIUS = 0.12  # m about the head joint that must stay inside the MPI's far plane in every eye


def view_warnings(state: ViewState, cameras: list[tuple[np.ndarray, np.ndarray]], size: tuple[int, int],
                  K_mpi: np.ndarray, T_cam_from_head: np.ndarray, far: float, mpi_size: tuple[int, int]) -> list[str]:
    """Why a view is outside the MPI's valid range (empty list: inside). cameras: eye_cameras(...)
    of the current frame; size (w, h) px per eye; K_mpi, T_cam_from_head (MPI camera), far (m) and
    mpi_size (H, W) of the shown MPI frame.

    Valid range: orbit within +-ORBIT_VALID, and the head region (a disc of HEAD_RADIUS about the
    joint, facing the eye) inside the picture of the MPI's far plane in every eye. The planes lie
    close behind the joint, so moving the viewer's camera hardly changes the second test: it fires
    when the head itself nears the MPI's edge (a driving head that moves far sideways), where the
    borders show right next to it. (Zoomed out, the MPI's frame is visible around the picture by
    design; that is not flagged.)"""
    out = []
    if abs(state.yaw) > ORBIT_VALID or abs(state.pitch) > ORBIT_VALID:
        out.append(f"orbit beyond +-{math.degrees(ORBIT_VALID):.0f} deg: the MPI's layers separate")
    H, W = mpi_size
    corners_px = np.array([[-0.5, -0.5, 1], [W - 0.5, -0.5, 1], [W - 0.5, H - 0.5, 1], [-0.5, H - 0.5, 1]], np.float64)
    corners_cam = far * corners_px @ np.linalg.inv(np.asarray(K_mpi, np.float64)).T
    T_head_from_cam = np.linalg.inv(np.asarray(T_cam_from_head, np.float64))
    corners_head = corners_cam @ T_head_from_cam[:3, :3].T + T_head_from_cam[:3, 3]
    angles = np.linspace(0.0, 2.0 * math.pi, 12, endpoint=False)
    for K, T_view_from_head in cameras:
        T = np.asarray(T_view_from_head, np.float64)
        quad = corners_head @ T[:3, :3].T + T[:3, 3]
        if (quad[:, 2] <= 1e-6).any():
            out.append("the view sees past the MPI's edges")
            break
        q = quad @ np.asarray(K, np.float64).T
        q = q[:, :2] / q[:, 2:]
        joint = T[:3, 3]
        disc = joint + HEAD_RADIUS * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], 1)
        p = disc @ np.asarray(K, np.float64).T
        p = p[:, :2] / p[:, 2:]
        edges = np.roll(q, -1, 0) - q
        cross = edges[None, :, 0] * (p[:, None, 1] - q[None, :, 1]) - edges[None, :, 1] * (p[:, None, 0] - q[None, :, 0])
        inside = (cross > 0).all(1) | (cross < 0).all(1)
        if not inside.all():
            out.append("the MPI's borders reach the head: it moved near the MPI's edge")
            break
    return out
