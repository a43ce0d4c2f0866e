"""Drawing a texture into a viewport, optionally through the sRGB transfer function.

Two users: the OpenXR path when the runtime's swapchain is linear (our images hold sRGB values; a
linear swapchain wants linear light, so they are decoded on the way in, or the headset shows
washed-out colours), and the desktop mirror of the headset, which shows the eye images (sampling
an sRGB swapchain texture decodes it to linear, so the mirror encodes again).
"""
from __future__ import annotations

import numpy as np

COPY, DECODE, ENCODE = 0, 1, 2  # out = in; sRGB -> linear; linear -> sRGB

_VERTEX = """
#version 330 core
out vec2 uv;
void main() {
    // one triangle covering the viewport
    vec2 p = vec2(float((gl_VertexID & 1) << 2), float((gl_VertexID & 2) << 1)) - 1.0;
    uv = p * 0.5 + 0.5;
    gl_Position = vec4(p, 0.0, 1.0);
}
"""

_FRAGMENT = """
#version 330 core
uniform sampler2D image;
uniform int transfer;
uniform bool flip_y;
in vec2 uv;
out vec4 colour;
vec3 decode(vec3 c) { return mix(c / 12.92, pow((c + 0.055) / 1.055, vec3(2.4)), step(0.04045, c)); }
vec3 encode(vec3 c) { return mix(c * 12.92, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(0.0031308, c)); }
void main() {
    vec4 c = texture(image, vec2(uv.x, flip_y ? 1.0 - uv.y : uv.y));
    if (transfer == 1) c.rgb = decode(c.rgb);
    else if (transfer == 2) c.rgb = encode(clamp(c.rgb, 0.0, 1.0));
    colour = vec4(c.rgb, 1.0);
}
"""


# COPY alone: llvmpipe runs both sides of the transfer branches per pixel block (pow included), which
# made the desktop window's two 512^2 eye blits cost ~6 ms a frame
_FRAGMENT_COPY = """
#version 330 core
uniform sampler2D image;
uniform bool flip_y;
in vec2 uv;
out vec4 colour;
void main() {
    colour = vec4(texture(image, vec2(uv.x, flip_y ? 1.0 - uv.y : uv.y)).rgb, 1.0);
}
"""


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB decoding (IEC 61966-2-1) of values in [0, 1]: the reference for DECODE."""
    v = np.asarray(values, np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


class TextureBlit:
    """Draws a moderngl texture over a viewport of the bound framebuffer with a transfer function."""

    def __init__(self, ctx):
        import moderngl

        self._moderngl = moderngl
        self.ctx = ctx
        self._program = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self._copy_program = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT_COPY)
        self._vaos = {}
        for program in (self._program, self._copy_program):
            program["image"] = 0
            self._vaos[program] = ctx.vertex_array(program, [])

    def draw(self, texture, viewport: tuple[int, int, int, int], transfer: int = COPY, flip_y: bool = False) -> None:
        """Into the currently bound framebuffer at `viewport` (x, y, w, h), scaled linearly."""
        ctx = self.ctx
        ctx.viewport = viewport
        ctx.disable(self._moderngl.BLEND | self._moderngl.DEPTH_TEST)
        texture.filter = (self._moderngl.LINEAR, self._moderngl.LINEAR)
        # scaled, the edge pixels sample half a texel outside: GL's default REPEAT would blend in
        # the opposite edge (a line of the picture's bottom along its top)
        texture.repeat_x = texture.repeat_y = False
        texture.use(0)
        program = self._copy_program if transfer == COPY else self._program
        if program is self._program:
            program["transfer"] = int(transfer)
        program["flip_y"] = bool(flip_y)
        self._vaos[program].render(self._moderngl.TRIANGLES, vertices=3)

    def release(self) -> None:
        for program, vao in self._vaos.items():
            vao.release()
            program.release()


def letterbox(image_size: tuple[int, int], viewport: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The largest viewport inside `viewport` (x, y, w, h) with the aspect of `image_size` (w, h), centred."""
    x, y, w, h = viewport
    iw, ih = image_size
    scale = min(w / max(iw, 1), h / max(ih, 1))
    sw, sh = max(1, int(iw * scale)), max(1, int(ih * scale))
    return (x + (w - sw) // 2, y + (h - sh) // 2, sw, sh)
