"""A desktop window: GLFW (OpenGL 3.3 core), a moderngl context on it and Dear ImGui.

ImGui draws through imgui-bundle's native OpenGL3 backend (`imgui.backends.opengl3_*`), and this
module feeds it GLFW's input events itself rather than using the native GLFW platform backend: that
backend works only if the `glfw` Python package loaded imgui-bundle's own libglfw, which depends on
import order (any module importing `glfw` before `imgui_bundle` breaks it); the callbacks below work
with either library.
"""
from __future__ import annotations

import os

import numpy as np

# Mesa's CPU rasteriser (llvmpipe: what draws without a GPU) on the drawing thread alone, unless the
# user says otherwise. Its helper threads took the second of 2 cores from the generation worker:
# `imp bench viewer` generated 20 MPI frames/s with them and 26-27 without, while the window, drawing
# flat out, still made 90 stereo frames/s (imp-viewer caps it at 60). GPU drivers ignore the variable.
LLVMPIPE_THREADS = "0"


class DisplayError(RuntimeError):
    """No window could be opened (no X server / Wayland compositor, or no OpenGL 3.3)."""


def _key_map(glfw, imgui) -> dict[int, object]:
    keys = {getattr(glfw, f"KEY_{c}"): getattr(imgui.Key, c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    keys.update({getattr(glfw, f"KEY_{d}"): getattr(imgui.Key, f"_{d}") for d in range(10)})
    named = {
        "TAB": "tab", "BACKSPACE": "backspace", "ENTER": "enter", "ESCAPE": "escape", "DELETE": "delete",
        "SPACE": "space", "LEFT": "left_arrow", "RIGHT": "right_arrow", "UP": "up_arrow", "DOWN": "down_arrow",
        "HOME": "home", "END": "end", "PAGE_UP": "page_up", "PAGE_DOWN": "page_down", "KP_ENTER": "keypad_enter",
        "MINUS": "minus", "PERIOD": "period", "F1": "f1",
        "LEFT_CONTROL": "left_ctrl", "RIGHT_CONTROL": "right_ctrl", "LEFT_SHIFT": "left_shift",
        "RIGHT_SHIFT": "right_shift", "LEFT_ALT": "left_alt", "RIGHT_ALT": "right_alt",
        "LEFT_SUPER": "left_super", "RIGHT_SUPER": "right_super",
    }
    keys.update({getattr(glfw, f"KEY_{g}"): getattr(imgui.Key, i) for g, i in named.items()})
    return keys


class _EGLCurrent:
    """The EGL context current on this thread (e.g. a headless moderngl context), released while a
    GLFW (GLX) window exists and made current again when the last one closes: Mesa answers a
    glXMakeCurrent while an EGL context is current with an X error (BadAccess) that ends the process."""

    EGL_DRAW, EGL_READ = 0x3059, 0x305A

    def __init__(self):
        import ctypes

        self._saved = None
        try:
            egl = ctypes.CDLL("libEGL.so.1")
        except OSError:
            self._egl = None
            return
        for name in ("eglGetCurrentDisplay", "eglGetCurrentContext", "eglGetCurrentSurface"):
            getattr(egl, name).restype = ctypes.c_void_p
        egl.eglGetCurrentSurface.argtypes = [ctypes.c_int]
        egl.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
        self._egl = egl

    def release(self) -> None:
        egl = self._egl
        if egl is None or not egl.eglGetCurrentContext():
            return
        display = egl.eglGetCurrentDisplay()
        self._saved = (display, egl.eglGetCurrentSurface(self.EGL_DRAW), egl.eglGetCurrentSurface(self.EGL_READ),
                       egl.eglGetCurrentContext())
        egl.eglMakeCurrent(display, None, None, None)

    def restore(self) -> None:
        if self._saved is not None:
            self._egl.eglMakeCurrent(*self._saved)
            self._saved = None


class Window:
    """One GLFW window with `ctx` (moderngl) and an ImGui context. Per frame:
    `new_frame()`, build the UI with `imgui.*`, draw the scene into `ctx.screen`, `draw_ui()`,
    optionally `read()`, then `swap()`. `close()` (or the context manager) releases everything.
    Several may be open at once (each `new_frame()` makes its own GL and ImGui contexts current)."""

    _open = 0  # GLFW is process-wide: terminate it only when the last window closes
    _egl_current: _EGLCurrent | None = None  # an EGL context set aside while windows are open

    def __init__(self, title: str, size: tuple[int, int] = (1280, 720), vsync: bool = True, fullscreen: bool = False):
        from imgui_bundle import imgui  # first: it points the glfw package at its own libglfw

        import glfw
        import moderngl

        self._glfw, self._imgui = glfw, imgui
        self._closed = True
        errors: list[str] = []
        glfw.set_error_callback(lambda code, text: errors.append(text.decode() if isinstance(text, bytes) else str(text)))
        os.environ.setdefault("LP_NUM_THREADS", LLVMPIPE_THREADS)  # read when Mesa opens this display
        if Window._open == 0:
            Window._egl_current = _EGLCurrent()
            Window._egl_current.release()
        if not glfw.init():
            self._restore_egl()
            raise DisplayError(f"GLFW could not connect to a display: {'; '.join(errors) or 'unknown error'}")
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        monitor = glfw.get_primary_monitor() if fullscreen else None
        if monitor:  # full screen at the monitor's own mode (phone VR viewers: side by side fills it)
            mode = glfw.get_video_mode(monitor)
            size = (mode.size.width, mode.size.height)
        self.handle = glfw.create_window(int(size[0]), int(size[1]), title, monitor or None, None)
        if not self.handle:
            if Window._open == 0:
                glfw.terminate()
                self._restore_egl()
            raise DisplayError(f"could not open an OpenGL 3.3 core window: {'; '.join(errors) or 'unknown error'}")
        glfw.make_context_current(self.handle)
        glfw.swap_interval(1 if vsync else 0)
        try:
            self.ctx = moderngl.create_context(require=330)
        except Exception as exc:
            glfw.destroy_window(self.handle)
            if Window._open == 0:
                glfw.terminate()
                self._restore_egl()
            raise DisplayError(f"no usable OpenGL 3.3 context on this display: {exc}") from None

        self._imgui_ctx = imgui.create_context()
        imgui.set_current_context(self._imgui_ctx)
        io = imgui.get_io()
        io.set_ini_filename("")  # never write imgui.ini into the user's working directory
        imgui.style_colors_dark()
        imgui.backends.opengl3_init("#version 330 core")
        self._closed = False
        Window._open += 1
        self._keys = _key_map(glfw, imgui)
        self._last_time = glfw.get_time()
        self._install_callbacks()

    # -- input -------------------------------------------------------------------------------
    def _install_callbacks(self) -> None:
        glfw, imgui = self._glfw, self._imgui
        io = imgui.get_io()
        mods = {
            imgui.Key.left_ctrl: imgui.Key.mod_ctrl, imgui.Key.right_ctrl: imgui.Key.mod_ctrl,
            imgui.Key.left_shift: imgui.Key.mod_shift, imgui.Key.right_shift: imgui.Key.mod_shift,
            imgui.Key.left_alt: imgui.Key.mod_alt, imgui.Key.right_alt: imgui.Key.mod_alt,
            imgui.Key.left_super: imgui.Key.mod_super, imgui.Key.right_super: imgui.Key.mod_super,
        }

        def on_key(_win, key, _scancode, action, _mods):
            if key in self._keys and action != glfw.REPEAT:
                down = action == glfw.PRESS
                io.add_key_event(self._keys[key], down)
                if self._keys[key] in mods:
                    io.add_key_event(mods[self._keys[key]], down)

        def on_char(_win, char):
            if 0 < char < 0x10000:
                io.add_input_character(char)

        # The callbacks are kept on self: pyGLFW only holds weak references to them.
        self._callbacks = (
            glfw.set_key_callback(self.handle, on_key),
            glfw.set_char_callback(self.handle, on_char),
            glfw.set_cursor_pos_callback(self.handle, lambda _w, x, y: io.add_mouse_pos_event(x, y)),
            glfw.set_mouse_button_callback(self.handle, lambda _w, b, a, _m: b < 5 and io.add_mouse_button_event(b, a == glfw.PRESS)),
            glfw.set_scroll_callback(self.handle, lambda _w, dx, dy: io.add_mouse_wheel_event(dx, dy)),
            glfw.set_window_focus_callback(self.handle, lambda _w, f: io.add_focus_event(bool(f))),
        )
        self._handlers = (on_key, on_char)

    def imgui_io(self):
        """This window's ImGui IO (made current): where input events go, e.g. from a test."""
        self._imgui.set_current_context(self._imgui_ctx)
        return self._imgui.get_io()

    # -- frame -------------------------------------------------------------------------------
    @property
    def framebuffer_size(self) -> tuple[int, int]:
        return tuple(self._glfw.get_framebuffer_size(self.handle))

    @property
    def scale(self) -> float:
        """Framebuffer pixels per window (ImGui) unit: 2 on a HiDPI screen."""
        w, _ = self._glfw.get_window_size(self.handle)
        return self.framebuffer_size[0] / max(w, 1)

    @property
    def should_close(self) -> bool:
        return bool(self._glfw.window_should_close(self.handle))

    def request_close(self) -> None:
        self._glfw.set_window_should_close(self.handle, True)

    def key_down(self, name: str) -> bool:
        """Whether the key GLFW calls KEY_<NAME> (e.g. "escape") is held now."""
        glfw = self._glfw
        return glfw.get_key(self.handle, getattr(glfw, f"KEY_{name.upper()}")) == glfw.PRESS

    def poll_events(self) -> None:
        """Handle pending window events without drawing (closing the window, key presses queued for
        the next frame): for a loop that draws this window only now and then."""
        self._glfw.poll_events()

    def new_frame(self) -> float:
        """Poll events and start an ImGui frame; returns the seconds since the previous frame."""
        glfw, imgui = self._glfw, self._imgui
        glfw.make_context_current(self.handle)
        imgui.set_current_context(self._imgui_ctx)
        glfw.poll_events()
        io = imgui.get_io()
        w, h = glfw.get_window_size(self.handle)
        fw, fh = self.framebuffer_size
        io.display_size = imgui.ImVec2(w, h)
        if w > 0 and h > 0:
            io.display_framebuffer_scale = imgui.ImVec2(fw / w, fh / h)
        now = glfw.get_time()
        dt = max(now - self._last_time, 1e-4)
        self._last_time = now
        io.delta_time = dt
        imgui.backends.opengl3_new_frame()
        imgui.new_frame()
        return dt

    def draw_ui(self) -> None:
        """Finish the ImGui frame and draw it over the framebuffer."""
        imgui = self._imgui
        imgui.render()
        self.ctx.screen.use()
        imgui.backends.opengl3_render_draw_data(imgui.get_draw_data())

    def read(self, viewport: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The back buffer (what the next `swap()` shows) as (h, w, 3) uint8, top row first.
        viewport (x, y, w, h) in GL framebuffer pixels (origin bottom-left); default all."""
        fw, fh = self.framebuffer_size
        viewport = viewport or (0, 0, fw, fh)
        data = self.ctx.screen.read(viewport=viewport, components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(viewport[3], viewport[2], 3)[::-1].copy()

    def swap(self) -> None:
        self._glfw.swap_buffers(self.handle)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        imgui, glfw = self._imgui, self._glfw
        glfw.make_context_current(self.handle)
        imgui.set_current_context(self._imgui_ctx)
        imgui.backends.opengl3_shutdown()
        imgui.destroy_context(self._imgui_ctx)
        self.ctx.release()
        glfw.destroy_window(self.handle)
        Window._open -= 1
        if Window._open == 0:
            glfw.terminate()
            self._restore_egl()

    @staticmethod
    def _restore_egl() -> None:
        if Window._open == 0 and Window._egl_current is not None:
            Window._egl_current.restore()
            Window._egl_current = None

    def __enter__(self) -> "Window":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
