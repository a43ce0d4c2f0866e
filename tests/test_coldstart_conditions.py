"""model/coldstart/raster.py and model/coldstart/conditions.py, the torch-free twins of the clip
conditions, against their torch originals: the rasteriser on an ellipsoid at several poses (one
partly behind the camera), and the mesh inputs and identity condition of a real tracked portrait
driven by the built-in animation and by a retargeted video; and importing the twins leaves torch
out."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")

from model.coldstart import conditions as twin  # noqa: E402
from model.coldstart import raster as twin_raster  # noqa: E402
from model.data.driving import DrivingFrames, VideoDriving, default_driving  # noqa: E402
from model.data.pairs import mesh_code  # noqa: E402
from model.diffusion import pipeline  # noqa: E402
from model.geometry import camera, conditions, mpi, portrait_warp, raster  # noqa: E402
from model.net.config import TINY  # noqa: E402
from model.tracking.shape import JOINT_BELOW_EYES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = "images/LivePortrait/s12.jpg"
DRIVER = "videos/LivePortrait/d12.mp4"  # the head moves within its first second
CFG = dataclasses.replace(TINY, res=128, planes=12, coord_channels=4)  # the viewer's first-clip sizes
SAME = 0.999  # share of pixels whose face id / coverage must agree (ties on shared edges may differ)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread, as the viewer's worker runs (ties between triangles resolve alike)."""
    from model.runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def portrait(shared_data, one_thread) -> pipeline.Portrait:
    return pipeline.prepare_portrait(shared_data / PORTRAIT, CFG, Path(os.environ["IMP_CACHE_DIR"]))


@pytest.fixture(scope="module")
def drivings(shared_data, portrait) -> dict[str, DrivingFrames]:
    video = VideoDriving(shared_data / DRIVER, portrait.track, max_frames=8, progress=False).frames(8)
    # the body risen and moved aside, as a driver rising in the chair moves it (model/data/body_motion.py)
    moved = np.linspace([0.0, 0.0], [0.03, -0.1], 8).astype(np.float32)
    # the hair on poses of its own (model/data/hair_motion.py): here 1 cm to the side and turned 3 degrees
    hair = video.T_cam_from_head.copy()
    hair[:, 0, 3] += np.linspace(0.0, 0.01, 8, dtype=np.float32)
    c, s = np.cos(np.radians(3.0)), np.sin(np.radians(3.0))
    hair[:, :3, :3] = hair[:, :3, :3] @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)
    return {"animation": default_driving(portrait.track).frames(8), "video": video,
            "torso moved": dataclasses.replace(video, torso_shift=moved), "hair on its own poses": dataclasses.replace(video, T_hair=hair)}


def _same_fragments(a: raster.Fragments, b: twin_raster.Fragments) -> np.ndarray:
    """Pixels (B, H, W) where both pick the same face; asserts the rest agrees there."""
    same = a.face.numpy() == b.face
    assert same.mean() >= SAME
    assert (a.coverage.numpy() == b.coverage).mean() >= SAME
    assert b.face.dtype == np.int64 and b.bary.dtype == np.float32 and b.disparity.dtype == np.float32
    np.testing.assert_allclose(a.bary.numpy()[same], b.bary[same], atol=1e-5)
    np.testing.assert_allclose(a.disparity.numpy()[same], b.disparity[same], atol=1e-5)
    return same


def test_constants_are_shared():
    assert (raster.EDGE_EPS, raster.MIN_DEPTH) == (twin_raster.EDGE_EPS, twin_raster.MIN_DEPTH)
    assert twin.GRAZING_COS == portrait_warp.GRAZING_COS and twin.DEPTH_TOLERANCE == portrait_warp.DEPTH_TOLERANCE
    assert twin.NECK_BAND == portrait_warp.NECK_BAND and (twin.NECK_SIDE, twin.SHOULDER_RISE) == (portrait_warp.NECK_SIDE, portrait_warp.SHOULDER_RISE) and twin.RASTER_CHUNK == pipeline.RASTER_CHUNK
    assert twin.SEAM_LEVELS == portrait_warp.SEAM_LEVELS and twin.HAIR_LEAN == portrait_warp.HAIR_LEAN and twin.NECK_BEHIND == portrait_warp.NECK_BEHIND
    assert twin.EYES_ABOVE_JOINT == portrait_warp.EYES_ABOVE_JOINT == JOINT_BELOW_EYES  # the tracker's head frame


@pytest.mark.parametrize("hw", [(64, 64), (37, 50)])
def test_fill_in_twin(hw):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(2, 2, *hw)).astype(np.float32) * 5
    weight = (rng.random((2, 1, *hw)) < 0.1).astype(np.float32)
    weight[0, 0, :20, :20] = 1.0
    out = twin.fill_in(values, weight, 3)
    ref = portrait_warp.fill_in(torch.from_numpy(values), torch.from_numpy(weight), 3).numpy()
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.abs(ref).max() > 0.5  # the twins compare something


def test_rasterizer_twin_on_an_ellipsoid(one_thread):
    verts, faces = raster.ellipsoid_mesh()
    K = camera.crop_intrinsics(96)
    poses = [(0.0, 0.0, 0.0, 0.5), (0.6, -0.3, 0.2, 0.7), (-1.2, 0.4, -0.5, 0.4), (2.5, 1.0, 0.3, 0.9),
             (0.3, 0.2, 0.1, 0.02)]  # the last: centre 2 cm in front of the camera, half of it behind
    cams = [verts @ camera.euler_rotation(y, p, r).T + torch.tensor([0.01, -0.02, z]) for y, p, r, z in poses]
    vc = torch.stack(cams)
    assert (vc[-1, :, 2] < 0).any() and (vc[-1, :, 2] > 0.001).any()
    a = raster.rasterize(vc, faces, K, (96, 96))
    b = twin_raster.rasterize(vc.numpy(), faces.numpy(), K.numpy(), (96, 96))
    same = _same_fragments(a, b)
    assert (b.face[-1] >= 0).any() and (b.face[0] >= 0).mean() > 0.05
    attrs = torch.randn(len(verts), 4)
    for att in (attrs, attrs[None].expand(len(vc), -1, -1)):
        ta, na = a.interpolate(att, faces).numpy(), b.interpolate(att.numpy(), faces.numpy())
        assert na.shape == ta.shape and na.dtype == np.float32
        np.testing.assert_allclose(ta.transpose(0, 2, 3, 1)[same], na.transpose(0, 2, 3, 1)[same], atol=1e-5)


def test_code_depths_and_alpha_planes_equal_torch(portrait):
    np.testing.assert_array_equal(twin.canonical_code(portrait.track.template), mesh_code(portrait.track.template).numpy())
    r = np.array([0.45, 0.9, 1.0, 1.37], np.float32)
    for D in (1, 2, 8, 12, 24):
        near, far = twin.near_far(r)
        tn, tf = mpi.near_far(torch.from_numpy(r))
        np.testing.assert_array_equal(near, tn.numpy())
        np.testing.assert_array_equal(twin.plane_depths(near, far, D), mpi.plane_depths(tn, tf, D).numpy())
    gen = torch.Generator().manual_seed(0)
    depths = mpi.plane_depths(*mpi.near_far(torch.tensor([0.8, 1.1])), 12)
    disparity = 1.0 / (0.6 + 0.7 * torch.rand(2, 1, 32, 32, generator=gen))
    disparity[0, 0, :4] = 1.0 / depths[0, 3]  # exactly on a plane
    coverage = (torch.rand(2, 1, 32, 32, generator=gen) > 0.3).float() * torch.rand(2, 1, 32, 32, generator=gen)
    for D in (1, 12):
        np.testing.assert_allclose(twin.alpha_planes(disparity.numpy(), coverage.numpy(), depths[:, :D].numpy()),
                                   conditions.alpha_planes(disparity, coverage, depths[:, :D]).numpy(), atol=1e-6)


@pytest.mark.parametrize("source", ["animation", "video"])
def test_mesh_inputs_equal_torch(portrait, drivings, source):
    frames = drivings[source]
    code = mesh_code(portrait.track.template)
    tc, ta, td = (x.numpy() for x in pipeline.mesh_inputs(frames.vertices_head, frames.T_cam_from_head, code, CFG))
    nc, na, nd = twin.mesh_inputs(frames.vertices_head, frames.T_cam_from_head, twin.canonical_code(portrait.track.template), CFG)
    assert nc.shape == tc.shape == (8, 4, CFG.res, CFG.res) and na.shape == ta.shape and nd.shape == td.shape
    assert nc.dtype == na.dtype == nd.dtype == np.float32
    np.testing.assert_allclose(nd, td, atol=1e-6)
    cover_t, cover_n = tc[:, 3], nc[:, 3]
    assert (cover_t == cover_n).mean() >= SAME
    same = (cover_t == cover_n)[:, None]  # where the face ids differ (shared-edge ties) the coverage still agrees
    assert np.abs(tc - nc).max(initial=0, where=same) < 1e-4
    assert np.abs(ta - na).max(initial=0, where=same) < 1e-4


@pytest.mark.parametrize("source", ["animation", "video", "torso moved", "hair on its own poses"])
def test_identity_condition_equals_portrait_warp(portrait, drivings, source):
    frames = drivings[source]
    torch_out = portrait.identity(frames, False).numpy()
    out = twin.identity(pipeline.image_to_model(portrait.image).numpy(), portrait.matte[None], portrait.track.vertices_head(0),
                        portrait.T_cam_from_head, frames.vertices_head, frames.T_cam_from_head, portrait.K, (portrait.res,) * 2,
                        frames.torso_shift, frames.T_hair)
    if source == "torso moved":  # the body did move: the last frame's differs from the unmoved one's
        still = portrait.identity(dataclasses.replace(frames, torso_shift=None), False).numpy()
        assert np.abs(torch_out[-1] - still[-1]).mean() > 0.01
    if source == "hair on its own poses":  # the hair moved off the mesh, the face on it did not
        with_head = portrait.identity(dataclasses.replace(frames, T_hair=None), False).numpy()
        on_mesh = torch_out[-1, 4] > 0
        assert np.abs(torch_out[-1] - with_head[-1]).mean() > 0.01
        assert np.array_equal(torch_out[-1, :3, on_mesh], with_head[-1, :3, on_mesh])
    assert out.shape == torch_out.shape and out.dtype == np.float32
    diff = np.abs(out - torch_out)
    assert diff.mean() < 1e-6 and diff.max() < 1e-3, (diff.mean(), diff.max())
    with pytest.raises(NotImplementedError):
        twin.identity(np.zeros((3, 64, 64), np.float32), np.zeros((1, 64, 64), np.float32), portrait.track.vertices_head(0),
                      portrait.T_cam_from_head, frames.vertices_head, frames.T_cam_from_head, portrait.K, (128, 128))


def test_importing_the_twins_leaves_torch_out():
    code = "import sys, model.coldstart.conditions; print('torch' in sys.modules, 'mediapipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
