"""The non-learned lift of a portrait into an MPI: it reproduces the portrait from its own camera
and shows the parallax its depths imply from a side view."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.cli import imp as cli
from model.geometry import camera, mpi
from model import lift
from model.tracking.crop import crop_affine, crop_image


@pytest.fixture(scope="module")
def astronaut(astronaut_path):
    from PIL import Image

    from model.tracking.track import track_image

    rgb = np.asarray(Image.open(astronaut_path).convert("RGB"))
    frame = lift.lift_portrait(astronaut_path, res=256, num_planes=24)
    track = track_image(rgb)
    A = crop_affine(track.K, 256)
    crop = crop_image(rgb, A, 256, border="replicate")
    landmarks = track.landmarks[0] @ A[:2, :2].T + A[:2, 2]
    return frame, crop, landmarks


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / mse)


def test_lift_reproduces_the_portrait_from_its_camera(astronaut):
    frame, crop, _ = astronaut
    assert frame.alpha.shape == (24, 256, 256) and frame.alpha.dtype == np.uint8
    assert frame.frontal.shape == (3, 256, 256) and frame.background.shape == (3, 256, 256)
    assert np.allclose(frame.K, camera.crop_intrinsics(256).numpy())
    r = float(np.linalg.norm(frame.T_cam_from_head[:3, 3]))
    assert 0.5 < r < 2.0  # a head at a plausible distance
    assert abs(frame.near - (r - mpi.NEAR_OFFSET)) < 1e-5 and abs(frame.far - (r + mpi.FAR_OFFSET)) < 1e-5
    front = lift.render_view(frame)
    psnr = _psnr(front, crop)
    assert psnr >= 30.0, f"frontal render vs portrait: {psnr:.1f} dB"
    # it is a layered scene, not one plane: the person spans several planes
    used = (frame.alpha.reshape(24, -1) > 128).any(1)
    assert used.sum() >= 4


def _shift(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int], search: int = 12) -> np.ndarray:
    """Sub-pixel (dx, dy) that moves patch `box` (x0, y0, w, h) of image a onto image b."""
    import cv2

    x0, y0, w, h = box
    tpl = a[y0:y0 + h, x0:x0 + w]
    win = b[y0 - search:y0 + h + search, x0 - search:x0 + w + search]
    score = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, (lx, ly) = cv2.minMaxLoc(score)
    assert best > 0.9, f"patch {box} not found in the side view (score {best:.2f})"
    dx = 0.0
    if 0 < lx < score.shape[1] - 1:
        l, c, r = score[ly, lx - 1], score[ly, lx], score[ly, lx + 1]
        dx = 0.5 * (l - r) / (l - 2 * c + r)
    return np.array([lx + dx - search, ly - search])


def test_side_view_shows_the_parallax_of_the_depths(astronaut):
    """Orbiting 5 degrees about the head joint, points in front of the joint (the face) move one
    way and points behind it (the background, at `far`) the other, by f * angle * (r - z) / z.
    Measured by template matching of image patches, compared with the motion expected from the
    depth the MPI itself renders."""
    frame, _, landmarks = astronaut
    yaw = math.radians(5.0)
    front, side = lift.render_view(frame), lift.render_view(frame, yaw)
    t = frame.tensors()
    disparity = mpi.render(t["frontal"], t["residual"], t["alpha"], t["depths"], t["K_src"], t["K_src"],
                           torch.eye(4)[None], t["background"]).disparity[0, 0].numpy()
    T = torch.from_numpy(frame.T_cam_from_head)[None]
    T_rel = camera.relative_pose(T, camera.orbit(T, yaw, 0.0))[0].double().numpy()
    K = frame.K.astype(np.float64)

    def expected(box):
        x0, y0, w, h = box
        ys, xs = np.mgrid[y0:y0 + h, x0:x0 + w]
        z = 1.0 / disparity[ys, xs]
        X = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T * z[..., None]
        q = (X @ T_rel[:3, :3].T + T_rel[:3, 3]) @ K.T
        return (q[..., :2] / q[..., 2:] - np.stack([xs, ys], -1)).reshape(-1, 2).mean(0)

    # the face: eyes to mouth, from the landmarks
    eyes_mouth = landmarks[[33, 263, 61, 291, 1]]
    (fx0, fy0), (fx1, fy1) = eyes_mouth.min(0).astype(int), eyes_mouth.max(0).astype(int)
    face_box = (fx0, fy0, fx1 - fx0, fy1 - fy0)
    # background: the textured top corners of the crop, where no plane has any alpha
    person = frame.alpha.max(0) > 0
    bg_boxes = [b for b in ((16, 14, 40, 30), (200, 14, 40, 30)) if not person[b[1]:b[1] + b[3], b[0]:b[0] + b[2]].any()]
    assert bg_boxes, "no pure-background patch in the crop's top corners"

    face_moved, face_expected = _shift(front, side, face_box), expected(face_box)
    assert face_moved[0] > 2.0  # in front of the joint: moves with the orbit, several pixels
    assert abs(face_moved[0] - face_expected[0]) < 1.0, (face_moved, face_expected)
    for box in bg_boxes:
        moved, exp = _shift(front, side, box), expected(box)
        assert moved[0] < -1.5  # behind the joint: the opposite way
        assert abs(moved[0] - exp[0]) < 1.0, (box, moved, exp)

    # no cracks: inside the person (away from its outline and the crop's edges) the side view
    # does not see through to the background where the depth steps from plane to plane
    import cv2

    T_rel_t = torch.from_numpy(T_rel).float()[None]
    mask = mpi.render(t["frontal"], t["residual"], t["alpha"], t["depths"], t["K_src"], t["K_src"], T_rel_t).mask[0, 0].numpy()
    core = cv2.erode((frame.alpha.max(0) >= 250).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    core[:20], core[-20:], core[:, :20], core[:, -20:] = False, False, False, False
    assert core.sum() > 5000
    assert (mask[core] < 0.98).mean() < 0.005, (mask[core] < 0.98).mean()


def test_depth_guess_and_unmixing():
    H = W = 64
    face = np.zeros((H, W), bool)
    face[20:40, 24:40] = True
    face_depth = np.where(face, 0.95, 0.0).astype(np.float32)
    depth = lift.guess_depth(face_depth, face, chin_y=40.0, joint_depth=1.0)
    assert np.allclose(depth[face], 0.95)
    assert abs(depth[0, 0] - (1.0 + lift.HAIR_BEHIND_JOINT)) < 0.03  # hair, far from the face
    assert depth[63, 0] < depth[0, 0]  # torso in front of the hair
    # next to the face the guess starts from the face's own depth (no tear) and eases away from it
    hair = 1.0 + lift.HAIR_BEHIND_JOINT
    assert abs(depth[20, 23] - 0.95) < 0.3 * (hair - 0.95)
    assert np.all(np.diff(depth[30, :24][::-1]) >= 0)


def test_lift_cli_writes_a_clip(astronaut_path, tmp_path, capsys):
    from model.formats.clip import load_clip

    out = tmp_path / "astronaut.clip"
    preview = tmp_path / "views.png"
    assert cli.main(["lift", str(astronaut_path), "-o", str(out), "--res", "96", "--planes", "8", "--preview", str(preview)]) == 0
    clip = load_clip(out)
    assert len(clip) == 1 and clip.num_planes == 8 and clip.size == (96, 96)
    assert clip.background is not None
    from PIL import Image

    assert Image.open(preview).size == (3 * 96, 96)
    noface = tmp_path / "noface.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(noface)
    assert cli.main(["lift", str(noface), "-o", str(tmp_path / "x.clip")]) == 2
    assert "no face" in capsys.readouterr().err
