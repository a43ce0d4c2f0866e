"""Driving sources: where the per-frame expression and head pose of a generated video come from,
already retargeted onto the portrait (DESIGN.md Pipeline 1; paper sec. 3.4).

A `DrivingSource` hands out `DrivingFrames` a clip at a time: the portrait's mesh with the
driver's expression, in the portrait's head frame, and its pose `T_cam_from_head` in the MPI
camera, which is the portrait's crop camera (f = 2.5 S). The head starts where the portrait's own
head is and moves as the driver's head moves relative to the driver's first frame, so a driver
sitting elsewhere in their video does not make the portrait jump (`transfer_pose`).

Sources here:
- `VideoDriving`: a driving video (or a Track of one): `track_video` + `retarget` + `transfer_pose`.
  Self-driving (the portrait is a frame of the driving video) reproduces the driver's mesh and pose.
- `ParametricDriving`: expression / head-pose controls on the portrait's own mesh (mouth open,
  blink, smile, yaw, pitch, roll: `DrivingParams`), which a UI may change between clips, plus an
  optional built-in gentle animation (`animation_params`: talking-like mouth, blinks, head sway);
  `default_driving` is what runs when no driving video is given.
- A live source (the viewer's webcam) subclasses `DrivingSource` the same way: `frames(n)` blocks
  until n new frames are tracked and maps them with `retarget_frames` against the first tracked
  frame. It lives with the viewer (app/), not here.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.tracking.track import Track

if TYPE_CHECKING:
    from model.data.driving_cache import TrackingProgress


@dataclass
class DrivingFrames:
    """n driving frames retargeted onto the portrait: vertices_head (n, 478, 3) float32 metres in
    the head frame (portrait template + driver expression); T_cam_from_head (n, 4, 4) float32 in the
    MPI camera; torso_shift (n, 2) float32: how far the body below the neck has moved (x right, y
    down, fractions of the crop: model/data/body_motion.py; zeros when the source does not know);
    T_hair (n, 4, 4) float32: the poses the hair and ears follow (model/data/hair_motion.py; the
    head's own poses when the source does not know)."""

    vertices_head: np.ndarray
    T_cam_from_head: np.ndarray
    torso_shift: np.ndarray | None = None
    T_hair: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices_head = np.asarray(self.vertices_head, np.float32)
        self.T_cam_from_head = np.asarray(self.T_cam_from_head, np.float32)
        n = len(self.vertices_head)
        self.torso_shift = np.zeros((n, 2), np.float32) if self.torso_shift is None else np.asarray(self.torso_shift, np.float32)
        self.T_hair = self.T_cam_from_head.copy() if self.T_hair is None else np.asarray(self.T_hair, np.float32)
        if self.vertices_head.ndim != 3 or self.T_cam_from_head.shape != (n, 4, 4) or self.torso_shift.shape != (n, 2) \
                or self.T_hair.shape != (n, 4, 4):
            raise ValueError(f"driving frames need vertices (n, V, 3), poses (n, 4, 4), torso shifts (n, 2) and hair poses "
                             f"(n, 4, 4), got {self.vertices_head.shape}, {self.T_cam_from_head.shape}, {self.torso_shift.shape} "
                             f"and {self.T_hair.shape}")

    def __len__(self) -> int:
        return int(self.vertices_head.shape[0])

    def __getitem__(self, index: slice | np.ndarray | list[int]) -> "DrivingFrames":
        return DrivingFrames(self.vertices_head[index], self.T_cam_from_head[index], self.torso_shift[index], self.T_hair[index])

    @staticmethod
    def concat(parts: list["DrivingFrames"]) -> "DrivingFrames":
        return DrivingFrames(np.concatenate([p.vertices_head for p in parts]), np.concatenate([p.T_cam_from_head for p in parts]),
                             np.concatenate([p.torso_shift for p in parts]), np.concatenate([p.T_hair for p in parts]))

    def padded(self, n: int) -> "DrivingFrames":
        """At least n frames, the last one repeated (a clip's tail past the end of the driving)."""
        if len(self) >= n:
            return self
        return self[np.minimum(np.arange(n), len(self) - 1)]


class DrivingSource(ABC):
    """A stream of driving frames at `fps`. `frames(n)` returns the next n frames, fewer when the
    source ends within them, None when it has ended. `remaining()` is how many frames are left
    (None: endless or unknown, e.g. a webcam or the parametric controls)."""

    fps: float

    @abstractmethod
    def frames(self, n: int) -> DrivingFrames | None: ...

    def remaining(self) -> int | None:
        return None


# ------------------------------------------------------------------------------------------- poses

def transfer_pose(T_portrait: np.ndarray, T_driver_ref: np.ndarray, T_driver: np.ndarray, translate: bool = True) -> np.ndarray:
    """(n, 4, 4) float32: the portrait's pose moved as the driver moved since its reference frame.

    T_portrait (4, 4): the portrait's head in the MPI camera; T_driver_ref (4, 4) and T_driver
    (n, 4, 4): the driver's head in its own camera. The rotation since the reference is taken in
    the head frame (R_p R_ref^T R_i: a nod stays a nod on a portrait that faces the camera at an
    angle); the joint's translation since the reference is added in camera coordinates (metres, the
    same in both crop cameras, whose crops span the same 0.4 m at the head), or left out when
    `translate` is False. When the portrait's pose equals the driver's reference pose this gives
    back the driver's poses exactly."""
    Tp = np.asarray(T_portrait, np.float64)
    Tr = np.asarray(T_driver_ref, np.float64)
    Td = np.asarray(T_driver, np.float64)
    out = np.zeros_like(Td)
    out[:, :3, :3] = Tp[:3, :3] @ Tr[:3, :3].T @ Td[:, :3, :3]
    out[:, :3, 3] = Tp[:3, 3] + (Td[:, :3, 3] - Tr[:3, 3] if translate else 0.0)
    out[:, 3, 3] = 1.0
    return out.astype(np.float32)


def retarget_frames(portrait: Track, expression: np.ndarray, T_driver: np.ndarray, T_driver_ref: np.ndarray,
                    translate: bool = True) -> DrivingFrames:
    """The portrait's template + driver expression offsets (n, 478, 3), posed by `transfer_pose`."""
    vertices = portrait.template[None].astype(np.float32) + np.asarray(expression, np.float32)
    return DrivingFrames(vertices, transfer_pose(portrait.T_cam_from_head[0], T_driver_ref, T_driver, translate))


class VideoDriving(DrivingSource):
    """A driving video (a path, tracked here up to `max_frames` or read from the driving-track cache,
    or its Track), retargeted onto the portrait: the portrait's template with the driver's
    expressions, posed by `transfer_pose` against the driver's first frame, the portrait's body
    moved as the driver's torso moves (model/data/body_motion.py), its hair as the driver's hair
    moves (model/data/hair_motion.py)."""

    def __init__(self, driver: str | Path | Track, portrait: Track, max_frames: int | None = None, progress: bool = True,
                 translate: bool = True, cache_dir: Path | None = None, torso_shift: np.ndarray | None = None,
                 hair_steadiness: int = 0, on_progress: TrackingProgress | None = None):
        """cache_dir: where a video's track is kept and found again (model/data/driving_cache.py;
        None: tracked every time). torso_shift (n, 2) and hair_steadiness, when the driver is given
        as a Track (a video's are measured here): the torso's motion (None: the body stays) and the
        poses the hair follows (hair_motion.hair_steadiness; 0: the head's). on_progress(
        stage, done, total): a video's tracking, frame by frame (driving_cache.driving_video_track)."""
        from model.data.hair_motion import hair_poses
        from model.tracking import retarget

        if not isinstance(driver, Track):
            from model.data.driving_cache import driving_video_track

            self.path = Path(driver)
            driver, torso_shift, hair_steadiness = driving_video_track(self.path, cache_dir, progress=progress,
                                                                       max_frames=max_frames, on_progress=on_progress)
        else:
            self.path = None
            driver = driver if max_frames is None else _track_head(driver, max_frames)
        if len(driver) == 0:
            raise ValueError("the driving track has no frames")
        self.driver = driver
        self.fps = float(driver.fps) if driver.fps > 0 else 25.0
        vertices, T_driver = retarget(portrait, driver)
        torso = None if torso_shift is None else np.asarray(torso_shift, np.float32)[:len(driver)]
        T_portrait = portrait.T_cam_from_head[0]
        T_hair = hair_poses(T_driver, self.fps, hair_steadiness)
        self.all_frames = DrivingFrames(vertices, transfer_pose(T_portrait, T_driver[0], T_driver, translate), torso,
                                        None if T_hair is None else transfer_pose(T_portrait, T_hair[0], T_hair, translate))
        self._next = 0

    def __len__(self) -> int:
        return len(self.all_frames)

    def frames(self, n: int) -> DrivingFrames | None:
        if self._next >= len(self.all_frames):
            return None
        out = self.all_frames[self._next:self._next + n]
        self._next += len(out)
        return out

    def remaining(self) -> int:
        return len(self.all_frames) - self._next

    def rewind(self) -> None:
        self._next = 0


def _track_head(track: Track, n: int) -> Track:
    """The first n frames of a video track."""
    per_frame = {"landmarks", "raw_landmarks", "found", "T_cam_from_head", "expression"}
    return dataclasses.replace(track, **{k: getattr(track, k)[:n] for k in per_frame})


# ----------------------------------------------------------------------------- parametric controls

@dataclass(frozen=True)
class DrivingParams:
    """Expression and head-pose controls. mouth_open, blink, smile in [0, 1] (0 = the portrait's
    own face); yaw, pitch, roll in degrees about the head's own axes (yaw about its down axis:
    turning; pitch about its right axis: nodding, positive = chin down; roll about its forward
    axis)."""

    mouth_open: float = 0.0
    blink: float = 0.0
    smile: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def __add__(self, other: "DrivingParams") -> "DrivingParams":
        return DrivingParams(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


JAW_MAX_DEGREES = 18.0  # mouth_open = 1: ~3 cm between the lips, a wide-open "ah"
JAW_HINGE = np.array([0.0, 0.0, -0.01])  # head frame: the jaw turns about an axis ~1 cm in front of the head joint
JAW_GLIDE = 0.012  # m: the jaw also slides forward this much at mouth_open = 1 (the condyles glide), so the chin drops more than it retreats
JAW_BAND = 0.012  # m: below the mouth line the jaw's weight rises from 0 to 1 over this height
LID_MEET = 0.2  # blink: the lids meet this far from the lower towards the upper lid
LID_SKIN_SIGMA = 0.006  # m: the skin above the upper lid follows it with this Gaussian falloff
SMILE_CORNER = np.array([0.005, -0.004, 0.003])  # m: mouth corner offset (out, down (-: up), into the head) at smile = 1
SMILE_SIGMA = 0.015  # m: falloff of the smile around the corners (cheeks bunch up with them)


def _contour_halves(edges: frozenset, a: int, b: int) -> tuple[list[int], list[int]]:
    """The two paths between corners a and b along a closed landmark contour given as edges."""
    adj: dict[int, list[int]] = {}
    for i, j in edges:
        adj.setdefault(i, []).append(j)
        adj.setdefault(j, []).append(i)
    paths = []
    for first in adj[a]:
        path, prev, cur = [a, first], a, first
        while cur != b:
            nxt = next(v for v in adj[cur] if v != prev)
            prev, cur = cur, nxt
            path.append(cur)
        paths.append(path)
    return paths[0], paths[1]


@dataclass(frozen=True)
class FaceRegions:
    """Landmark index paths of one face template (head frame), from MediaPipe's named contours,
    each ordered from one corner to the other with both corners included: the inner and outer
    upper / lower lips, and per eye the upper and lower lid."""

    inner_lips: tuple[np.ndarray, np.ndarray]  # (upper, lower)
    outer_lips: tuple[np.ndarray, np.ndarray]
    lids: tuple[tuple[np.ndarray, np.ndarray], ...]  # per eye (upper, lower): right eye, left eye

    @property
    def upper_lip(self) -> np.ndarray:
        return np.concatenate([self.inner_lips[0][1:-1], self.outer_lips[0][1:-1]])

    @property
    def lower_lip(self) -> np.ndarray:
        return np.concatenate([self.inner_lips[1][1:-1], self.outer_lips[1][1:-1]])

    @property
    def mouth_corners(self) -> np.ndarray:
        """The two outer corners, then the two inner ones."""
        return np.array([self.outer_lips[0][0], self.outer_lips[0][-1], self.inner_lips[0][0], self.inner_lips[0][-1]])


@functools.cache
def _contours() -> dict[str, tuple[frozenset, tuple[int, int]]]:
    """MediaPipe's lip contours split into their outer and inner loops, and the two eye contours,
    each with its two corners."""
    from model.tracking.facemesh import (LEFT_EYE_CORNERS, MOUTH_CORNERS, MOUTH_INNER_CORNERS, RIGHT_EYE_CORNERS,
                                         mesh_connections)

    fmc = mesh_connections()
    lips = frozenset(fmc.FACEMESH_LIPS)
    adj: dict[int, set[int]] = {}
    for i, j in lips:
        adj.setdefault(i, set()).add(j)
        adj.setdefault(j, set()).add(i)
    inner, stack = {MOUTH_INNER_CORNERS[0]}, [MOUTH_INNER_CORNERS[0]]
    while stack:  # the inner loop: everything connected to an inner corner
        for v in adj[stack.pop()] - inner:
            inner.add(v)
            stack.append(v)
    return {
        "outer_lips": (frozenset(e for e in lips if e[0] not in inner), MOUTH_CORNERS),
        "inner_lips": (frozenset(e for e in lips if e[0] in inner), MOUTH_INNER_CORNERS),
        "right_eye": (frozenset(fmc.FACEMESH_RIGHT_EYE), RIGHT_EYE_CORNERS),
        "left_eye": (frozenset(fmc.FACEMESH_LEFT_EYE), LEFT_EYE_CORNERS),
    }


def face_regions(template: np.ndarray) -> FaceRegions:
    """Split MediaPipe's lip and eye contours of `template` (478, 3) into upper and lower halves
    (the half with the smaller mean y, i.e. higher on the face, is the upper one)."""
    contours = _contours()

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        edges, (a, b) = contours[name]
        p, q = (np.array(h) for h in _contour_halves(edges, a, b))
        return (p, q) if template[p, 1].mean() < template[q, 1].mean() else (q, p)

    return FaceRegions(split("inner_lips"), split("outer_lips"), (split("right_eye"), split("left_eye")))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _interp_path(s: np.ndarray, s_path: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Points (n, 3) at parameters s (n,) along a polyline path (m, 3) with parameters s_path (m,)."""
    order = np.argsort(s_path)
    return np.stack([np.interp(s, s_path[order], path[order, k]) for k in range(3)], -1)


class ExpressionRig:
    """Expression offsets on one face template, built from the landmark topology.

    - mouth open: the jaw turns about a hinge near the head joint and slides forward a little. Its weight is 1 below the lips'
      parting line (the middle of the inner lips) and 0 above, with a transition that is sharp
      between the lips and widens to `JAW_BAND` beyond the mouth corners (cheeks stretch, lips do
      not tear); the lip contours themselves are pinned to their side (corners: 0.3).
    - blink: each upper lid slides onto the lower lid (they meet `LID_MEET` of the way up), the
      lower lid rises to meet it, and the skin above the upper lid follows with a Gaussian falloff.
    - smile: the mouth corners move out, up and back, the skin around them with them.
    All offsets are in the head frame, metres, (478, 3)."""

    def __init__(self, template: np.ndarray):
        from model.tracking.facemesh import MESH_POINTS

        v = np.asarray(template, np.float64)
        self.template = v
        r = face_regions(v)
        self.regions = r
        # --- jaw weights
        up, lo = r.inner_lips
        axis = v[up[-1]] - v[up[0]]
        half_width = np.linalg.norm(axis) / 2
        axis /= 2 * half_width
        centre = (v[up[0]] + v[up[-1]]) / 2
        s = (v - centre) @ axis
        parting = (_interp_path(s, (v[up] - centre) @ axis, v[up]) + _interp_path(s, (v[lo] - centre) @ axis, v[lo])) / 2
        band = np.clip(0.001 + JAW_BAND * (np.abs(s) / half_width) ** 2, 0.001, JAW_BAND)
        w = _smoothstep((v[:, 1] - parting[:, 1]) / band)
        w[r.upper_lip] = 0.0
        w[r.lower_lip] = 1.0
        w[r.mouth_corners] = 0.3
        self.jaw_weight = w
        # --- blink: per-vertex offsets at blink = 1
        blink = np.zeros_like(v)
        for upper, lower in r.lids:
            e_axis = v[upper[-1]] - v[upper[0]]
            e_axis /= np.linalg.norm(e_axis)
            s_up, s_lo = v[upper] @ e_axis, v[lower] @ e_axis
            lid_up = upper[1:-1]
            lid_lo = lower[1:-1]
            below_up = _interp_path(v[lid_up] @ e_axis, s_lo, v[lower])
            above_lo = _interp_path(v[lid_lo] @ e_axis, s_up, v[upper])
            blink[lid_up] = below_up + LID_MEET * (v[lid_up] - below_up) - v[lid_up]
            blink[lid_lo] = LID_MEET * (above_lo - v[lid_lo])
            # skin above the upper lid follows the nearest upper-lid point
            d = np.linalg.norm(v[:, None] - v[None, lid_up], axis=-1)  # (V, u)
            nearest = lid_up[d.argmin(1)]
            fall = np.exp(-0.5 * (d.min(1) / LID_SKIN_SIGMA) ** 2) * (v[:, 1] < v[nearest, 1])
            fall[np.concatenate([upper, lower])] = 0.0
            blink += fall[:, None] * blink[nearest]
        blink[MESH_POINTS:] = 0.0  # iris points: not part of the rasterised surface
        self.blink_offset = blink
        # --- smile: offsets at smile = 1
        smile = np.zeros_like(v)
        for c in r.mouth_corners[:2]:  # outer corners; the inner ones follow through the falloff
            side = 1.0 if (v[c] - centre) @ axis > 0 else -1.0
            d = np.linalg.norm(v - v[c], axis=-1)
            fall = np.exp(-0.5 * (d / SMILE_SIGMA) ** 2) * (s * side > 0)
            out = side * axis
            smile += fall[:, None] * (SMILE_CORNER[0] * out + SMILE_CORNER[1] * np.array([0.0, 1.0, 0.0])
                                      + SMILE_CORNER[2] * np.array([0.0, 0.0, 1.0]))
        self.smile_offset = smile

    def offsets(self, mouth_open: float = 0.0, blink: float = 0.0, smile: float = 0.0) -> np.ndarray:
        """(478, 3) float32 expression offsets for the given amounts (each clipped to [0, 1])."""
        v = self.template
        angle = math.radians(JAW_MAX_DEGREES) * float(np.clip(mouth_open, 0.0, 1.0))
        rotated = (v - JAW_HINGE) @ _rotation_x(angle).T + JAW_HINGE
        glide = np.array([0.0, 0.0, -JAW_GLIDE * angle / math.radians(JAW_MAX_DEGREES)])
        out = self.jaw_weight[:, None] * (rotated - v + glide)
        out += float(np.clip(blink, 0.0, 1.0)) * self.blink_offset
        out += float(np.clip(smile, 0.0, 1.0)) * self.smile_offset
        return out.astype(np.float32)


def head_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) rotation in the head frame (model.geometry.rig.euler_rotation, degrees, float32 as the
    torch twin makes it). Positive pitch turns the chin down (towards the camera's +y)."""
    from model.geometry.rig import euler_rotation

    return euler_rotation(math.radians(yaw_deg), math.radians(pitch_deg), math.radians(roll_deg), dtype=np.float32).astype(np.float64)


ANIMATION_PERIOD = 8.0  # s: every component of the built-in animation repeats after this


def animation_params(t: np.ndarray | float) -> list[DrivingParams]:
    """The built-in gentle animation at times t (s): talking-like mouth motion (syllables at ~3 Hz
    under a slower phrase envelope), a blink every 4 s (~0.25 s long) and a slow head sway of a few
    degrees. Every frequency is a multiple of 1 / ANIMATION_PERIOD, so it loops seamlessly; every
    component is smooth (C-infinity) in t and zero at t = 0, so frame 0 is the portrait itself
    (which is also the first clip's first-frame condition)."""
    t = np.atleast_1d(np.asarray(t, np.float64))
    w = 2 * math.pi / ANIMATION_PERIOD
    syllables = 0.5 - 0.5 * np.cos(26 * w * t)  # 3.25 Hz
    phrase = 0.5 - 0.5 * np.cos(w * t)  # talk, pause
    mouth = 0.45 * syllables * (0.25 + 0.75 * phrase)
    blink = np.exp(30.0 * (np.cos(2 * w * t - 2.0) - 1.0))  # von Mises bump: 1 at its peak, < 1e-18 at t = 0
    yaw = 4.0 * np.sin(w * t)
    pitch = 2.0 * np.sin(2 * w * t) + 1.0 * np.sin(26 * w * t) * phrase  # nods a little with speech
    roll = 1.5 * np.sin(3 * w * t)
    smile = 0.15 * (0.5 - 0.5 * np.cos(w * t))
    return [DrivingParams(float(m), float(b), float(s), float(y), float(p), float(r))
            for m, b, s, y, p, r in zip(mouth, blink, smile, yaw, pitch, roll)]


class ParametricDriving(DrivingSource):
    """The portrait's own mesh, driven by `params` (change it between clips, e.g. from UI sliders)
    and, when `animate` is on, by the built-in animation added on top. Endless unless `max_frames`."""

    def __init__(self, portrait: Track, params: DrivingParams | None = None, animate: bool = False, fps: float = 25.0,
                 max_frames: int | None = None):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.portrait = portrait
        self.params = params or DrivingParams()
        self.animate = animate
        self.fps = float(fps)
        self.max_frames = max_frames
        self.rig = ExpressionRig(portrait.template)
        self._next = 0

    def frame_params(self, start: int, n: int) -> list[DrivingParams]:
        """The controls of frames start .. start + n - 1."""
        if not self.animate:
            return [self.params] * n
        return [self.params + a for a in animation_params(np.arange(start, start + n) / self.fps)]

    def render(self, params: list[DrivingParams]) -> DrivingFrames:
        """DrivingFrames of the portrait under each set of controls."""
        if not params:
            return DrivingFrames(np.zeros((0, *self.portrait.template.shape), np.float32), np.zeros((0, 4, 4), np.float32))
        template = self.portrait.template.astype(np.float32)
        T0 = self.portrait.T_cam_from_head[0].astype(np.float64)
        verts, poses = [], []
        for p in params:
            verts.append(template + self.rig.offsets(p.mouth_open, p.blink, p.smile))
            T = T0.copy()
            T[:3, :3] = T0[:3, :3] @ head_rotation(p.yaw, p.pitch, p.roll)
            poses.append(T)
        return DrivingFrames(np.stack(verts), np.stack(poses))

    def frames(self, n: int) -> DrivingFrames | None:
        if self.max_frames is not None:
            n = min(n, self.max_frames - self._next)
            if n <= 0:
                return None
        out = self.render(self.frame_params(self._next, n))
        self._next += n
        return out

    def remaining(self) -> int | None:
        return None if self.max_frames is None else self.max_frames - self._next


def default_driving(portrait: Track, fps: float = 25.0, max_frames: int | None = None) -> ParametricDriving:
    """The built-in driving source when no driving video is given: the portrait's own face with
    the gentle talking animation."""
    return ParametricDriving(portrait, animate=True, fps=fps, max_frames=max_frames)
