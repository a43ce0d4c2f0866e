"""app/gl/stereo.py on the GPU (EGL): the compositor drawing each eye at a fraction of its viewport
and scaling it up shows the same picture as drawing it at full size (the MPI has no detail finer
than the reduced size), in every stereo mode."""
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
    assert scale == pytest.approx(0.5, rel=0.02)  # 64² MPI in 256² eyes: drawn at 128²

    def shot(s: float) -> np.ndarray:
        compositor.draw(renderer, cameras, mode, (0, 0, W, H), target, s)
        return np.frombuffer(target.read(components=3), np.uint8).reshape(H, W, 3).astype(np.float32)

    full, scaled = shot(1.0), shot(scale)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((full - scaled) ** 2))
    assert psnr > 35.0, psnr
    assert full.std() > 20  # a picture, not an empty frame
    compositor.release()
    renderer.release()
    target.release()
