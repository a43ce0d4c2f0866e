"""The GL MPI renderer against the torch reference (model.geometry.mpi.render), on EGL / llvmpipe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.geometry import camera
from bench import synthetic

moderngl = pytest.importorskip("moderngl")
from app.gl.renderer import MPIRenderer, occupied_tiles  # noqa: E402


def _reference(frame, K, T_view_from_head, size, background=True) -> np.ndarray:
    out = frame.render_reference(K, T_view_from_head, size)
    img = out.rgb if background else out.foreground
    return img[0].permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10.0 * np.log10(np.mean((a.astype(np.float64) - b) ** 2) + 1e-12))


def _random_view(frame, rng: np.random.Generator) -> np.ndarray:
    """T_view_from_head: the MPI camera turned by up to +/-10 deg about each axis and moved +/-10 cm."""
    R = camera.euler_rotation(*np.deg2rad(rng.uniform(-10.0, 10.0, 3))).numpy().astype(np.float64)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = rng.uniform(-0.1, 0.1, 3)
    return T @ np.asarray(frame.T_cam_from_head, np.float64)


@pytest.fixture()
def renderer(gl_context):
    r = MPIRenderer(gl_context)
    yield r
    r.release()


def test_matches_torch_on_random_mpis_and_cameras(renderer):
    rng = np.random.default_rng(1)
    for seed in range(2):
        frame = synthetic.random_mpi((70, 94), 24, seed=seed)  # width not a multiple of 4
        renderer.upload(frame)
        for k in range(3):
            if k < 2:  # the MPI's own intrinsics
                K, size = frame.K, (94, 70)
            else:  # another image size, focal length and principal point
                K, size = camera.intrinsics(170.0, 180.0, 60.3, 41.7).numpy(), (128, 80)
            T = _random_view(frame, rng)
            psnr = _psnr(renderer.render(K, T, size), _reference(frame, K, T, size))
            assert psnr >= 45.0, f"seed {seed} view {k}: PSNR {psnr:.1f} dB"


def test_matches_torch_on_head_mpi(renderer):
    # a dense frame first: texels the head frame leaves unwritten (never sampled) hold its values
    renderer.upload(synthetic.random_mpi(128, 24, seed=9))
    frame = synthetic.head_mpi(128, 24)
    renderer.upload(frame)
    assert renderer.stats.pixels < 0.5 * frame.alpha.size  # empty space is really skipped
    rng = np.random.default_rng(2)
    for _ in range(3):
        T = _random_view(frame, rng)
        gl = renderer.render(frame.K, T, (128, 128))
        assert _psnr(gl, _reference(frame, frame.K, T, (128, 128))) >= 45.0


def test_without_background(renderer, gl_context):
    frame = synthetic.random_mpi(64, 8, seed=3, background=False)
    renderer.upload(frame)
    T = _random_view(frame, np.random.default_rng(3))
    assert _psnr(renderer.render(frame.K, T, (64, 64)), _reference(frame, frame.K, T, (64, 64))) >= 45.0
    # background=False on a frame that has one gives the reference's foreground
    frame = synthetic.head_mpi(64, 12)
    renderer.upload(frame)
    fbo = gl_context.framebuffer(color_attachments=[gl_context.texture((64, 64), 4)])
    fbo.use()
    fbo.clear(0.0, 0.0, 0.0, 0.0)
    renderer.draw(frame.K, T, (0, 0, 64, 64), background=False)
    gl = np.frombuffer(fbo.read(components=3), np.uint8).reshape(64, 64, 3)[::-1] / 255.0
    fbo.color_attachments[0].release()
    fbo.release()
    ref = _reference(frame, frame.K, T, (64, 64), background=False)
    assert _psnr(gl, ref) >= 45.0
    assert _psnr(gl, _reference(frame, frame.K, T, (64, 64))) < 30.0  # the background really is left out


def test_draw_lands_upright_inside_viewport(renderer, gl_context):
    frame = synthetic.head_mpi(64, 12)
    renderer.upload(frame)
    T = _random_view(frame, np.random.default_rng(4))
    alone = renderer.render(frame.K, T, (64, 48))
    fbo = gl_context.framebuffer(color_attachments=[gl_context.texture((160, 100), 4)])
    fbo.use()
    fbo.clear(0.0, 0.0, 0.0, 0.0)
    renderer.draw(frame.K, T, (30, 20, 64, 48))
    full = np.frombuffer(fbo.read(components=3), np.uint8).reshape(100, 160, 3)
    fbo.color_attachments[0].release()
    fbo.release()
    inside = full[20:68, 30:94][::-1] / 255.0  # GL rows run bottom-up
    np.testing.assert_allclose(inside, alone, atol=1.0 / 255.0)
    outside = full.copy()
    outside[20:68, 30:94] = 0
    assert outside.max() == 0  # nothing drawn outside the viewport
    # upright: the head (above the shoulders) is in the upper rows, like the reference
    ref = _reference(frame, frame.K, T, (64, 48))
    assert _psnr(alone, ref) >= 45.0 and _psnr(alone[::-1], ref) < 30.0


def test_stereo_equals_two_renders_and_textures_upload_once(renderer, monkeypatch):
    writes = []
    for cls in (moderngl.Texture, moderngl.TextureArray, moderngl.Buffer):
        original = cls.write
        monkeypatch.setattr(cls, "write", lambda self, *a, _orig=original, **kw: (writes.append(self), _orig(self, *a, **kw))[1])
    runs = []
    original_run = moderngl.ComputeShader.run
    monkeypatch.setattr(moderngl.ComputeShader, "run", lambda self, *a, **kw: (runs.append(1), original_run(self, *a, **kw))[1])

    frame = synthetic.head_mpi(64, 12)
    renderer.upload(frame)
    per_upload = len(writes)
    assert per_upload >= 4 and len(runs) == 1  # alpha, colours, plane array, background, ...; one colour pass
    T = _random_view(frame, np.random.default_rng(5))
    left, right = renderer.render_stereo(frame.K, T, (64, 64), baseline=0.06)
    for _ in range(3):
        renderer.render(frame.K, T, (64, 64))
    assert len(writes) == per_upload and len(runs) == 1  # views re-use the frame's textures and buffers
    T_left, T_right = (p.numpy() for p in camera.stereo_pair(torch.from_numpy(T.astype(np.float32)), 0.06))
    np.testing.assert_array_equal(left, renderer.render(frame.K, T_left, (64, 64)))
    np.testing.assert_array_equal(right, renderer.render(frame.K, T_right, (64, 64)))
    assert np.abs(left - right).max() > 0.1  # the eyes really differ
    renderer.upload(synthetic.head_mpi(64, 12, seed=1))
    assert len(writes) == 2 * per_upload and len(runs) == 2


@pytest.mark.parametrize("tile", [6, 8])  # byte-wise and 64-bit-word paths
def test_occupied_tiles_cover_dilated_alpha_exactly_once(tile):
    rng = np.random.default_rng(6)
    alpha = np.zeros((3, 37, 45), np.uint8)
    for _ in range(12):
        d, y, x = rng.integers(0, 3), rng.integers(0, 37), rng.integers(0, 45)
        alpha[d, y, x] = rng.integers(1, 256)
    alpha[1, 5:30, 3:40] = 200  # a filled block: runs of tiles merge
    rects = occupied_tiles(alpha, tile)
    assert np.all(np.diff(rects[:, 4]) >= 0)  # back to front
    cover = np.zeros(alpha.shape, int)
    for x0, y0, x1, y1, d in rects:
        assert y1 - y0 <= tile and y0 // tile == (y1 - 1) // tile  # within one row of tiles
        cover[d, y0:y1, x0:x1] += 1
    assert cover.max() == 1
    for d, y, x in zip(*np.nonzero(alpha)):
        assert np.all(cover[d, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] == 1)
    assert cover.sum() < alpha.size // 2  # most of the empty space is left out
    assert len(rects) < 50  # the block is a few long strips, not 20-30 tiles


def test_no_cracks_between_tiles(renderer):
    """An opaque white plane whose tiles shrink to different boxes (T-junctions everywhere): every
    pixel well inside its image must be white in every view (a crack shows the black behind)."""
    size = 192
    frame = synthetic.random_mpi(size, 3, seed=7, background=False)
    yy, xx = np.mgrid[:size, :size]
    rng = np.random.default_rng(7)
    blob = np.zeros((size, size), bool)
    for cx, cy, r in zip(rng.uniform(20, 172, 40), rng.uniform(20, 172, 40), rng.uniform(5, 30, 40)):
        blob |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    frame.alpha[:] = 0
    frame.alpha[1] = np.where(blob, 255, 0)
    frame.frontal[:] = 255
    frame.residual[:] = 255
    renderer.upload(frame)
    views = [_random_view(frame, rng) for _ in range(12)]
    for T in views:
        gl = renderer.render(frame.K, T, (size, size))
        ref = _reference(frame, frame.K, T, (size, size))
        inside = ref.min(-1) > 0.999  # fully covered in the reference
        assert gl[inside].min() > 0.99, f"{int((gl[inside].min(-1) <= 0.99).sum())} cracked pixels"


def test_synthetic_mpis():
    head = synthetic.head_mpi(96, 24)
    assert head.alpha.shape == (24, 96, 96) and head.frontal.shape == (3, 96, 96) and head.background is not None
    covered = (head.alpha > 0).any(0)
    assert 0.2 < covered.mean() < 0.7  # a head and shoulders over a background
    assert (head.alpha > 0).sum(0)[covered].mean() < 4.0  # alpha concentrated in a few planes per pixel
    assert head.alpha.max(0)[48, 48] == 255  # opaque face at the centre
    rand = synthetic.random_mpi((40, 50), 6, seed=0)
    assert rand.alpha.shape == (6, 40, 50) and (rand.alpha > 0).mean() > 0.95
    np.testing.assert_allclose(rand.K[:2, 2], [24.5, 19.5])
