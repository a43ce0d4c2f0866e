"""How the eyes' views share one desktop viewport: mono, side by side, or a red / cyan anaglyph.

`eye_viewports` says where each eye is drawn, `compose` is the reference composition on images
(numpy) and `StereoCompositor` does the same on the GPU with `app.gl.renderer.MPIRenderer`.
Anaglyph is "half colour": the red channel carries the left eye's luminance (a red-only left view
would lose faces' red detail and cause rivalry), green and blue come from the right eye unchanged.
"""
from __future__ import annotations

import numpy as np

from app.gl.blit import TextureBlit
from model.geometry import rig  # NumPy twin of model.geometry.camera: no torch in the render loop's process
from model.resources import shader_source

# out = M_LEFT @ left + M_RIGHT @ right, per pixel, RGB
ANAGLYPH_LEFT = np.array([[0.299, 0.587, 0.114], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
ANAGLYPH_RIGHT = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)

Viewport = tuple[int, int, int, int]  # (x, y, w, h), GL framebuffer pixels, origin bottom-left


def eye_viewports(mode: str, viewport: Viewport) -> list[Viewport]:
    """Where each eye is drawn: [viewport] for mono, [left half, right half] for side by side (the
    left eye's image on the left, for parallel viewing and 3D TVs), [viewport, viewport] for
    anaglyph (both eyes over the whole area)."""
    x, y, w, h = viewport
    if mode == "mono":
        return [viewport]
    if mode == "sbs":
        half = w // 2
        return [(x, y, half, h), (x + half, y, half, h)]
    if mode == "anaglyph":
        return [viewport, viewport]
    raise ValueError(f"unknown stereo mode {mode!r}: choose mono, sbs or anaglyph")


def compose(eyes: list[np.ndarray], mode: str) -> np.ndarray:
    """Reference composition of per-eye images (h, w, 3) float in [0, 1] into one image:
    mono -> eyes[0]; sbs -> (h, 2w, 3), left eye first; anaglyph -> (h, w, 3)."""
    if mode == "mono":
        return eyes[0]
    left, right = eyes
    if mode == "sbs":
        return np.concatenate([left, right], axis=1)
    if mode == "anaglyph":
        return np.clip(left @ ANAGLYPH_LEFT.T + right @ ANAGLYPH_RIGHT.T, 0.0, 1.0)
    raise ValueError(f"unknown stereo mode {mode!r}: choose mono, sbs or anaglyph")


class StereoCompositor:
    """Draws the eyes' views of an `MPIRenderer` into a viewport of the bound framebuffer."""

    def __init__(self, ctx):
        import moderngl

        self._moderngl = moderngl
        self.ctx = ctx
        self._program = ctx.program(
            vertex_shader=shader_source("stereo_compose.vert.glsl"),
            fragment_shader=shader_source("stereo_compose.frag.glsl"),
        )
        self._program["left_eye"] = 0
        self._program["right_eye"] = 1
        # GLSL mat3 is column-major: send the transposes
        self._program["m_left"].write(np.ascontiguousarray(ANAGLYPH_LEFT.T).tobytes())
        self._program["m_right"].write(np.ascontiguousarray(ANAGLYPH_RIGHT.T).tobytes())
        self._vao = ctx.vertex_array(self._program, [])
        self._eye_fbos: list = []
        self._eye_size: tuple[int, int] | None = None
        self._blit: TextureBlit | None = None

    def _eye_targets(self, size: tuple[int, int], scaled: bool) -> list:
        if self._eye_size != size:
            for fbo in self._eye_fbos:
                fbo.color_attachments[0].release()
                fbo.release()
            self._eye_fbos = [self.ctx.framebuffer(color_attachments=[self.ctx.texture(size, 4)]) for _ in range(2)]
            self._eye_size = size
        for fbo in self._eye_fbos:  # same size as the viewport: texel for pixel; smaller: scaled up
            f = self._moderngl.LINEAR if scaled else self._moderngl.NEAREST
            fbo.color_attachments[0].filter = (f, f)
            fbo.color_attachments[0].repeat_x = fbo.color_attachments[0].repeat_y = False  # no wrapped-in edges
        return self._eye_fbos

    def draw(self, renderer, cameras: list[tuple[np.ndarray, np.ndarray]], mode: str, viewport: Viewport, target,
             scale: float = 1.0) -> None:
        """Draw `cameras` [(K, T_view_from_head)] per eye (from `app.viewer.view_state.eye_cameras`,
        their K made for the size of `eye_viewports(mode, viewport)`) into `target` (a moderngl
        framebuffer, e.g. ctx.screen) inside `viewport`. scale < 1: each eye is drawn at that
        fraction of its viewport's width and height and scaled up linearly
        (`app.viewer.view_state.render_scale`: beyond about one screen pixel per MPI pixel more
        pixels show little new of the MPI, they mostly cost fill rate)."""
        ctx, mgl = self.ctx, self._moderngl
        viewports = eye_viewports(mode, viewport)
        if len(cameras) != len(viewports):
            raise ValueError(f"{mode} needs {len(viewports)} eye camera(s), got {len(cameras)}")
        if mode != "anaglyph" and scale >= 1.0:
            target.use()
            for (K, T), vp in zip(cameras, viewports):
                target.clear(0.0, 0.0, 0.0, 1.0, viewport=vp)  # the renderer blends over what is there
                renderer.draw(K, T, vp)
            return
        w, h = viewports[0][2:]
        s = min(1.0, scale)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        fbos = self._eye_targets(size, scaled=size != (w, h))
        for (K, T), fbo in zip(cameras, fbos):
            fbo.use()
            fbo.clear(0.0, 0.0, 0.0, 1.0)
            Ks = rig.scale_intrinsics(np.asarray(K, np.float64), size[0] / w, size[1] / h)
            renderer.draw(Ks, T, (0, 0, *size))
        target.use()
        if mode != "anaglyph":
            if self._blit is None:
                self._blit = TextureBlit(ctx)
            for fbo, vp in zip(fbos, viewports):
                self._blit.draw(fbo.color_attachments[0], vp)
            return
        ctx.viewport = viewport
        ctx.disable(mgl.BLEND)
        fbos[0].color_attachments[0].use(0)
        fbos[1].color_attachments[0].use(1)
        self._vao.render(mgl.TRIANGLES, vertices=3)

    def release(self) -> None:
        for fbo in self._eye_fbos:
            fbo.color_attachments[0].release()
            fbo.release()
        self._eye_fbos = []
        if self._blit is not None:
            self._blit.release()
        self._vao.release()
        self._program.release()
