"""model/data/hair_motion.py: which poses a driver's hair follows. A head whose tracked pose wobbles
while its outline stays still gets the steadiest poses; one whose outline also drifts slowly gets
the steady ones, which follow the drift; a head whose outline wobbles with the tracked pose keeps
them; on real footage, LivePortrait d20 (quick real head motion) keeps the tracked poses and a
dreamtalk speaker (a still skull) gets steadier ones; training pairs and driving videos hand the
choice on to the identity condition."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.data.driving import VideoDriving
from model.data.hair_motion import HAIR_STEADINESS, hair_poses, hair_steadiness
from model.tracking.facemesh import CHIN
from model.tracking.smoothing import steady_poses

R, FPS, N = 128, 25.0, 100
K = np.array([[320.0, 0.0, 63.5], [0.0, 320.0, 63.5], [0.0, 0.0, 1.0]])
Z = 1.0  # m: the head joint's depth, where 1 px is Z / 320 m


def _scene(outline_px: np.ndarray, tracked_px: np.ndarray) -> dict:
    """A head (a disc of 30 px, the hair's outline) over a body, whose outline moves outline_px (N,)
    to the side while its tracker reports tracked_px (N,); the face's landmarks move with the
    tracker."""
    ys, xs = np.mgrid[:R, :R].astype(np.float64)
    mattes = np.empty((N, R, R), np.float32)
    for i, dx in enumerate(outline_px):
        disc = np.clip(30.0 - np.hypot(xs - 64.0 - dx, ys - 60.0) + 0.5, 0.0, 1.0)
        mattes[i] = np.maximum(disc, ys >= 100)
    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    face = np.stack([64.0 + 15.0 * np.cos(angles), 66.0 + 15.0 * np.sin(angles)], -1)
    face[CHIN] = (64.0, 81.0)
    T = np.tile(np.eye(4), (N, 1, 1))
    T[:, 0, 3], T[:, 2, 3] = tracked_px * Z / K[0, 0], Z
    return {"mattes": mattes, "landmarks": face[None] + np.stack([tracked_px, 0 * tracked_px], -1)[:, None], "T": T, "K": K,
            "valid": np.ones((R, R), bool), "fps": FPS}


WOBBLE = 1.5 * np.sin(2 * np.pi * 4.0 * np.arange(N) / FPS)  # px: speech-like, 4 Hz


def test_a_still_outline_under_a_wobbling_track_gets_the_steadiest_poses():
    """A wobble of 1 Hz (a nod with each phrase) is still partly passed by the steady poses."""
    slow_wobble = 1.5 * np.sin(2 * np.pi * 1.0 * np.arange(N) / FPS)
    assert hair_steadiness(**_scene(np.zeros(N), slow_wobble)) == len(HAIR_STEADINESS) - 1


def test_an_outline_drifting_slowly_under_a_wobbling_track_gets_poses_that_follow_the_drift():
    drift = 3.0 * np.sin(2 * np.pi * 0.2 * np.arange(N) / FPS)  # px: a slow sway the steadiest poses lag
    assert hair_steadiness(**_scene(drift, drift + WOBBLE)) == 1


def test_an_outline_that_moves_with_the_track_keeps_the_tracked_poses():
    assert hair_steadiness(**_scene(WOBBLE, WOBBLE)) == 0


def test_too_few_frames_or_no_frame_rate_keep_the_tracked_poses():
    scene = _scene(np.zeros(N), WOBBLE)
    assert hair_steadiness(**{**scene, "fps": 0.0}) == 0
    short = {k: v[:2] if k in ("mattes", "landmarks", "T") else v for k, v in scene.items()}
    assert hair_steadiness(**short) == 0
    assert hair_poses(scene["T"], FPS, 0) is None
    np.testing.assert_array_equal(hair_poses(scene["T"], FPS, 1), steady_poses(scene["T"], FPS, HAIR_STEADINESS[1]))


@pytest.fixture(scope="module")
def tracks(shared_data, astronaut_path):
    """(a talking driver's video track, the astronaut's portrait track)."""
    pytest.importorskip("mediapipe")
    from model.tracking import track_image, track_video

    return track_video(shared_data / "videos/LivePortrait/d12.mp4", progress=False, max_frames=60), track_image(astronaut_path)


def test_video_driving_moves_the_hair_from_the_portraits_own_pose(tracks):
    """The hair's poses start at the portrait's pose and move as the driver's steady poses move;
    with the tracked ones they are the head's own poses."""
    driver_track, astronaut_track = tracks
    tracked = VideoDriving(driver_track, astronaut_track, progress=False).all_frames
    assert np.array_equal(tracked.T_hair, tracked.T_cam_from_head)
    steady = VideoDriving(driver_track, astronaut_track, progress=False, hair_steadiness=1).all_frames
    np.testing.assert_allclose(steady.T_hair[0], astronaut_track.T_cam_from_head[0], atol=1e-6)
    assert np.array_equal(steady.T_cam_from_head, tracked.T_cam_from_head)
    def path_length(T: np.ndarray) -> float:  # of the head joint, m
        return float(np.abs(np.diff(T[:, :3, 3], axis=0)).sum())

    assert path_length(steady.T_hair) < 0.8 * path_length(tracked.T_hair)
    assert np.array_equal(steady[3:5].T_hair, steady.T_hair[3:5])


@pytest.mark.slow
def test_real_footage(shared_data):
    """d20's head moves in small quick motions that his hair follows; W011's skull stays while she
    talks (model card: these choices gained on both)."""
    pytest.importorskip("mediapipe")
    from model.data.driving_cache import driving_video_track

    assert driving_video_track(shared_data / "videos/LivePortrait/d20.mp4", None, progress=False, max_frames=40)[2] == 0
    assert driving_video_track(shared_data / "videos/dreamtalk/W011_front_neutral_level1_001.mp4", None, progress=False,
                               max_frames=40)[2] > 0


def test_training_pairs_move_the_hair_with_the_videos_hair_poses(shared_data, tmp_path_factory):
    """VideoSource.hair_from hands the video's hair poses to the identity condition of an L_mpi pair
    (an L_side pair's hair keeps the reference pose, as its head does); None when the hair follows
    the head."""
    from model.data.pairs import PairSampler
    from model.net.config import get_config
    from tests.train_fixtures import prepared_dataset

    cfg = dataclasses.replace(get_config("tiny"), identity_warp=True)
    sampler = PairSampler(prepared_dataset(shared_data, tmp_path_factory), cfg)
    src = sampler.sources[0]
    clip = np.arange(2, 2 + cfg.frames)
    src.__dict__["hair_track"] = None  # the hair follows the head
    assert src.hair_from(0, clip) is None
    src.__dict__["hair_track"] = hair_poses(src.video.T_cam_from_head, src.video.fps, 1).astype(np.float32)
    picks = [(0, 0, 2)]
    moved = sampler.make_batch(picks, side=False).identity[0]
    expected = src.identity(0, src.vertices[clip], src.T[clip], src.torso_from(0, clip), src.hair_from(0, clip))
    assert torch.equal(moved, expected)
    with_head = src.identity(0, src.vertices[clip], src.T[clip], src.torso_from(0, clip))
    assert (moved - with_head).abs().amax() > 0.05  # the steady poses did move the hair
    side = sampler.make_batch(picks, side=True).identity[0]
    assert torch.equal(side, src.identity(0, src.vertices[clip], src.T[0].expand(cfg.frames, 4, 4).contiguous()))
