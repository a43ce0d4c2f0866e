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


def test_scaled_blit_does_not_wrap_the_opposite_edge_in(gl_context):
    """Scaling up samples half a texel past the texture's edges: with GL's default REPEAT the
    bottom rows bled into the top row of the window (imp-viewer showed the astronaut's orange suit
    as a line along the top of the view); clamped, each edge shows only its own texels."""
    image = np.zeros((8, 8, 4), np.uint8)
    image[4:] = 255  # top half black, bottom half white (rows from the texture's origin)
    image[:, 4:, 0] = 200  # left half without red, right half red: the other axis
    texture = gl_context.texture((8, 8), 4, image.tobytes())
    target = gl_context.simple_framebuffer((64, 64))
    blit = TextureBlit(gl_context)
    target.use()
    target.clear(0.0, 0.0, 0.0, 1.0)
    blit.draw(texture, (0, 0, 64, 64))
    out = np.frombuffer(target.read(components=3), np.uint8).reshape(64, 64, 3).astype(int)
    assert np.abs(out[0, :, 1] - 0).max() <= 1  # the black edge row stays black
    assert np.abs(out[-1, :, 1] - 255).max() <= 1  # the white one white
    assert np.abs(out[:, 0, 0] - out[:, 1, 0]).max() <= 1  # no red wrapped in from the right
    assert out[:, -1, 0].min() >= 199  # the right edge stays red
    blit.release()
    texture.release()
    target.release()
