"""The desktop viewer: a window, the GL MPI renderer, the stereo compositor and the panel, playing
an MPI clip at its fps.

`Viewer` is also the automation interface: `set(name, value)` moves a panel control the way a
user would, `step(capture=True)` draws one frame and returns what the window shows.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from app import panel as panel_ui
from app import view_state as vs
from app.stereo import StereoCompositor, eye_viewports
from app.window import DisplayError, Window
from model.clip import MPIClip

BACKGROUND = (0.08, 0.08, 0.09)  # window colour around and behind the view
MAX_FPS_WITHOUT_VSYNC = 60.0  # a virtual display has no vsync: don't spin the CPU
WHEEL_STEP = 0.95  # distance factor per mouse-wheel notch


class Viewer:
    """Plays `clip` in a window of `size` (w, h) window units. `source` names it in the panel."""

    def __init__(self, clip: MPIClip, source: str, size: tuple[int, int] = (1280, 720), vsync: bool = True,
                 stereo: str = "mono", show_panel: bool = True):
        from imgui_bundle import imgui

        from app.renderer import MPIRenderer

        if len(clip) == 0:
            raise ValueError(f"{source}: the clip has no frames")
        self._imgui = imgui
        self.clip, self.source = clip, source
        self.window = Window(f"imp-viewer: {source}", size, vsync=vsync)
        self._vsync = vsync
        if self.window.ctx.version_code < 430:
            version = self.window.ctx.version_code
            self.window.close()
            raise DisplayError(f"the MPI renderer needs OpenGL 4.3 (compute shaders); this display offers {version // 100}.{version % 100 // 10}")
        try:
            self.renderer = MPIRenderer(self.window.ctx)
            self.compositor = StereoCompositor(self.window.ctx)
        except Exception:
            self.window.close()
            raise
        self._T_ref = np.asarray(clip.T_cam_from_head[0], np.float32)
        self._home = vs.set_stereo(vs.initial_state(clip.K[0], self._T_ref, clip.size[0]), stereo)
        self.view = self._home
        self.playback = vs.Playback()
        self.show_panel = show_panel
        self._uploaded: int | None = None
        self._fps = 0.0
        self.frames_drawn = 0

    # -- automation ----------------------------------------------------------------------------
    def set(self, name: str, value) -> None:
        """Set one control as the panel would: the view settings of `app.view_state.SETTERS`
        (angles in degrees), `frame` (pauses and seeks), `play` (on/off) or `panel` (on/off)."""
        text = str(value)
        if name == "frame":
            self.playback = vs.seek(replace(self.playback, playing=False), int(text), len(self.clip), self.clip.fps)
        elif name == "play":
            self.playback = replace(self.playback, playing=vs.parse_bool(text))
        elif name == "panel":
            self.show_panel = vs.parse_bool(text)
        else:
            self.view = vs.set_value(self.view, name, text)

    def reset_view(self) -> None:
        """Back to the view of the MPI camera (what `reset view` in the panel does, stereo kept)."""
        self.view = replace(self._home, stereo=self.view.stereo, baseline=self.view.baseline)

    @property
    def reference_pose(self) -> np.ndarray:
        """T_cam_from_head (4, 4) of the clip's first frame: the pose the camera rig is anchored to."""
        return self._T_ref

    @property
    def view_viewport(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the 3D view in framebuffer pixels (GL origin bottom-left)."""
        fw, fh = self.window.framebuffer_size
        panel_px = int(round(panel_ui.PANEL_WIDTH * self.window.scale)) if self.show_panel else 0
        return (0, 0, max(fw - panel_px, 0), fh)

    def eye_size(self) -> tuple[int, int]:
        x, y, w, h = eye_viewports(self.view.stereo, self.view_viewport)[0]
        return (w, h)

    # -- frame loop ----------------------------------------------------------------------------
    def _handle_input(self) -> None:
        imgui = self._imgui
        io = imgui.get_io()
        if imgui.is_key_pressed(imgui.Key.escape) and not io.want_text_input:  # Esc first ends a text edit
            self.window.request_close()
        if not io.want_capture_mouse:
            if imgui.is_mouse_dragging(imgui.MouseButton_.left):
                self.view = vs.drag(self.view, io.mouse_delta.x, io.mouse_delta.y)
            if io.mouse_wheel:  # wheel up: step closer
                self.view = vs.set_distance(self.view, self.view.distance * WHEEL_STEP ** io.mouse_wheel)
        if not io.want_text_input:
            if imgui.is_key_pressed(imgui.Key.h, False):
                self.show_panel = not self.show_panel
            if imgui.is_key_pressed(imgui.Key.space, False) and not io.want_capture_keyboard:
                self.playback = replace(self.playback, playing=not self.playback.playing)

    def step(self, capture: bool = False) -> np.ndarray | None:
        """Draw one window frame. With `capture`, return the whole window as (h, w, 3) uint8."""
        imgui = self._imgui
        started = time.perf_counter()
        dt = self.window.new_frame()
        self._fps = 1.0 / dt if self._fps == 0.0 else 0.9 * self._fps + 0.1 / dt
        self._handle_input()
        self.playback = vs.advance(self.playback, dt, len(self.clip), self.clip.fps)
        if self.show_panel:
            info = panel_ui.PanelInfo(
                source=self.source, num_frames=len(self.clip), clip_fps=self.clip.fps,
                num_planes=self.clip.num_planes, mpi_size=self.clip.size, draw_fps=self._fps,
                eye_size=self.eye_size(),
            )
            result = panel_ui.draw_panel(self.view, self.playback, info, imgui.get_io().display_size.y)
            self.view, self.playback = result.view, result.playback
            if result.reset_view:
                self.reset_view()

        if self.playback.frame != self._uploaded:
            self.renderer.upload(self.clip.frame(self.playback.frame))
            self._uploaded = self.playback.frame
        ctx = self.window.ctx
        ctx.screen.use()
        ctx.screen.clear(*BACKGROUND, 1.0)
        viewport = self.view_viewport
        if min(self.eye_size()) >= 2:  # a minimised window has no pixels to draw into
            cameras = vs.eye_cameras(self.view, self._T_ref, self.clip.T_cam_from_head[self.playback.frame], self.eye_size())
            self.compositor.draw(self.renderer, cameras, self.view.stereo, viewport, ctx.screen)
        self.window.draw_ui()
        image = self.window.read() if capture else None
        self.window.swap()
        self.frames_drawn += 1
        if not self._vsync:
            time.sleep(max(0.0, 1.0 / MAX_FPS_WITHOUT_VSYNC - (time.perf_counter() - started)))
        return image

    def crop_view(self, image: np.ndarray) -> np.ndarray:
        """The 3D view's part of a `step(capture=True)` image (the panel cut off)."""
        x, y, w, h = self.view_viewport
        return image[image.shape[0] - y - h: image.shape[0] - y, x: x + w]

    @property
    def should_close(self) -> bool:
        return self.window.should_close

    def close(self) -> None:
        if getattr(self, "renderer", None) is not None:
            self.compositor.release()
            self.renderer.release()
            self.renderer = None
        self.window.close()

    def __enter__(self) -> "Viewer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
