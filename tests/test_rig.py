"""model.geometry.rig (NumPy) against its torch twin model.geometry.camera, and the viewer's main
process staying torch-free."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from model.geometry import rig

torch = pytest.importorskip("torch")
from model.geometry import camera  # noqa: E402

# per dtype: what rounding alone allows (poses within a few metres)
ATOL = {np.float32: 1e-6, np.float64: 1e-12}
DTYPES = (np.float32, np.float64)
BATCHES = ((), (5,), (2, 3))
EULER_ROTATION_FLOAT32 = camera.euler_rotation  # the unpatched one (float64_euler patches the module)


def _angles(rng, shape, limit=np.pi):
    return rng.uniform(-limit, limit, shape)


def _poses(rng, shape, dtype) -> np.ndarray:
    """Random rigid T (*shape, 4, 4), rotations in float64 (torch's euler_rotation is float32 only)."""
    yaw, pitch, roll = (torch.from_numpy(_angles(rng, shape)) for _ in range(3))
    R = camera._axis_rotation(yaw, 1) @ camera._axis_rotation(pitch, 0) @ camera._axis_rotation(roll, 2)
    t = torch.from_numpy(rng.uniform(-0.5, 0.5, (*shape, 3)) + [0.0, 0.0, 1.0])
    return camera.make_pose(R, t).numpy().astype(dtype)


def _check(ours: np.ndarray, theirs: torch.Tensor, dtype, atol=None) -> None:
    assert ours.dtype == dtype, f"{ours.dtype} != {np.dtype(dtype)}"
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=ATOL[dtype] if atol is None else atol)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def float64_euler(monkeypatch):
    """torch's euler_rotation casts its angles to float32 (its callers pass Python floats); for
    float64 references give it the same formula in the angles' own dtype."""
    def euler(yaw, pitch, roll):
        yaw, pitch, roll = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64) for v in (yaw, pitch, roll)))
        return camera._axis_rotation(yaw, 1) @ camera._axis_rotation(pitch, 0) @ camera._axis_rotation(roll, 2)

    monkeypatch.setattr(camera, "euler_rotation", euler)
    return euler


def test_default_baseline_is_shared():
    assert camera.DEFAULT_BASELINE is rig.DEFAULT_BASELINE


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_make_invert_translation_match_torch(rng, dtype, batch):
    T = _poses(rng, batch, dtype)
    _check(rig.invert_pose(T), camera.invert_pose(torch.from_numpy(T)), dtype)
    _check(rig.make_pose(T[..., :3, :3], T[..., :3, 3]), camera.make_pose(torch.from_numpy(T[..., :3, :3]), torch.from_numpy(T[..., :3, 3])), dtype)
    t = rng.normal(size=(*batch, 3)).astype(dtype)
    _check(rig.translation(t), camera.translation(torch.from_numpy(t)), dtype)
    np.testing.assert_allclose(rig.invert_pose(T) @ T, np.broadcast_to(np.eye(4), T.shape), atol=10 * ATOL[dtype])


@pytest.mark.parametrize("batch", BATCHES)
def test_euler_rotation_matches_torch(rng, batch, float64_euler):
    yaw, pitch, roll = (_angles(rng, batch) for _ in range(3))
    # float32: torch's own function (float32 whatever it is given)
    theirs = EULER_ROTATION_FLOAT32(*(torch.from_numpy(a) for a in (yaw, pitch, roll)))
    _check(rig.euler_rotation(yaw, pitch, roll, dtype=np.float32), theirs, np.float32)
    _check(rig.euler_rotation(*(a.astype(np.float32) for a in (yaw, pitch, roll))), theirs, np.float32)
    # float64: the same formula in float64
    _check(rig.euler_rotation(yaw, pitch, roll), float64_euler(*(torch.from_numpy(a) for a in (yaw, pitch, roll))), np.float64)


def test_euler_rotation_broadcasts_python_floats():
    R = rig.euler_rotation(0.3, np.array([0.1, -0.2]), 0.0)
    assert R.shape == (2, 3, 3) and R.dtype == np.float64
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-15)


@pytest.mark.parametrize("batch", BATCHES)
def test_orbit_matches_torch(rng, batch):
    T = _poses(rng, batch, np.float32)
    for yaw, pitch in [(0.0, 0.0), (0.3, -0.2), (-0.43, 0.26)]:
        _check(rig.orbit(T, yaw, pitch), camera.orbit(torch.from_numpy(T), yaw, pitch), np.float32)
    # per-pose angles, as batched as the poses
    yaw, pitch = _angles(rng, batch, 0.5), _angles(rng, batch, 0.5)
    _check(rig.orbit(T, yaw.astype(np.float32), pitch.astype(np.float32)),
           camera.orbit(torch.from_numpy(T), torch.from_numpy(yaw), torch.from_numpy(pitch)), np.float32)


@pytest.mark.parametrize("batch", BATCHES)
def test_orbit_float64_matches_torch_formula(rng, batch, float64_euler):
    # torch's orbit builds its rotation in float32 even for float64 poses; rig's follows the
    # poses' dtype, so compare with torch's orbit given a float64 rotation
    T = _poses(rng, batch, np.float64)
    yaw, pitch = _angles(rng, batch, 0.5), _angles(rng, batch, 0.5)
    _check(rig.orbit(T, yaw, pitch), camera.orbit(torch.from_numpy(T), torch.from_numpy(yaw), torch.from_numpy(pitch)), np.float64)
    _check(rig.orbit(T, 0.3, -0.2), camera.orbit(torch.from_numpy(T), 0.3, -0.2), np.float64)


def test_orbit_keeps_the_joint_on_the_optical_axis():
    T = rig.translation(np.array([0.0, 0.0, 1.2]))
    T2 = rig.orbit(T, 0.4, -0.2)
    np.testing.assert_allclose(T2[:3, 3], [0.0, 0.0, 1.2], atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_stereo_pair_matches_torch(rng, dtype, batch):
    T = _poses(rng, batch, dtype)
    for baseline in (rig.DEFAULT_BASELINE, 0.0, 0.117):
        ours = rig.stereo_pair(T, baseline)
        theirs = camera.stereo_pair(torch.from_numpy(T), baseline)
        for a, b in zip(ours, theirs):
            _check(a, b, dtype)
    left, right = rig.stereo_pair(T)
    # the eyes' centres are a baseline apart
    centres = [invert[..., :3, 3] for invert in (rig.invert_pose(left), rig.invert_pose(right))]
    np.testing.assert_allclose(np.linalg.norm(centres[0] - centres[1], axis=-1), rig.DEFAULT_BASELINE, atol=10 * ATOL[dtype])


@pytest.mark.parametrize("batch", BATCHES)
def test_intrinsics_match_torch(rng, batch):
    fx, fy = rng.uniform(200, 2000, batch), rng.uniform(200, 2000, batch)
    cx, cy = rng.uniform(0, 1000, batch), rng.uniform(0, 1000, batch)
    theirs = camera.intrinsics(*(torch.from_numpy(np.asarray(v)) for v in (fx, fy, cx, cy)))  # float32 only
    _check(rig.intrinsics(fx, fy, cx, cy, dtype=np.float32), theirs, np.float32, atol=0)
    _check(rig.intrinsics(*(np.float32(v) if not batch else v.astype(np.float32) for v in (fx, fy, cx, cy))), theirs, np.float32, atol=0)
    # float64 keeps the inputs as given (torch's would round them to float32)
    K = rig.intrinsics(fx, fy, cx, cy)
    assert K.dtype == np.float64 and K.shape == (*batch, 3, 3)
    assert np.array_equal(K[..., 0, 0], fx) and np.array_equal(K[..., 1, 2], cy)
    _check(K.astype(np.float32), theirs, np.float32, atol=0)
    # Python floats, as the viewer passes them
    _check(rig.intrinsics(1250.0, 1250.0, 319.5, 239.5, dtype=np.float32), camera.intrinsics(1250.0, 1250.0, 319.5, 239.5), np.float32, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_scale_intrinsics_matches_torch(rng, dtype, batch):
    K = rig.intrinsics(rng.uniform(200, 2000, batch), rng.uniform(200, 2000, batch), rng.uniform(0, 1000, batch),
                       rng.uniform(0, 1000, batch), dtype=dtype)
    for sx, sy in [(0.5, None), (0.37, 0.81), (2.0, 1.0)]:
        # pixel-valued (up to ~4000 px): the float32 tolerance is relative, a few units in the last place
        theirs = camera.scale_intrinsics(torch.from_numpy(K), sx, sy)
        ours = rig.scale_intrinsics(K, sx, sy)
        assert ours.dtype == dtype and ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-15, atol=ATOL[dtype])


def test_viewer_main_process_is_torch_free():
    modules = ["app.viewer.viewer", "app.gl.renderer", "app.gl.stereo", "app.viewer.view_state", "model.formats.clip",
               "model.geometry.rig", "app.live.session", "app.live.clip_stream", "app.cli.viewer"]
    code = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "a module of the viewer's main process imports torch (python -X importtime says which)"
