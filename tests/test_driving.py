"""Driving sources (model/data/driving.py): pose transfer, the parametric expression / head-pose controls
on a real portrait's mesh, the built-in animation, and video driving on real footage (cross-identity
and self-driving, checked in the MPI camera)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")
cv2 = pytest.importorskip("cv2")

from model.geometry import camera, mpi  # noqa: E402
from model.net.config import TINY  # noqa: E402
from model.data.driving import (ANIMATION_PERIOD, DrivingFrames, DrivingParams, ParametricDriving, VideoDriving,  # noqa: E402
                           default_driving, transfer_pose)
from model.tracking import track_image, track_video  # noqa: E402

DRIVER = "videos/dreamtalk/M030_front_neutral_level1_001.mp4"  # 256^2, 25 fps, frontal speech
MOVING_DRIVER = "videos/LivePortrait/d12.mp4"  # the head moves within its first second
UPPER_LIP, LOWER_LIP = 13, 14  # MediaPipe: middle of the inner upper / lower lip
LIDS = ((159, 145), (386, 374))  # (upper, lower) lid middles of each eye
MOUTH_CORNERS = (61, 291)
FOREHEAD, CHIN = 10, 152


@pytest.fixture(scope="module")
def astronaut_track(astronaut_path):
    return track_image(astronaut_path)


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    R = camera.euler_rotation(*rng.uniform(-0.4, 0.4, 3)).double().numpy()
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = rng.uniform(-0.1, 0.1, 3) + [0, 0, 1.0]
    return T


def _angle(R: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


def test_transfer_pose_applies_the_drivers_motion_since_its_reference():
    rng = np.random.default_rng(0)
    Tp, Tr = _random_pose(rng), _random_pose(rng)
    Td = np.stack([Tr] + [_random_pose(rng) for _ in range(4)])
    out = transfer_pose(Tp, Tr, Td)
    # the reference frame lands exactly on the portrait's pose: no jump to the driver's placement
    np.testing.assert_allclose(out[0], Tp, atol=1e-6)
    for i in range(1, 5):
        # rotation since the reference, in the head frame, is the driver's
        np.testing.assert_allclose(Tp[:3, :3].T @ out[i, :3, :3], Tr[:3, :3].T @ Td[i, :3, :3], atol=1e-5)
        np.testing.assert_allclose(out[i, :3, 3] - Tp[:3, 3], Td[i, :3, 3] - Tr[:3, 3], atol=1e-6)
    # a portrait posed like the driver's reference follows the driver exactly
    np.testing.assert_allclose(transfer_pose(Tr, Tr, Td), Td, atol=1e-5)
    still = transfer_pose(Tp, Tr, Td, translate=False)
    np.testing.assert_allclose(still[:, :3, 3], np.broadcast_to(Tp[:3, 3], (5, 3)), atol=1e-6)


def test_mouth_open_parts_the_lips_and_moves_only_the_jaw(astronaut_track):
    src = ParametricDriving(astronaut_track)
    amounts = [0.0, 0.25, 0.5, 1.0]
    v = src.render([DrivingParams(mouth_open=a) for a in amounts]).vertices_head
    gap = np.linalg.norm(v[:, UPPER_LIP] - v[:, LOWER_LIP], axis=-1)
    assert np.all(np.diff(gap) > 0.003), gap  # metres
    assert gap[-1] > 0.02  # wide open: a few centimetres
    chin_drop = v[-1, CHIN, 1] - v[0, CHIN, 1]
    assert chin_drop > 0.01  # the chin goes down (+y in the head frame)
    assert np.linalg.norm(v[-1, UPPER_LIP] - v[0, UPPER_LIP]) < 0.001
    assert np.linalg.norm(v[-1, FOREHEAD] - v[0, FOREHEAD]) < 1e-6
    # the pose is the portrait's own
    np.testing.assert_allclose(src.render([DrivingParams(mouth_open=1)]).T_cam_from_head[0], astronaut_track.T_cam_from_head[0])


def test_blink_closes_both_eyes_and_smile_lifts_the_corners(astronaut_track):
    src = ParametricDriving(astronaut_track)
    open_, shut, smile = src.render([DrivingParams(), DrivingParams(blink=1.0), DrivingParams(smile=1.0)]).vertices_head
    for up, lo in LIDS:  # the lid middles are not exactly above each other: compare heights (head-frame y)
        gap_open = open_[lo, 1] - open_[up, 1]
        assert gap_open > 0.004
        assert abs(shut[lo, 1] - shut[up, 1]) < 0.25 * gap_open
    right, left = MOUTH_CORNERS
    width = lambda v: v[left, 0] - v[right, 0]  # noqa: E731
    assert width(smile) > width(open_) + 0.006  # corners go outwards
    assert smile[right, 1] < open_[right, 1] - 0.003 and smile[left, 1] < open_[left, 1] - 0.003  # and up
    assert np.linalg.norm(smile[FOREHEAD] - open_[FOREHEAD]) < 1e-6


@pytest.mark.parametrize("axis", ["yaw", "pitch", "roll"])
def test_head_pose_controls_rotate_the_head_by_the_given_angle(astronaut_track, axis):
    src = ParametricDriving(astronaut_track)
    T0 = astronaut_track.T_cam_from_head[0].astype(np.float64)
    T = src.render([DrivingParams(**{axis: 15.0})]).T_cam_from_head[0].astype(np.float64)
    rel = T0[:3, :3].T @ T[:3, :3]  # rotation in the head frame
    assert _angle(rel) == pytest.approx(15.0, abs=0.01)
    k = {"yaw": 1, "pitch": 0, "roll": 2}[axis]  # about the head's own down / right / forward axis
    np.testing.assert_allclose(rel[:, k], np.eye(3)[k], atol=1e-6)
    np.testing.assert_allclose(T[:3, 3], T0[:3, 3], atol=1e-6)  # it turns about the head joint
    if axis == "pitch":  # positive pitch: the chin comes down in the image
        K = astronaut_track.K.astype(np.float64)
        chin = [camera.project(torch.from_numpy(K), torch.from_numpy(P), torch.from_numpy(astronaut_track.template[CHIN:CHIN + 1].astype(np.float64)))[0][0, 1]
                for P in (T0, T)]
        assert chin[1] > chin[0] + 1.0


def test_params_change_between_clips(astronaut_track):
    src = ParametricDriving(astronaut_track)
    a = src.frames(4)
    src.params = DrivingParams(mouth_open=1.0, yaw=10.0)
    b = src.frames(4)
    assert src.remaining() is None  # endless
    gap = lambda f: np.linalg.norm(f.vertices_head[:, UPPER_LIP] - f.vertices_head[:, LOWER_LIP], axis=-1)  # noqa: E731
    assert np.all(gap(b) > gap(a) + 0.02)
    assert not np.allclose(a.T_cam_from_head, b.T_cam_from_head)


def test_default_animation_is_smooth_periodic_and_alive(astronaut_track):
    fps = 25.0
    n = int(ANIMATION_PERIOD * fps)
    src = default_driving(astronaut_track, fps=fps, max_frames=n + 2)
    frames = DrivingFrames.concat([src.frames(50) for _ in range(4)] + [src.frames(50)])  # clips of 50, the last one short
    assert len(frames) == n + 2 and src.frames(1) is None
    # it starts on the portrait itself (its pose and its own mesh)
    np.testing.assert_allclose(frames.T_cam_from_head[0], astronaut_track.T_cam_from_head[0], atol=1e-6)
    np.testing.assert_allclose(frames.vertices_head[0], astronaut_track.vertices_head(0), atol=1e-6)
    cam = np.einsum("nij,nvj->nvi", frames.T_cam_from_head[:, :3, :3], frames.vertices_head) + frames.T_cam_from_head[:, None, :3, 3]
    # periodic: one period later everything is back (the loop is seamless)
    np.testing.assert_allclose(cam[n], cam[0], atol=2e-5)
    np.testing.assert_allclose(cam[n + 1], cam[1], atol=2e-5)
    # smooth: no vertex moves more than 8 mm between frames at 25 fps (speech and blinks are that fast),
    # and sampled 4x as often the largest step is ~4x smaller (a jump would stay as large)
    step = np.linalg.norm(np.diff(cam, axis=0), axis=-1).max()
    assert step < 0.008, step
    fine = default_driving(astronaut_track, fps=4 * fps).frames(4 * n)
    fine_cam = np.einsum("nij,nvj->nvi", fine.T_cam_from_head[:, :3, :3], fine.vertices_head) + fine.T_cam_from_head[:, None, :3, 3]
    assert np.linalg.norm(np.diff(fine_cam, axis=0), axis=-1).max() < 0.3 * step
    # and continuous across clip boundaries: no bigger steps there than elsewhere
    steps = np.linalg.norm(np.diff(cam, axis=0), axis=-1).max(-1)
    assert steps[[49, 99, 149]].max() <= steps.max()
    # alive: it talks, blinks and sways
    v = frames.vertices_head
    gap = np.linalg.norm(v[:, UPPER_LIP] - v[:, LOWER_LIP], axis=-1)
    assert gap.max() - gap.min() > 0.008
    lid = v[:, LIDS[0][1], 1] - v[:, LIDS[0][0], 1]
    assert lid.min() < 0.4 * lid.max()
    yaw = np.array([_angle(frames.T_cam_from_head[0, :3, :3].T.astype(np.float64) @ T[:3, :3]) for T in frames.T_cam_from_head])
    assert 2.0 < yaw.max() < 8.0


def test_video_driving_cross_identity_uses_the_portraits_template(shared_data, astronaut_track):
    src = VideoDriving(shared_data / DRIVER, astronaut_track, max_frames=9, progress=False)
    driver = src.driver
    assert src.fps == 25.0 and len(src) == 9 and src.remaining() == 9
    a, b, c = src.frames(5), src.frames(5), src.frames(5)
    assert (len(a), len(b), c) == (5, 4, None)
    frames = DrivingFrames.concat([a, b])
    np.testing.assert_allclose(frames.vertices_head - driver.expression, np.broadcast_to(astronaut_track.template, (9, 478, 3)), atol=1e-6)
    # the head starts at the portrait's pose and moves as the driver's head moved
    np.testing.assert_allclose(frames.T_cam_from_head[0], astronaut_track.T_cam_from_head[0], atol=1e-5)
    np.testing.assert_allclose(frames.T_cam_from_head, transfer_pose(astronaut_track.T_cam_from_head[0], driver.T_cam_from_head[0],
                                                                     driver.T_cam_from_head), atol=1e-6)


def test_self_driving_lands_on_the_drivers_face_in_the_mpi_camera(shared_data):
    """The portrait is the driving video's first frame: the retargeted meshes, rasterised in the
    portrait's crop camera (the MPI camera), cover the driver's tracked face in every frame."""
    from model.diffusion.pipeline import mesh_inputs
    from model.geometry.conditions import canonical_code
    from model.tracking.crop import crop_affine
    from model.formats.video import iter_frames

    first = next(iter_frames(shared_data / MOVING_DRIVER))
    portrait = track_image(first)
    driver = track_video(shared_data / MOVING_DRIVER, progress=False, max_frames=30)
    frames = VideoDriving(driver, portrait).frames(30)
    cfg = dataclasses.replace(TINY, res=128)
    _, alpha, depths = mesh_inputs(frames.vertices_head, frames.T_cam_from_head, canonical_code(torch.from_numpy(portrait.template)), cfg)
    coverage = 1.0 - torch.prod(1.0 - alpha, dim=1)  # (n, R, R): "over" of the mesh alpha planes
    A = crop_affine(portrait.K, cfg.res)
    lm = driver.landmarks[:, :468] @ A[:2, :2].T + A[:2, 2]  # the driver's own tracked face, in MPI pixels
    centre = lm.mean(1)
    assert np.linalg.norm(centre - centre[0], axis=-1).max() > 5.0  # the head really moves (px at 128^2)
    for i in range(len(frames)):
        hull = np.zeros((cfg.res, cfg.res), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm[i]).astype(np.int32)), 1)
        mask = coverage[i].numpy() > 0.5
        iou = (mask & (hull > 0)).sum() / (mask | (hull > 0)).sum()
        assert iou > 0.88, (i, iou)  # a still head at the first pose falls to ~0.35 here
    # the planes of each frame follow its head distance (near = r - 0.15, far = r + 0.05)
    r = np.linalg.norm(frames.T_cam_from_head[:, :3, 3], axis=-1)
    np.testing.assert_allclose(depths[:, 0].numpy(), r + mpi.FAR_OFFSET, rtol=1e-5)
    np.testing.assert_allclose(depths[:, -1].numpy(), r - mpi.NEAR_OFFSET, rtol=1e-5)
    # and the mesh is the driver's own, up to the two trackings' templates (a few mm)
    cam = lambda V, T: np.einsum("nij,nvj->nvi", T[:, :3, :3], V) + T[:, None, :3, 3]  # noqa: E731
    own = cam(driver.vertices_head(), driver.T_cam_from_head)
    ours = cam(frames.vertices_head, frames.T_cam_from_head)
    rel = (ours - ours.mean(1, keepdims=True)) - (own - own.mean(1, keepdims=True))
    assert np.linalg.norm(rel, axis=-1).mean() < 0.004
