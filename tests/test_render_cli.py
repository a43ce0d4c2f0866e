"""`imp render`: every view of a small synthetic clip through the GL renderer into an mp4, decoded
and compared with the torch reference renderer (model.geometry.mpi.render) within H.264's tolerance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.cli import render as render_cli
from app.cli.imp import main
from app.gl.stereo import ANAGLYPH_LEFT
from model.geometry import camera
from model.formats.clip import MPIClip, MPIFrame, save_clip
from bench.synthetic import head_mpi
from model.formats.video import read_video

N, S, D = 4, 48, 8  # frames, MPI size, planes: small, but the head spans ~30 px


def _clip() -> MPIClip:
    head = head_mpi(S, D)
    frames = []
    for i in range(N):
        T = head.T_cam_from_head.copy()
        T[0, 3] = 0.002 * i  # the head drifts: per-frame cameras must be used
        frames.append(MPIFrame(np.roll(head.frontal, i, -1), np.roll(head.residual, i, -1), np.roll(head.alpha, i, -1),
                               head.K, T, head.near, head.far, head.background))
    return MPIClip.from_frames(frames, fps=12.0)


def _reference(frame: MPIFrame, K: np.ndarray, T_view_from_head: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
    """Torch reference render (h, w, 3) in [0, 1]."""
    out = frame.render_reference(K, T_view_from_head, out_wh)
    return out.rgb[0].permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a
    b = b.astype(np.float64) / 255.0 if b.dtype == np.uint8 else b
    return float(-10.0 * np.log10(np.mean((a - b) ** 2)))


LUMA = np.array([0.299, 0.587, 0.114])


def _luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of BT.601 luma: the mp4s are 4:2:0, whose halved chroma costs the synthetic head's
    per-pixel colour noise ~24 dB, while luma keeps ~37 dB (GL vs torch alone: ~59 dB)."""
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    b = b.astype(np.float64) / 255.0 if b.dtype == np.uint8 else b.astype(np.float64)
    return _psnr(a @ LUMA, b @ LUMA)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, gl_context):
    """(clip, {view: (frames (N, h, w, 3) uint8, fps)}) for every view; gl_context skips the
    module on machines without EGL (imp render makes its own context)."""
    tmp = tmp_path_factory.mktemp("render")
    clip = _clip()
    path = tmp / "clip.mpi"
    save_clip(clip, path)
    out = {}
    for view in render_cli.VIEWS:
        extra = {"orbit": ["--size", "64"],  # one view exercises --size
                 # converged eyes see the head alike; a wide baseline makes the eyes' images
                 # differ enough (face ~7 px, background ~3 px) to tell which channel has which
                 "anaglyph": ["--baseline", "0.5"]}.get(view, [])
        mp4 = tmp / f"{view}.mp4"
        assert main(["render", str(path), "-o", str(mp4), "--view", view, *extra]) == 0, view
        out[view] = read_video(mp4)
    return clip, out


def test_every_view_has_the_clips_frames_fps_and_size(rendered):
    _, out = rendered
    for view, (frames, fps) in out.items():
        w = 2 * S if view == "stereo-sbs" else 64 if view == "orbit" else S
        h = 64 if view == "orbit" else S
        assert frames.shape == (N, h, w, 3), view
        assert fps == pytest.approx(12.0), view


def test_front_view_matches_the_torch_reference(rendered):
    clip, out = rendered
    frames = out["front"][0]
    for i in range(N):
        f = clip.frame(i)
        ref = _reference(f, f.K, f.T_cam_from_head, (S, S))
        assert _luma_psnr(frames[i], ref) > 32.0, i
    # the per-frame camera moves with the head: frame 3 is not frame 0
    assert _luma_psnr(frames[3], frames[0]) < _luma_psnr(frames[3], _reference(clip.frame(3), clip.K[3], clip.T_cam_from_head[3], (S, S)))


def test_stereo_halves_are_the_left_and_right_eyes(rendered):
    clip, out = rendered
    frames = out["stereo-sbs"][0]
    f = clip.frame(0)
    left, right = camera.stereo_pair(torch.from_numpy(f.T_cam_from_head), 0.05)
    ref_l, ref_r = _reference(f, f.K, left.numpy(), (S, S)), _reference(f, f.K, right.numpy(), (S, S))
    img_l, img_r = frames[0][:, :S], frames[0][:, S:]
    assert _luma_psnr(img_l, ref_l) > 32.0 and _luma_psnr(img_r, ref_r) > 32.0
    assert _luma_psnr(img_l, ref_l) > _luma_psnr(img_l, ref_r) + 3.0
    # parallel eyes: everything shifts right in the left eye by f b / z = 2.5 * 48 * 0.05 / ~1 m = 6 px
    a, b = img_l.astype(float), img_r.astype(float)
    errors = {s: np.abs(a[:, 8 + s:S - 8 + s] - b[:, 8:S - 8]).mean() for s in range(-8, 9)}
    assert 5 <= min(errors, key=errors.get) <= 7


def test_anaglyph_takes_red_from_the_left_eye_and_cyan_from_the_right(rendered):
    clip, out = rendered
    img = out["anaglyph"][0][0].astype(np.float64) / 255.0
    f = clip.frame(0)
    (K_l, T_l), (K_r, T_r) = render_cli.stereo_cameras(f.K, f.T_cam_from_head, 0.5, converge=True)
    assert K_l[0, 2] < K_r[0, 2]  # converged: the left eye's principal point moves left
    ref_l, ref_r = _reference(f, K_l, T_l, (S, S)), _reference(f, K_r, T_r, (S, S))
    luma_l, luma_r = ref_l @ ANAGLYPH_LEFT[0], ref_r @ ANAGLYPH_LEFT[0]
    # single channels carry 4:2:0 chroma loss (~26 dB here); the wrong eye scores ~18 dB
    assert _psnr(img[..., 0], luma_l) > 24.0
    assert _psnr(img[..., 0], luma_l) > _psnr(img[..., 0], luma_r) + 5.0
    assert _psnr(img[..., 1:], ref_r[..., 1:]) > 24.0
    assert _psnr(img[..., 1:], ref_r[..., 1:]) > _psnr(img[..., 1:], ref_l[..., 1:]) + 5.0


def test_orbit_swings_ten_degrees_about_the_head_joint(rendered):
    clip, out = rendered
    frames = out["orbit"][0]
    for i in (0, 1):  # phase 0 (the MPI camera) and 1/4 (the full +10 degrees)
        f = clip.frame(i)
        K = camera.scale_intrinsics(torch.from_numpy(f.K), 64 / S).numpy()
        T = camera.orbit(torch.from_numpy(f.T_cam_from_head), math.radians(10.0) * (i == 1)).numpy()
        ref = _reference(f, K, T, (64, 64))
        assert _luma_psnr(frames[i], ref) > 32.0, i
    assert _luma_psnr(frames[1], _reference(clip.frame(1), K, clip.T_cam_from_head[1], (64, 64))) < _luma_psnr(frames[1], ref) - 3.0
    T0 = clip.T_cam_from_head[0]
    for phase in np.linspace(0, 1, 9):
        _, T = render_cli.view_camera("orbit", clip.K[0], T0, phase, (S, S), (S, S))
        R_rel = T[:3, :3] @ T0[:3, :3].T
        angle = math.degrees(math.acos(np.clip((np.trace(R_rel) - 1) / 2, -1, 1)))
        assert angle <= 10.0 + 1e-3
        assert np.linalg.norm(T[:3, 3]) == pytest.approx(np.linalg.norm(T0[:3, 3]), abs=1e-5)  # same distance to the joint


def test_dolly_keeps_the_heads_size_while_the_camera_moves(rendered):
    clip, out = rendered
    frames = out["dolly"][0]
    f = clip.frame(2)  # phase 1/2: the far end, 1.5x the distance
    K, T = camera.dolly_zoom(torch.from_numpy(f.K), torch.from_numpy(f.T_cam_from_head), 1.5 * float(f.T_cam_from_head[2, 3]))
    assert _luma_psnr(frames[2], _reference(f, K.numpy(), T.numpy(), (S, S))) > 32.0
    T0, K0 = clip.T_cam_from_head[0], clip.K[0]
    joint = np.array([[0.0, 0.0, 0.0], [0.08, 0.0, 0.0]])  # head joint and a point on the cheek plane
    sizes, depths = [], []
    for phase in (0.0, 0.25, 0.5):
        K, T = render_cli.view_camera("dolly", K0, T0, phase, (S, S), (S, S))
        px, z = camera.project(torch.from_numpy(K), torch.from_numpy(T), torch.from_numpy(joint).float())
        sizes.append(float(px[1, 0] - px[0, 0]))
        depths.append(float(z[0]))
    assert depths == pytest.approx([0.7, 1.1, 1.5], abs=1e-5)
    assert sizes == pytest.approx([sizes[0]] * 3, rel=1e-5)


def test_render_errors_are_clear(tmp_path, capsys):
    assert main(["render", str(tmp_path / "missing.mpi"), "-o", str(tmp_path / "out.mp4")]) == 2
    assert "missing.mpi: no such clip file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["render", str(tmp_path / "missing.mpi"), "-o", str(tmp_path / "out.mp4"), "--view", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown view 'sideways'"):
        render_cli.view_camera("sideways", np.eye(3), np.eye(4), 0.0, (S, S), (S, S))


def test_a_clip_that_breaks_mid_way_leaves_no_video(tmp_path, capsys, gl_context):
    clip = _clip()
    path = tmp_path / "clip.mpi"
    save_clip(clip, path)
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF  # inside the last frame: the file opens, frame 3 fails its checksum
    path.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    assert main(["render", str(path), "-o", str(out)]) == 2
    assert "fails its checksum" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]
