"""app/gl/stereo.py on the GPU (EGL): the compositor drawing each eye at a fraction of its viewport
and scaling it up shows nearly the same picture as drawing it at full size (the MPI has little
detail finer than the reduced size), in every stereo mode."""
from __future__ import annotations

import numpy as np
import pytest

from app.viewer import view_state as vs
from bench.synthetic import head_mpi


@pytest.mark.parametrize("mode", ["mono", "sbs", "anaglyph"])
def test_scaled_eyes_match_full_size_eyes(gl_context, mode):
    from app.gl.renderer import MPIRenderer
    from app.gl.stereo import StereoCompositor, eye_viewports

    frame = head_mpi(size=64, num_planes=8)
    renderer, compositor = MPIRenderer(gl_context), StereoCompositor(gl_context)
    renderer.upload(frame)
    W, H = (512, 256) if mode == "sbs" else (256, 256)
    target = gl_context.simple_framebuffer((W, H))
    eye = eye_viewports(mode, (0, 0, W, H))[0][2:]
    state = vs.initial_state(frame.K, frame.T_cam_from_head, frame.size[1], stereo=mode)
    cameras = vs.eye_cameras(state, frame.T_cam_from_head, frame.T_cam_from_head, eye)
    scale = vs.render_scale(cameras, frame.K, frame.T_cam_from_head)
    assert scale == pytest.approx(0.25, rel=0.02)  # 64² MPI in 256² eyes: drawn at 64²
    sharper = vs.render_scale(cameras, frame.K, frame.T_cam_from_head, limit=2.0)

    def shot(s: float) -> np.ndarray:
        compositor.draw(renderer, cameras, mode, (0, 0, W, H), target, s)
        return np.frombuffer(target.read(components=3), np.uint8).reshape(H, W, 3).astype(np.float32)

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))

    full = shot(1.0)
    # this synthetic head has hard edges; the model's MPIs are softer (37 dB at 1 px per MPI pixel
    # against 2 in imp-viewer's window, invisible side by side)
    assert psnr(full, shot(scale)) > 30.0
    assert psnr(full, shot(sharper)) > 35.0
    assert full.std() > 20  # a picture, not an empty frame
    compositor.release()
    renderer.release()
    target.release()


class _Bands:
    """Stands in for the MPI renderer (whose zero frame darkens a view's outermost pixels by
    design): draws a black lower half and a white upper half into the viewport it is given."""

    def __init__(self, ctx):
        self.ctx = ctx

    def draw(self, K, T, viewport) -> None:
        x, y, w, h = viewport
        self.ctx.clear(0.0, 0.0, 0.0, 1.0, viewport=(x, y, w, h // 2))
        self.ctx.clear(1.0, 1.0, 1.0, 1.0, viewport=(x, y + h // 2, w, h - h // 2))


@pytest.mark.parametrize("mode", ["mono", "sbs", "anaglyph"])
def test_scaled_eyes_keep_their_own_edges(gl_context, mode):
    """Scaled up, a view's edge pixels sample half a texel outside the eye's image: with GL's
    default REPEAT the top edge took in the bottom's colour (imp-viewer showed a line of the
    astronaut's orange suit along the top of the view)."""
    from app.gl.stereo import StereoCompositor, eye_viewports

    W, H = (256, 64) if mode == "sbs" else (128, 64)
    target = gl_context.simple_framebuffer((W, H))
    compositor = StereoCompositor(gl_context)
    eyes = eye_viewports(mode, (0, 0, W, H))
    camera = (np.eye(3), np.eye(4))
    compositor.draw(_Bands(gl_context), [camera] * len(eyes), mode, (0, 0, W, H), target, 0.25)
    out = np.frombuffer(target.read(components=3), np.uint8).reshape(H, W, 3).astype(int)  # row 0: the bottom
    assert out[0].max() <= 1, "the bottom edge took in the top's white"
    assert out[-1].min() >= 254, "the top edge took in the bottom's black"
    compositor.release()
    target.release()
