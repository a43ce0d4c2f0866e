"""The desktop viewer: a window, the GL MPI renderer, the stereo compositor and the panel, playing
an MPI clip at its fps, or live: the frames a generation worker samples into a ring buffer
(app/live/session.py), paced at the driving source's fps, with a buffer gauge, "generating..." while the
buffer is dry, expression / head-pose sliders for parametric driving and saving what was shown.

`Viewer` is also the automation interface: `set(name, value)` moves a panel control the way a
user would, `step(capture=True)` draws one frame and returns what the window shows.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from app.viewer import panel as panel_ui
from app.viewer import view_state as vs
from app.gl.stereo import StereoCompositor, eye_viewports
from app.viewer.window import DisplayError, Window
from model.formats.clip import MPIClip, MPIFrame

BACKGROUND = (0.08, 0.08, 0.09)  # window colour around and behind the view
MAX_FPS_WITHOUT_VSYNC = 60.0  # a virtual display has no vsync: don't spin the CPU
WHEEL_STEP = 0.95  # distance factor per mouse-wheel notch


class Viewer:
    """Plays `clip` (or, with `live` (app.live.session.LiveSession), what it generates; then `clip` may be
    None) in a window of `size` (w, h) window units. `source` names it in the panel. `sliders`:
    show the expression / head-pose sliders of a parametric driving source."""

    def __init__(self, clip: MPIClip | None, source: str, size: tuple[int, int] = (1280, 720), vsync: bool = True,
                 stereo: str = "mono", show_panel: bool = True, live=None, sliders: bool = False,
                 fullscreen: bool = False, max_fps: float | None = MAX_FPS_WITHOUT_VSYNC):
        from imgui_bundle import imgui

        from app.gl.renderer import MPIRenderer
        from model.data.driving import DrivingParams
        from model.runtime import single_threaded_blas

        single_threaded_blas()  # the render loop's process: spinning BLAS threads took a core a frame
        if live is None and (clip is None or len(clip) == 0):
            raise ValueError(f"{source}: the clip has no frames")
        self._imgui = imgui
        self.clip, self.source, self.live = clip, source, live
        self.params = DrivingParams() if sliders else None
        self.animate = True
        self.window = Window(f"imp-viewer: {source}", size, vsync=vsync, fullscreen=fullscreen)
        self._vsync = vsync
        self._max_fps = max_fps  # without vsync: cap the loop (None: draw flat out, for benchmarks)
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
        self.frame: MPIFrame | None = None  # what is shown
        self._uploaded_frame: MPIFrame | None = None  # what the window's renderer holds (uploaded when drawn)
        self._shown_index: int | None = None  # clip playback: the index of `frame`
        self._advanced_at: float | None = None  # perf_counter() of the last advance()
        self.recentre_requested = False  # R: the headset re-centres the head (app/xr/view.py)
        self._T_ref = None  # live: the crop camera's view until the first generated frame anchors the rig
        self._home = vs.set_stereo(vs.ViewState(), stereo)
        if clip is not None and live is None:
            first = _clip_frame(clip, 0, wait=FIRST_FRAME_WAIT)
            if first is None:
                raise ValueError(f"{source}: its first frame did not arrive within {FIRST_FRAME_WAIT:g} s")
            self._anchor(first)
        self.view = self._home
        self.playback = vs.Playback()
        self.show_panel = show_panel
        self._fps = 0.0
        self.frames_drawn = 0
        self.upload_seconds = 0.0  # spent sending MPI frames to the GPU, over `uploads` frames
        self.uploads = 0
        self.warnings: list[str] = []

    def _anchor(self, frame: MPIFrame) -> None:
        """Anchor the camera rig to `frame`'s head pose (the clip's / the live stream's first frame)."""
        self._T_ref = np.asarray(frame.T_cam_from_head, np.float32)
        home = vs.initial_state(frame.K, self._T_ref, frame.size[0])
        self._home = replace(home, stereo=self._home.stereo)

    # -- automation ----------------------------------------------------------------------------
    def set(self, name: str, value) -> None:
        """Set one control as the panel would: the view settings of `app.viewer.view_state.SETTERS`
        (angles in degrees), `frame` (pauses and seeks), `play` (on/off) or `panel` (on/off)."""
        text = str(value)
        if name == "frame":
            if self.clip is None:
                raise ValueError("frame: only a clip can be seeked (live generation plays as it comes)")
            self.playback = vs.seek(replace(self.playback, playing=False), int(text), len(self.clip), self.clip.fps)
        elif name == "play":
            self.playback = replace(self.playback, playing=vs.parse_bool(text))
        elif name == "panel":
            self.show_panel = vs.parse_bool(text)
        elif self.params is not None and name == "animate":
            self.animate = vs.parse_bool(text)
            self._push_params()
        elif self.params is not None and hasattr(self.params, name):
            self.params = replace(self.params, **{name: float(text)})
            self._push_params()
        else:
            self.view = vs.set_value(self.view, name, text)

    def _push_params(self) -> None:
        if self.live is not None and self.params is not None:
            self.live.set_params(self.params, self.animate)

    def reset_view(self) -> None:
        """Back to the view of the MPI camera (what `reset view` in the panel does, stereo kept)."""
        self.view = replace(self._home, stereo=self.view.stereo, baseline=self.view.baseline)

    @property
    def status_lines(self) -> list[str]:
        """The live status the panel shows (buffer, "generating...", errors, saving); [] for a clip."""
        return self.live.state.lines if self.live is not None else []

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
            if imgui.is_key_pressed(imgui.Key.r, False):
                self.recentre_requested = True  # the headset re-centres; on the desktop: back to the home view
                self.reset_view()
            if imgui.is_key_pressed(imgui.Key.space, False) and not io.want_capture_keyboard:
                self.playback = replace(self.playback, playing=not self.playback.playing)

    def advance(self) -> None:
        """Move playback on by the wall time since the last call: the next generated frame when one
        is due, or the clip's frame for now. The headset loop calls it once per headset frame; `step`
        calls it unless told not to."""
        now = time.perf_counter()
        dt = 0.0 if self._advanced_at is None else now - self._advanced_at
        self._advanced_at = now
        self._next_frame(dt)

    def step(self, capture: bool = False, scene=None, advance: bool = True) -> np.ndarray | None:
        """Draw one window frame. With `capture`, return the whole window as (h, w, 3) uint8.
        `scene(ctx, viewport)`, when given, draws the view instead of the MPI (the headset's mirror
        shows the eye images); `advance=False` leaves playback where it is (the headset loop
        advances it)."""
        imgui = self._imgui
        started = time.perf_counter()
        dt = self.window.new_frame()
        self._fps = 1.0 / dt if self._fps == 0.0 else 0.9 * self._fps + 0.1 / dt
        self._handle_input()
        if advance:
            self.advance()
        if self.show_panel:
            self._panel()
        elif self.live is not None and self.live.state.waiting:
            self._overlay("generating...")

        ctx = self.window.ctx
        ctx.screen.use()
        ctx.screen.clear(*BACKGROUND, 1.0)
        viewport = self.view_viewport
        self.warnings = []
        if scene is not None and min(viewport[2:]) >= 2:
            scene(ctx, viewport)
            ctx.screen.use()
            ctx.viewport = (0, 0, *self.window.framebuffer_size)
        elif self.frame is not None and min(self.eye_size()) >= 2:  # a minimised window has no pixels to draw into
            if self._uploaded_frame is not self.frame:
                started = time.perf_counter()
                self.renderer.upload(self.frame)
                self.upload_seconds += time.perf_counter() - started
                self.uploads += 1
                self._uploaded_frame = self.frame
            cameras = self.eye_cameras(self.eye_size())
            self.warnings = vs.view_warnings(self.view, cameras, self.eye_size(), self.frame.K, self.frame.T_cam_from_head,
                                             self.frame.far, self.frame.size)
            scale = vs.render_scale(cameras, self.frame.K, self.frame.T_cam_from_head)
            self.compositor.draw(self.renderer, cameras, self.view.stereo, viewport, ctx.screen, scale)
        self.window.draw_ui()
        image = self.window.read() if capture else None
        self.window.swap()
        self.frames_drawn += 1
        if not self._vsync and self._max_fps:
            time.sleep(max(0.0, 1.0 / self._max_fps - (time.perf_counter() - started)))
        return image

    def eye_cameras(self, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(K, T_view_from_head) per eye of the shown frame for eye viewports of `size` (w, h)."""
        return vs.eye_cameras(self.view, self._T_ref, self.frame.T_cam_from_head, size)

    def _next_frame(self, dt: float) -> None:
        """Advance playback; `frame` becomes the frame to show (uploaded when drawn)."""
        if self.live is not None:
            frame = self.live.poll() if self.playback.playing else None
            if frame is not None:
                if self._T_ref is None:
                    self._anchor(frame)
                    self.view = replace(self._home, stereo=self.view.stereo, baseline=self.view.baseline)
                self.frame = frame
            return
        self.playback = vs.advance(self.playback, dt, len(self.clip), self.clip.fps)
        if self.playback.frame != self._shown_index:
            frame = _clip_frame(self.clip, self.playback.frame)
            if frame is not None:  # a streamed clip that has not read it yet: keep the last one, ask again
                self.frame = frame
                self._shown_index = self.playback.frame

    def _panel(self) -> None:
        imgui = self._imgui
        frame = self.frame
        live = self.live.state if self.live is not None else None
        info = panel_ui.PanelInfo(
            source=self.source,
            num_frames=len(self.clip) if live is None else (live.frames_shown if live else 0),
            clip_fps=self.clip.fps if live is None else (self.live.worker.fps or 0.0),
            num_planes=frame.num_planes if frame is not None else 0,
            mpi_size=frame.size if frame is not None else (0, 0), draw_fps=self._fps,
            eye_size=self.eye_size(), warnings=tuple(self.warnings), live=live, params=self.params,
            animate=self.animate, saving=self.live.saving if self.live is not None else False,
        )
        playback = self.playback if live is None else replace(self.playback, frame=0)
        result = panel_ui.draw_panel(self.view, playback, info, imgui.get_io().display_size.y)
        self.view = result.view
        self.playback = result.playback if live is None else replace(self.playback, playing=result.playback.playing)
        if result.reset_view:
            self.reset_view()
        if self.params is not None and (result.params != self.params or result.animate != self.animate):
            self.params, self.animate = result.params, result.animate
            self._push_params()
        if result.toggle_save and self.live is not None:
            if self.live.saving:
                self.live.stop_saving()
            else:
                self.live.start_saving(default_save_path())

    def _overlay(self, text: str) -> None:
        """Text in the middle of the view (the panel is hidden)."""
        imgui = self._imgui
        x, _, w, _ = self.view_viewport
        scale = self.window.scale
        pos = imgui.ImVec2((x + w / 2) / scale - 40.0, imgui.get_io().display_size.y / 2)
        imgui.get_foreground_draw_list().add_text(pos, 0xFFFFFFFF, text)

    def crop_view(self, image: np.ndarray) -> np.ndarray:
        """The 3D view's part of a `step(capture=True)` image (the panel cut off)."""
        x, y, w, h = self.view_viewport
        return image[image.shape[0] - y - h: image.shape[0] - y, x: x + w]

    @property
    def should_close(self) -> bool:
        return self.window.should_close

    def close(self) -> None:
        if self.live is not None:
            self.live.close()  # stop the worker (joined) and finalise a save before the GL context goes
        close_clip = getattr(self.clip, "close", None)  # a streamed clip stops its reader thread
        if close_clip is not None:
            close_clip()
        if getattr(self, "renderer", None) is not None:
            self.compositor.release()
            self.renderer.release()
            self.renderer = None
        self.window.close()

    def __enter__(self) -> "Viewer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


FIRST_FRAME_WAIT = 30.0  # s: a streamed clip's first frame (one decode; more means something is wrong)


def _clip_frame(clip, index: int, wait: float = 0.0) -> MPIFrame | None:
    """Frame `index` of an in-memory MPIClip, or of a streamed clip (app.live.clip_stream.ClipStream)
    if it has arrived (waiting up to `wait` s)."""
    if isinstance(clip, MPIClip):
        return clip.frame(index)
    return clip.frame(index, wait=wait)


def default_save_path() -> "Path":
    """Where the panel's save button writes: imp-viewer-YYYYmmdd-HHMMSS.mpi in the working folder."""
    from pathlib import Path

    return Path.cwd() / time.strftime("imp-viewer-%Y%m%d-%H%M%S.mpi")
