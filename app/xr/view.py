"""The viewer in an OpenXR headset: each eye of app.xr.session.XRSession gets the MPI drawn with
its own pose and FoV, the head placed in front of the user's initial head pose; the desktop Viewer
window is the mirror whose distance slider also moves the placed head (its focal length acts on
the mirror only: in the headset the FoV is the display's).

The headset comes first. Every headset frame advances playback and draws both eyes; the mirror
window shows the eye images (a blit, not a second MPI rendering) and is drawn only when the time
left before the runtime's next frame covers what a mirror frame costs (measured), at most
MIRROR_MAX_FPS; when it never fits, its cost is measured again every MIRROR_REMEASURE s and the
window's events are handled without drawing it (closing it and Esc still end the session).

The XR renderer is a second MPIRenderer in the session's context: on the GLX path a second moderngl
wrapper of the mirror window's GL context, on the EGL path a context of its own, made current
(and the mirror's released) around every call that reaches the runtime or draws an eye
(app/xr/gl_switch.py says why).
"""
from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.xr import poses as xr_math
from app.xr.session import EyeView, FrameStats, XRSession

MIRROR_MAX_FPS = 15.0  # a spectator's view: more only takes CPU from generation
MIRROR_REMEASURE = 5.0  # s: a mirror that never fits is tried again this often (its cost re-measured)
MIRROR_COST_WINDOW = 8  # mirror frames the cost estimate looks back over
MIRROR_POLL_HZ = 4.0  # window events (close, Esc) are handled this often while the mirror is not drawn
EXIT_TIMEOUT = 5.0  # s to wait for the runtime to end a session we asked to end


@dataclass
class XRRun:
    """How a headset run ended and what it did. reason: "quit" (the window was closed / Esc),
    "stopped" (should_stop said so: frame budget, end of a live stream, a signal), "exiting" (the
    runtime ended the session), "loss" (session or instance lost: runtime or headset gone)."""

    reason: str
    graphics: str
    stats: FrameStats
    eye_size: tuple[int, int]
    mirror_frames: int = 0
    mirror_s: float = 0.0
    eye_images: list[np.ndarray] = field(default_factory=list)  # last frame's eyes (h, w, 3) uint8, when captured
    mirror_image: np.ndarray | None = None  # the mirror window (h, w, 3) uint8, when captured

    @property
    def summary(self) -> str:
        s = self.stats
        return (f"OpenXR ({self.graphics}, {self.eye_size[0]}x{self.eye_size[1]} per eye): {s.with_layer} of {s.asked} "
                f"frames the runtime asked for submitted with a layer ({100.0 * s.layer_ratio:.1f} %), "
                f"{s.ms_per_frame:.1f} ms per headset frame, mirror drawn {self.mirror_frames} times")


class XRViewer:
    """Drives `session` (started here) from `viewer` (app.viewer.viewer.Viewer, the desktop mirror)."""

    def __init__(self, viewer, session: XRSession, mirror: bool = True, mirror_max_fps: float = MIRROR_MAX_FPS):
        from app.gl.renderer import MPIRenderer

        self.viewer = viewer
        self.session = session
        self.mirror = mirror
        self.mirror_max_fps = mirror_max_fps
        self.ctx = session.start()
        try:
            self.renderer = MPIRenderer(self.ctx)
        finally:
            self._to_mirror()
        self._uploaded = None
        self.eyes_drawn = 0
        self.mirror_frames = 0
        self.mirror_s = 0.0
        self._mirror_cost = 0.0  # s, running estimate of one mirror frame
        self._scene_frames = 0
        self._recent_costs: deque[float] = deque(maxlen=MIRROR_COST_WINDOW)
        self._last_mirror = 0.0
        self._last_poll = 0.0
        self._blit = None
        self._mirror_textures: dict = {}  # GLX: (eye, image index) -> the swapchain image in the window's context
        self._exit_asked_at: float | None = None

    # -- GL contexts ----------------------------------------------------------------------------
    def _to_mirror(self) -> None:
        """After set-up on the EGL path: release its context, the mirror window's is made current."""
        if self.session.egl is not None:
            import glfw

            self.session.egl.release()
            glfw.make_context_current(self.viewer.window.handle)

    def xr_gl(self):
        """Context manager around anything that draws an eye or reaches the runtime."""
        if self.session.egl is None:
            return contextlib.nullcontext()  # GLX: the mirror window's context is the session's
        from app.xr.gl_switch import egl_current

        return egl_current(self.session.egl, restore_window=self.viewer.window.handle)

    # -- placement ------------------------------------------------------------------------------
    def T_space_from_head(self) -> np.ndarray:
        """(4, 4): the shown frame's head in the XR reference space. The reference frame's head is
        placed `viewer.view.distance` in front of the initial head pose; later frames move from it
        as the head moves in the MPI camera."""
        v = self.viewer
        T_ref = np.asarray(v.reference_pose, np.float64)
        placed = xr_math.place_head_in_front(self.session.initial_view, T_ref, v.view.distance)
        return placed @ np.linalg.inv(T_ref) @ np.asarray(v.frame.T_cam_from_head, np.float64)

    def _draw(self, eye: EyeView, fbo) -> None:
        frame = self.viewer.frame
        fbo.clear(0.0, 0.0, 0.0, 1.0)
        if frame is None:
            return  # nothing generated yet: black, the mirror says "generating..."
        if self._uploaded is not frame:
            self.renderer.upload(frame)
            self._uploaded = frame
        T_eye_from_head = eye.T_eye_from_space @ self.T_space_from_head()
        self.renderer.draw(eye.K, T_eye_from_head, (0, 0, eye.size[0], eye.size[1]))
        self.eyes_drawn += 1

    # -- the loop -------------------------------------------------------------------------------
    def request_exit(self) -> None:
        if self._exit_asked_at is None:
            self._exit_asked_at = time.perf_counter()
            with self.xr_gl():
                self.session.request_exit()

    def frame(self, draw_mirror: bool | None = None) -> bool:
        """One headset frame (and the mirror when there is time, or when `draw_mirror` says so);
        False once the session has ended."""
        if self.viewer.should_close:
            self.request_exit()
        if self._exit_asked_at is not None and time.perf_counter() - self._exit_asked_at > EXIT_TIMEOUT:
            return False  # the runtime never ended it: close it ourselves
        if self.viewer.recentre_requested:
            self.viewer.recentre_requested = False
            self.session.recentre()
        self.viewer.advance()
        with self.xr_gl():
            running = self.session.frame(self._draw)
        if not running:
            return False
        if draw_mirror if draw_mirror is not None else self._mirror_due():
            self.draw_mirror()
        return True

    def _mirror_due(self) -> bool:
        now = time.perf_counter()
        since = now - self._last_mirror
        if self.mirror and since >= 1.0 / self.mirror_max_fps:
            wake, period = self.session.last_wake, self.session.stats.period_s
            if wake is None or period <= 0.0 or not self.session.running:
                return True  # the runtime is not asking for frames: all the time is the mirror's
            # the next xrWaitFrame returns about one period after the last one did
            if self._mirror_cost < 0.8 * (wake + period - now):
                return True
            if since > MIRROR_REMEASURE:
                return True  # the estimate may be stale (a slow moment): measure again, rarely
        if now - self._last_poll > 1.0 / MIRROR_POLL_HZ:
            # not drawn: the window still answers (closing it, Esc) without costing a frame
            self._last_poll = now
            window = self.viewer.window
            window.poll_events()
            if window.key_down("escape"):
                window.request_close()
        return False

    def draw_mirror(self, capture: bool = False) -> np.ndarray | None:
        """Draw the mirror window (the eye images beside the panel); with `capture`, return it."""
        started = time.perf_counter()
        scene = self._mirror_scene()
        image = self.viewer.step(capture=capture, scene=scene, advance=False)
        cost = time.perf_counter() - started
        if scene is not None:  # the estimate is of the eye blit (the first one also builds textures)
            self._scene_frames += 1
            if self._scene_frames >= 2:
                # the slowest of the last few: on a busy CPU a mirror frame varies by 2x, and one that
                # overruns costs the headset a frame
                self._recent_costs.append(cost)
                self._mirror_cost = max(self._recent_costs)
        self.mirror_frames += 1
        self.mirror_s += cost
        self._last_mirror = time.perf_counter()
        return image

    def _mirror_scene(self) -> Callable | None:
        """A callable drawing both eyes side by side into a viewport of the mirror window."""
        from app.gl import blit

        session = self.session
        if any(i is None for i in session._last_image) or not session._last_image:
            return None  # nothing submitted yet: the mirror's own view
        window_ctx = self.viewer.window.ctx
        if self._blit is None:
            self._blit = blit.TextureBlit(window_ctx)
        if session.egl is None:
            textures, transfer, flip = [], blit.ENCODE, False  # sampling an sRGB image decodes it; a linear one is linear
            for eye, index in enumerate(session._last_image):
                key = (eye, index)
                if key not in self._mirror_textures:
                    glo = int(session.images[eye][index].image)
                    self._mirror_textures[key] = window_ctx.external_texture(glo, session.sizes[eye], 4, 0, "f1")
                textures.append(self._mirror_textures[key])
        else:
            # the EGL context shares nothing with the window's: through the CPU (only when drawn)
            with self.xr_gl():
                images = [session.read_eye(eye) for eye in range(len(session.sizes))]
            window_ctx = self.viewer.window.ctx
            window_ctx.screen.use()
            textures, transfer, flip = [], blit.COPY, True
            for eye, image in enumerate(images):
                key = ("cpu", eye)
                tex = self._mirror_textures.get(key)
                if tex is None or tex.size != (image.shape[1], image.shape[0]):
                    tex = window_ctx.texture((image.shape[1], image.shape[0]), 3)
                    self._mirror_textures[key] = tex
                tex.write(np.ascontiguousarray(image).tobytes())
                textures.append(tex)

        def draw(ctx, viewport) -> None:
            x, y, w, h = viewport
            halves = [(x, y, w // 2, h), (x + w // 2, y, w - w // 2, h)]
            for tex, half in zip(textures, halves):
                self._blit.draw(tex, blit.letterbox(tex.size, half), transfer, flip_y=flip)

        return draw

    def capture_eyes(self) -> list[np.ndarray]:
        with self.xr_gl():
            return [img for img in (self.session.read_eye(e) for e in range(len(self.session.sizes))) if img is not None]

    def close(self) -> None:
        for tex in self._mirror_textures.values():
            tex.release()
        self._mirror_textures = {}
        if self._blit is not None:
            self._blit.release()
            self._blit = None
        with self.xr_gl():
            self.renderer.release()
            if self.session.window is self.viewer.window.handle:
                self.session.window = None  # the mirror's window: the Viewer closes it, not the session
            self.session.close()


def run_xr(viewer, xr_module=None, graphics: str = "auto", max_frames: int | None = None,
           should_stop: Callable[[], bool] | None = None, capture: bool = False, mirror: bool = True,
           on_frame: Callable[[XRViewer], None] | None = None, start_timeout: float | None = None) -> XRRun:
    """Run the headset loop until the session ends: the window is closed (Esc), `should_stop()`
    says so or `max_frames` headset frames were submitted (then the session is ended cleanly), or
    the runtime ends or loses it. Raises app.xr.session.XRUnavailable before opening anything when
    there is no runtime / headset. With `capture`, the last eye images and the mirror window are
    kept in the result (taken before the session ends). `start_timeout`: raise XRUnavailable when
    the runtime has not asked for a frame that many seconds after the session was created (an
    automated run must end; a user may be putting the headset on)."""
    session = XRSession(xr_module, graphics=graphics, make_window=lambda: viewer.window.handle)
    try:
        xrv = XRViewer(viewer, session, mirror=mirror)
    except BaseException:  # e.g. a runtime without a headset: undo what was created, keep the window
        if session.window is viewer.window.handle:
            session.window = None
        try:
            if session.egl is not None:
                from app.xr.gl_switch import egl_current

                with egl_current(session.egl, restore_window=viewer.window.handle):
                    session.close()
            else:
                session.close()
        finally:
            import glfw

            glfw.make_context_current(viewer.window.handle)
        raise
    run = XRRun(reason="", graphics=session.graphics, stats=session.stats, eye_size=session.sizes[0])
    created = time.perf_counter()
    try:
        stopping = False
        while True:
            if start_timeout is not None and not session.frames_submitted and time.perf_counter() - created > start_timeout:
                from app.xr.session import XRUnavailable

                raise XRUnavailable(f"OpenXR: the runtime did not start the session within {start_timeout:g} s")
            if not stopping and ((max_frames and session.frames_submitted >= max_frames) or (should_stop is not None and should_stop())
                                 or viewer.should_close):
                stopping = True
                run.reason = "quit" if viewer.should_close else "stopped"
                if capture:
                    run.eye_images = xrv.capture_eyes()
                    run.mirror_image = xrv.draw_mirror(capture=True)
                xrv.request_exit()
            if not xrv.frame():
                break
            if on_frame is not None:
                on_frame(xrv)
        if not stopping:
            run.reason = session.end_reason if session.end_reason in ("exiting", "loss") else ("quit" if viewer.should_close else "exiting")
    finally:
        run.mirror_frames, run.mirror_s = xrv.mirror_frames, xrv.mirror_s
        xrv.close()
    return run
