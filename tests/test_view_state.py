"""The viewer's pure view math: dolly zoom keeps the head's size, stereo eyes 5 cm apart along x,
convergence, orbit limits, `--set` parsing, playback, and the stereo layouts / composition."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.gl import stereo
from app.viewer import view_state as vs
from model.geometry import camera

S = 512


def _mpi_camera():
    K = camera.crop_intrinsics(S).numpy()
    T = np.eye(4, dtype=np.float32)
    T[:3, 3] = [0.03, -0.12, 1.0]  # the head joint off the optical axis, like the astronaut's
    return K, T


def _project(K, T, points):
    uv, _ = camera.project(torch.as_tensor(K), torch.as_tensor(T), torch.as_tensor(points, dtype=torch.float32))
    return uv.numpy()


def _centre(T):
    return np.linalg.inv(T)[:3, 3]


HEAD_POINTS = np.array([[0.0, 0.0, 0.0], [-0.08, 0.0, 0.0], [0.08, 0.0, 0.0]], np.float32)  # joint, ears


def test_initial_view_reproduces_the_mpi_camera():
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S)
    [(K_eye, T_eye)] = vs.eye_cameras(state, T, T, (S, S))
    np.testing.assert_allclose(K_eye, K, atol=1e-4)
    np.testing.assert_allclose(T_eye, T, atol=1e-6)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_focal_without_dolly_scales_the_head(factor):
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S)
    zoomed = vs.set_focal(state, state.focal * factor)
    assert zoomed.distance == state.distance
    (Ka, Ta), = vs.eye_cameras(state, T, T, (S, S))
    (Kb, Tb), = vs.eye_cameras(zoomed, T, T, (S, S))
    width = lambda K_, T_: np.ptp(_project(K_, T_, HEAD_POINTS)[:, 0])
    assert width(Kb, Tb) == pytest.approx(factor * width(Ka, Ta), rel=1e-5)


@pytest.mark.parametrize("change", [("focal", 5.0), ("focal", 1.25), ("distance", 2.0), ("distance", 0.6)])
def test_dolly_zoom_keeps_the_head_size_and_matches_model_camera(change):
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S, dolly_zoom=True)
    name, value = change
    moved = vs.set_focal(state, value) if name == "focal" else vs.set_distance(state, value)
    assert moved.focal / moved.distance == pytest.approx(state.focal / state.distance, rel=1e-6)
    assert moved.distance != pytest.approx(state.distance)
    (Ka, Ta), = vs.eye_cameras(state, T, T, (S, S))
    (Kb, Tb), = vs.eye_cameras(moved, T, T, (S, S))
    # the head joint stays put and the head keeps its width on screen
    uva, uvb = _project(Ka, Ta, HEAD_POINTS), _project(Kb, Tb, HEAD_POINTS)
    np.testing.assert_allclose(uvb[0], uva[0], atol=1e-3)
    assert np.ptp(uvb[:, 0]) == pytest.approx(np.ptp(uva[:, 0]), rel=1e-5)
    # ... and the rig is exactly model.geometry.camera.dolly_zoom of the previous one
    K2, T2 = camera.dolly_zoom(torch.as_tensor(Ka), torch.as_tensor(Ta), moved.distance)
    np.testing.assert_allclose(Kb, K2.numpy(), rtol=1e-5)
    np.testing.assert_allclose(Tb, T2.numpy(), atol=1e-5)


def test_dolly_zoom_clamps_both_together():
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S, dolly_zoom=True)
    far = vs.set_focal(state, 100.0)
    assert far.focal <= vs.FOCAL_RANGE[1] and far.distance <= vs.DISTANCE_RANGE[1]
    assert far.focal / far.distance == pytest.approx(state.focal / state.distance, rel=1e-6)
    near = vs.set_distance(state, 0.01)
    assert near.distance == pytest.approx(vs.DISTANCE_RANGE[0])
    assert near.focal / near.distance == pytest.approx(state.focal / state.distance, rel=1e-6)


@pytest.mark.parametrize("yaw", [0.0, 12.0])
def test_stereo_eyes_are_a_baseline_apart_along_the_rig_x(yaw):
    K, T = _mpi_camera()
    state = vs.set_value(vs.initial_state(K, T, S, stereo="sbs"), "yaw", str(yaw))
    (Kl, Tl), (Kr, Tr) = vs.eye_cameras(state, T, T, (S // 2, S))
    (_, Tc), = vs.eye_cameras(vs.set_stereo(state, "mono"), T, T, (S, S))
    np.testing.assert_allclose(Tl[:3, :3], Tr[:3, :3], atol=1e-6)
    delta_in_rig = Tc[:3, :3] @ (_centre(Tr) - _centre(Tl))  # right eye minus left eye, rig axes
    np.testing.assert_allclose(delta_in_rig, [0.05, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose((_centre(Tl) + _centre(Tr)) / 2, _centre(Tc), atol=1e-6)


def test_convergence_puts_the_head_at_screen_depth():
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S, stereo="anaglyph")
    size = (S, S)
    (Kl, Tl), (Kr, Tr) = vs.eye_cameras(state, T, T, size)
    on_axis = np.array([[0.0, 0.0, state.distance]], np.float32)  # straight ahead of the rig, at the head's depth
    (_, Tc), = vs.eye_cameras(vs.set_stereo(state, "mono"), T, T, size)
    point = (np.linalg.inv(Tc) @ np.append(on_axis[0], 1.0))[:3][None].astype(np.float32)  # in head coordinates
    ul, ur = _project(Kl, Tl, point)[0], _project(Kr, Tr, point)[0]
    np.testing.assert_allclose(ul, ur, atol=1e-3)
    # without convergence the eyes are parallel: a point at depth z has disparity f b / z (left image to the right)
    parallel = vs.set_value(state, "converge", "off")
    (Kl, Tl), (Kr, Tr) = vs.eye_cameras(parallel, T, T, size)
    ul, ur = _project(Kl, Tl, point)[0], _project(Kr, Tr, point)[0]
    assert ul[0] - ur[0] == pytest.approx(state.focal * S * 0.05 / state.distance, rel=1e-4)


def test_orbit_is_limited_and_turns_about_the_head_joint():
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S)
    big = vs.set_orbit(state, math.radians(80), math.radians(-80))
    assert big.yaw == pytest.approx(vs.MAX_YAW) and big.pitch == pytest.approx(-vs.MAX_PITCH)
    dragged = state
    for _ in range(100):  # a long drag to the right and down saturates as well
        dragged = vs.drag(dragged, 50.0, 50.0)
    assert dragged.yaw == pytest.approx(-vs.MAX_YAW) and dragged.pitch == pytest.approx(vs.MAX_PITCH)
    small = vs.drag(state, 20.0, 0.0)
    assert small.yaw == pytest.approx(-20.0 * vs.DRAG_RADIANS_PER_PIXEL)
    (Ka, Ta), = vs.eye_cameras(state, T, T, (S, S))
    (Kb, Tb), = vs.eye_cameras(big, T, T, (S, S))
    # the joint keeps its pixel and its distance; the camera really turned
    np.testing.assert_allclose(_project(Kb, Tb, HEAD_POINTS[:1]), _project(Ka, Ta, HEAD_POINTS[:1]), atol=1e-3)
    assert np.linalg.norm(_centre(Tb)) == pytest.approx(np.linalg.norm(_centre(Ta)), rel=1e-5)
    angle = math.degrees(math.acos((np.trace(Tb[:3, :3] @ Ta[:3, :3].T) - 1) / 2))
    assert angle > 25.0


def test_rig_stays_fixed_while_the_head_moves():
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S)
    T_moved = T.copy()
    T_moved[0, 3] += 0.1  # the head moved 10 cm to the right in the MPI camera
    (K1, T1), = vs.eye_cameras(state, T, T_moved, (S, S))
    shift = _project(K1, T1, HEAD_POINTS[:1])[0, 0] - _project(K, T, HEAD_POINTS[:1])[0, 0]
    assert shift == pytest.approx(K[0, 0] * 0.1 / T[2, 3], rel=1e-4)


def test_set_value_parses_and_rejects():
    state = vs.ViewState()
    assert vs.set_value(state, "stereo", "anaglyph").stereo == "anaglyph"
    assert vs.set_value(state, "pitch", "-5").pitch == pytest.approx(math.radians(-5))
    assert vs.set_value(state, "dolly", "on").dolly_zoom is True
    assert vs.set_value(state, "baseline", "0.065").baseline == pytest.approx(0.065)
    with pytest.raises(ValueError, match="unknown view setting 'zoom'"):
        vs.set_value(state, "zoom", "2")
    with pytest.raises(ValueError, match="stereo"):
        vs.set_value(state, "stereo", "3d")
    with pytest.raises(ValueError, match="converge"):
        vs.set_value(state, "converge", "maybe")


def test_playback_loops_at_the_clip_fps_and_seek_clamps():
    p = vs.Playback()
    p = vs.advance(p, 0.25, num_frames=10, fps=20.0)
    assert p.frame == 5
    p = vs.advance(p, 0.30, num_frames=10, fps=20.0)  # 0.55 s -> wraps at 0.5 s
    assert p.frame == 1
    paused = vs.advance(vs.Playback(playing=False, frame=3), 1.0, 10, 20.0)
    assert paused.frame == 3
    assert vs.seek(p, 99, 10, 20.0).frame == 9
    assert vs.advance(vs.seek(p, 4, 10, 20.0), 0.0, 10, 20.0).frame == 4


def test_stereo_layout_and_reference_composition():
    assert stereo.eye_viewports("mono", (0, 0, 640, 480)) == [(0, 0, 640, 480)]
    assert stereo.eye_viewports("sbs", (10, 0, 641, 480)) == [(10, 0, 320, 480), (330, 0, 320, 480)]
    assert stereo.eye_viewports("anaglyph", (0, 0, 64, 48)) == [(0, 0, 64, 48)] * 2
    rng = np.random.default_rng(0)
    left, right = rng.random((2, 4, 5, 3)).astype(np.float32)
    sbs = stereo.compose([left, right], "sbs")
    np.testing.assert_array_equal(sbs[:, :5], left)
    np.testing.assert_array_equal(sbs[:, 5:], right)
    ana = stereo.compose([left, right], "anaglyph")
    np.testing.assert_allclose(ana[..., 0], left @ np.array([0.299, 0.587, 0.114], np.float32), rtol=1e-6)
    np.testing.assert_array_equal(ana[..., 1:], right[..., 1:])
    with pytest.raises(ValueError, match="stereo mode"):
        stereo.eye_viewports("3d", (0, 0, 1, 1))


def test_view_warnings_orbit_and_borders():
    """Valid range: inside +-10 deg of orbit no warning, beyond it one; a camera moved sideways
    until the MPI's far-plane edge passes within the head's radius of the joint: a border warning."""
    K = camera.crop_intrinsics(64).numpy()
    T = np.eye(4, dtype=np.float32)
    T[2, 3] = 1.0
    far = 1.05
    home = vs.initial_state(K, T, 64)
    size = (200, 200)

    def warnings(state, cams=None):
        return vs.view_warnings(state, cams or vs.eye_cameras(state, T, T, size), size, K, T, far, (64, 64))

    assert warnings(home) == []
    assert warnings(vs.set_orbit(home, math.radians(9.0), math.radians(-9.0))) == []
    assert warnings(vs.set_orbit(home, math.radians(11.0), 0.0)) == ["orbit beyond +-10 deg: the MPI's layers separate"]
    # the far plane spans 0.4 * 1.05 = 0.42 m, +-0.21 m about the optical axis; a head that moves
    # sideways in the clip (its pose in the MPI camera) brings its 0.12 m disc to the border
    for x, bad in ((0.05, False), (0.12, True)):
        T_frame = T.copy()
        T_frame[0, 3] = x
        cams = vs.eye_cameras(home, T, T_frame, size)
        got = vs.view_warnings(home, cams, size, K, T_frame, far, (64, 64))
        assert got == (["the MPI's borders reach the head: it moved near the MPI's edge"] if bad else [])


def test_render_scale_caps_the_eye_at_one_pixel_per_mpi_pixel():
    """The initial view reproduces the MPI camera: at the MPI's own size one eye pixel per MPI
    pixel (full size); a 4x larger eye, or a 4x longer focal length, gets a quarter of its width
    (1 px per MPI pixel); moving the camera back makes the head smaller and the scale larger; a
    limit of 2 doubles them."""
    K, T = _mpi_camera()
    state = vs.initial_state(K, T, S)
    assert vs.render_scale(vs.eye_cameras(state, T, T, (S, S)), K, T) == 1.0
    assert vs.render_scale(vs.eye_cameras(state, T, T, (4 * S, 4 * S)), K, T) == pytest.approx(0.25, rel=1e-3)
    assert vs.render_scale(vs.eye_cameras(state, T, T, (4 * S, 4 * S)), K, T, limit=2.0) == pytest.approx(0.5, rel=1e-3)
    zoomed = vs.set_value(state, "focal", str(state.focal * 4))
    assert vs.render_scale(vs.eye_cameras(zoomed, T, T, (S, S)), K, T) == pytest.approx(0.25, rel=1e-3)
    back = vs.set_value(zoomed, "distance", str(state.distance * 2))
    assert vs.render_scale(vs.eye_cameras(back, T, T, (S, S)), K, T) == pytest.approx(0.5, rel=0.05)
