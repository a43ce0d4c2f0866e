"""app/gl/blit.py on the GPU (EGL): a texture drawn into a viewport as it is (its own, branch-free
program), flipped, or through the sRGB transfer functions."""
from __future__ import annotations

import numpy as np

from app.gl.blit import COPY, DECODE, ENCODE, TextureBlit, srgb_to_linear


def test_blit_copies_flips_and_transfers(gl_context):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 4), np.uint8)
    texture = gl_context.texture((16, 16), 4, image.tobytes())
    target = gl_context.simple_framebuffer((16, 16))
    blit = TextureBlit(gl_context)

    def drawn(transfer: int, flip_y: bool = False) -> np.ndarray:
        target.use()
        target.clear(0.0, 0.0, 0.0, 1.0)
        blit.draw(texture, (0, 0, 16, 16), transfer, flip_y)
        return np.frombuffer(target.read(components=3), np.uint8).reshape(16, 16, 3).astype(float)

    rgb = image[..., :3].astype(float)
    assert np.abs(drawn(COPY) - rgb).max() <= 1.0  # same size: texel for pixel
    assert np.abs(drawn(COPY, flip_y=True) - rgb[::-1]).max() <= 1.0
    assert np.abs(drawn(DECODE) - np.round(srgb_to_linear(rgb / 255) * 255)).max() <= 2.0
    assert drawn(ENCODE).mean() > rgb.mean() + 20  # encoding lifts the mid-tones
    blit.release()
    texture.release()
    target.release()
