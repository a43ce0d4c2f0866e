"""Mesh conditions: the rasteriser against closed-form answers on known meshes, the alpha planes
against the MPI renderer, and (on real footage) the whole chain tracking -> conditions -> MPI
render landing on the face in the image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.geometry import camera, conditions, mpi
from model.geometry.raster import ellipsoid_mesh, rasterize


def _quad(corners: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(corners, dtype=torch.float32), torch.tensor([[0, 1, 2], [0, 2, 3]])


def _pose(t=(0.0, 0.0, 1.0)) -> torch.Tensor:
    return camera.translation(torch.tensor([t], dtype=torch.float32))


def test_tilted_plane_coordinates_are_the_ray_plane_intersections():
    """A quad on the tilted plane z = 1 + 0.3 x (camera frame), code = the vertex positions: every
    covered pixel must hold the exact 3D point its ray hits (perspective-correct interpolation)."""
    S = 64
    K = camera.crop_intrinsics(S)
    xs = [-0.15, 0.15]
    corners = [[xs[0], -0.1, 0.0], [xs[1], -0.1, 0.0], [xs[1], 0.1, 0.0], [xs[0], 0.1, 0.0]]
    verts, faces = _quad(corners)
    verts[:, 2] = 0.3 * verts[:, 0]  # head frame; the pose adds z = 1
    cond = conditions.mesh_conditions(verts[None], faces, verts + torch.tensor([0.0, 0.0, 1.0]), K, _pose(), (S, S), 8)
    cov = cond.coverage[0, 0] > 0
    # analytic: ray d = K^-1 (u, v, 1), plane z = 1 + 0.3 x  ->  s = 1 / (1 - 0.3 dx)
    v, u = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    f, c = K[0, 0], K[0, 2]
    dx, dy = (u - c) / f, (v - c) / f
    s = 1.0 / (1.0 - 0.3 * dx)
    X, Y, Z = s * dx, s * dy, s
    expected_cov = (X >= xs[0]) & (X <= xs[1]) & (Y >= -0.1) & (Y <= 0.1)
    assert (cov == expected_cov).float().mean() > 0.995  # at most boundary pixels differ
    both = cov & expected_cov
    got = cond.coords[0][:, both]
    assert torch.allclose(got[0], X[both], atol=1e-5)
    assert torch.allclose(got[1], Y[both], atol=1e-5)
    assert torch.allclose(got[2], Z[both], atol=1e-5)
    assert torch.allclose(cond.disparity[0, 0][both], 1.0 / Z[both], atol=1e-5)
    assert (cond.coords[0][:, ~cov] == 0).all() and (cond.disparity[0, 0][~cov] == 0).all()


def test_ellipsoid_front_point_silhouette_and_occlusion():
    """Ellipsoid at 1 m: the centre pixel sees the front pole (z = 1 - rz), the silhouette area
    matches the projected ellipse, and the back half is hidden by the z-buffer."""
    S = 128
    radii = (0.08, 0.11, 0.1)
    verts, faces = ellipsoid_mesh(radii, rings=48, segments=96)
    K = camera.crop_intrinsics(S)
    code = conditions.canonical_code(verts)
    cond = conditions.mesh_conditions(verts[None], faces, code, K, _pose(), (S, S), 24)
    c = (S - 1) // 2
    assert abs(1.0 / cond.disparity[0, 0, c, c].item() - (1.0 - radii[2])) < 2e-3
    # front surface: code z (from the ellipsoid's own z) is < 0 (towards the camera) wherever visible
    cov = cond.coverage[0, 0] > 0
    assert (cond.coords[0, 2][cov] < 0.05).all()
    # silhouette: for a sphere-like body at distance 1 the outline is close to the ellipse
    # a = f * rx / sqrt(1 - rz^2) ... within 3 % in area
    f = K[0, 0].item()
    area = math.pi * f * radii[0] / math.sqrt(1 - radii[2] ** 2) * f * radii[1] / math.sqrt(1 - radii[2] ** 2)
    assert abs(cov.sum().item() / area - 1.0) < 0.03


@pytest.mark.parametrize("plane", [0, 5, 23])
def test_constant_depth_mesh_lands_in_its_plane(plane):
    S, D = 48, 24
    T = _pose((0.0, 0.0, 1.0))
    depths = conditions.mpi_depths(T, D)
    z = depths[0, plane].item()
    half = 0.15
    verts, faces = _quad([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    verts[:, 2] = z - 1.0  # the pose adds 1 m
    cond = conditions.mesh_conditions(verts[None], faces, torch.zeros(4, 3), camera.crop_intrinsics(S), T, (S, S), D)
    cov = cond.coverage[0, 0] > 0
    assert cov.sum() > 0.2 * S * S
    others = torch.cat([cond.alpha[0, :plane], cond.alpha[0, plane + 1:]])
    assert torch.allclose(cond.alpha[0, plane][cov], torch.ones(()), atol=1e-4)
    assert others.abs().max() < 1e-4 and cond.alpha[0, plane][~cov].abs().max() == 0


def test_alpha_planes_render_to_coverage_and_surface_disparity():
    """Between two planes the split is over-consistent: the MPI renderer gives back the coverage as
    its mask and the surface disparity as its expected disparity."""
    S, D = 40, 12
    T = _pose()
    depths = conditions.mpi_depths(T, D)
    q = 0.3 / depths[0, 4] + 0.7 / depths[0, 5]  # 70 % of the way towards plane 5 in disparity
    half = 0.05
    verts, faces = _quad([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    verts[:, 2] = 1.0 / q - 1.0
    K = camera.crop_intrinsics(S)[None]
    cond = conditions.mesh_conditions(verts[None], faces, torch.zeros(4, 3), K, T, (S, S), D)
    cov = cond.coverage[0, 0] > 0
    assert torch.allclose(cond.alpha[0, 5][cov], torch.tensor(0.7), atol=1e-4)
    assert torch.allclose(cond.alpha[0, 4][cov], torch.tensor(1.0), atol=1e-4)
    white = torch.ones(1, 3, S, S)
    r = mpi.render(white, white, cond.alpha, cond.depths, K, K, torch.eye(4)[None])
    assert torch.allclose(r.mask[0, 0], cond.coverage[0, 0], atol=1e-5)
    assert torch.allclose(r.disparity[0, 0][cov], q.expand(int(cov.sum())), atol=1e-4)
    # soft coverage (supersampled edges) keeps the same property
    soft = conditions.alpha_planes(cond.disparity, cond.coverage * 0.5, cond.depths)
    r = mpi.render(white, white, soft, cond.depths, K, K, torch.eye(4)[None])
    assert torch.allclose(r.mask[0, 0], 0.5 * cond.coverage[0, 0], atol=1e-5)


def test_batch_equals_single_frames_and_supersampling_softens_edges():
    S = 64
    verts, faces = ellipsoid_mesh()
    code = conditions.canonical_code(verts)
    yaw = torch.tensor([0.0, 0.4, -0.3])
    T = camera.make_pose(camera.euler_rotation(yaw, 0.1 * yaw, 0.0), torch.tensor([[0.0, 0.0, 1.0], [0.02, 0.0, 0.9], [0.0, 0.03, 1.1]]))
    K = camera.crop_intrinsics(S)
    batch = conditions.mesh_conditions(verts.expand(3, -1, -1), faces, code, K, T, (S, S), 16)
    for i in range(3):
        one = conditions.mesh_conditions(verts[None], faces, code, K, T[i:i + 1], (S, S), 16)
        assert torch.allclose(one.alpha[0], batch.alpha[i]) and torch.allclose(one.coords[0], batch.coords[i])
    ss = conditions.mesh_conditions(verts[None], faces, code, K, T[:1], (S, S), 16, supersample=4)
    frac = ((ss.coverage > 0) & (ss.coverage < 1)).sum()
    assert frac > 20  # an anti-aliased outline
    assert abs(ss.coverage.sum() - batch.coverage[0].sum()) < 0.03 * batch.coverage[0].sum()


def test_reference_input_stacks_portrait_and_coordinate_map():
    verts, faces = ellipsoid_mesh()
    cond = conditions.mesh_conditions(verts[None], faces, conditions.canonical_code(verts), camera.crop_intrinsics(32), _pose(), (32, 32), 4)
    portrait = torch.rand(1, 3, 32, 32) * 2 - 1
    x = conditions.reference_input(portrait, cond)
    assert x.shape == (1, 7, 32, 32)
    assert torch.equal(x[:, :3], portrait) and torch.equal(x[:, 6:], cond.coverage)


def test_rasterize_drops_geometry_behind_the_camera():
    verts, faces = _quad([[-1, -1, -0.5], [1, -1, -0.5], [1, 1, -0.5], [-1, 1, -0.5]])
    frags = rasterize(verts[None], faces, camera.crop_intrinsics(16), (16, 16))
    assert (frags.face < 0).all()


@pytest.fixture(scope="module")
def tracked_clip(shared_data):
    """20 real frames of two videos, tracked, with the crop camera at 128 px."""
    from model.formats import video
    from model.tracking.crop import crop_affine
    from model.tracking.track import track_video

    clips = []
    for name in ("dreamtalk/W009_front_neutral_level1_001.mp4", "LivePortrait/d18.mp4"):
        track = track_video(shared_data / "videos" / name, progress=False, max_frames=20)
        clips.append((name, track, crop_affine(track.K, 128)))
    return clips


def _face_oval_loop() -> list[int]:
    import mediapipe as mp

    edges = dict(mp.solutions.face_mesh_connections.FACEMESH_FACE_OVAL)
    loop = [next(iter(edges))]
    while edges[loop[-1]] != loop[0]:
        loop.append(edges[loop[-1]])
    return loop


def test_conditions_land_on_the_face_in_real_frames(tracked_clip):
    """Tracking -> conditions -> MPI render on real footage: the coordinate map's coverage and the
    mesh alpha planes rendered by model.geometry.mpi.render from the same (crop) camera cover the face.

    The face matte is the polygon of MediaPipe's face-oval landmarks as the detector gave them
    (raw_landmarks: before smoothing, the metric fit and the pose solve), mapped into the crop. It
    outlines exactly the surface the face mesh models (forehead to chin, cheek to cheek) and is
    independent of our 3D fit and rasteriser; the selfie matte would add hair, ears and neck,
    which no face mesh covers."""
    import cv2

    loop = _face_oval_loop()
    S = 128
    ious = []
    for name, track, A in tracked_clip:
        idx = [0, 9, 19]
        code = conditions.canonical_code(torch.from_numpy(track.template))
        K = camera.crop_intrinsics(S).expand(len(idx), 3, 3)
        T = torch.from_numpy(track.T_cam_from_head[idx])
        verts = torch.from_numpy(track.vertices_head()[idx])
        cond = conditions.mesh_conditions(verts, torch.from_numpy(track.faces), code, K, T, (S, S), 24)
        white = torch.ones(len(idx), 3, S, S)
        rendered = mpi.render(white, white, cond.alpha, cond.depths, K, K, torch.eye(4).expand(len(idx), 4, 4))
        for j, i in enumerate(idx):
            oval = track.raw_landmarks[i][loop] @ A[:2, :2].T + A[:2, 2]
            face = np.zeros((S, S), np.uint8)
            cv2.fillPoly(face, [np.round(oval * 16).astype(np.int32)], 1, shift=4)
            face = face.astype(bool)
            for mask in (cond.coverage[j, 0].numpy() > 0.5, rendered.mask[j, 0].numpy() > 0.5):
                ious.append((mask & face).sum() / (mask | face).sum())
            # the coordinate map holds the nose tip's code where the nose tip is seen
            nose = np.round(track.landmarks[i][1] @ A[:2, :2].T + A[:2, 2]).astype(int)
            assert torch.allclose(cond.coords[j, :, nose[1], nose[0]], code[1], atol=0.15), name
            # and the mesh disparity there is the nose tip's own depth
            z_nose = track.vertices_cam(i)[1, 2]
            assert abs(1.0 / cond.disparity[j, 0, nose[1], nose[0]].item() - z_nose) < 0.01
    assert min(ious) >= 0.8, ious


def test_alpha_planes_of_one_camera_render_to_the_mesh_seen_from_another(tracked_clip):
    """The conditions of the reference camera, rendered as an MPI into a camera orbited 8 degrees
    about the head joint, cover what the rasteriser sees directly from that camera: the plane
    geometry of model.geometry.mpi and of the conditions agree."""
    S = 128
    _, track, _ = tracked_clip[1]
    verts = torch.from_numpy(track.vertices_head(0))[None]
    faces = torch.from_numpy(track.faces)
    code = conditions.canonical_code(verts[0])
    K = camera.crop_intrinsics(S)[None]
    T = torch.from_numpy(track.T_cam_from_head[:1])
    T_side = camera.orbit(T, math.radians(8.0), math.radians(3.0))
    ref = conditions.mesh_conditions(verts, faces, code, K, T, (S, S), 32)
    side = conditions.mesh_conditions(verts, faces, code, K, T_side, (S, S), 32)
    white = torch.ones(1, 3, S, S)
    r = mpi.render(white, white, ref.alpha, ref.depths, K, K, camera.relative_pose(T, T_side))
    a, b = r.mask[0, 0] > 0.5, side.coverage[0, 0] > 0.5
    iou = ((a & b).sum() / (a | b).sum()).item()
    assert iou > 0.9, iou
