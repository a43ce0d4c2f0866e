"""Two GL contexts on one thread: the EGL context of the OpenXR EGL path and a GLX one (the desktop
mirror window).

libglvnd will not make an EGL context current while a GLX context is current on the thread (the
runtime then fails with "no current EGL context"), and Mesa answers a GLX make-current over a
current EGL context with an X error (BadAccess) that ends the process. So every switch releases
the current context of one API before making the other's current. moderngl's own `with ctx:` does
not: it restores "the previous EGL context", which after a GLX context is none at all.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

EGL_DRAW, EGL_READ = 0x3059, 0x305A


def _lib(*names: str):
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


class _GLX:
    def __init__(self):
        lib = _lib("libGLX.so.0", "libGL.so.1")
        self.lib = lib
        if lib is None:
            return
        lib.glXGetCurrentContext.restype = ctypes.c_void_p
        lib.glXGetCurrentDisplay.restype = ctypes.c_void_p
        lib.glXGetCurrentDrawable.restype = ctypes.c_ulong
        lib.glXMakeCurrent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
        lib.glXMakeCurrent.restype = ctypes.c_int

    def release(self) -> bool:
        """Release the current GLX context, if any; True if there was one."""
        lib = self.lib
        if lib is None or not lib.glXGetCurrentContext():
            return False
        lib.glXMakeCurrent(lib.glXGetCurrentDisplay(), 0, None)
        return True


class EGLContext:
    """The EGL context current on this thread when created (moderngl's standalone one), which can
    then be made current and released around GLX work."""

    def __init__(self):
        egl = _lib("libEGL.so.1")
        if egl is None:
            raise RuntimeError("libEGL.so.1 is not installed")
        for name in ("eglGetCurrentDisplay", "eglGetCurrentContext", "eglGetCurrentSurface"):
            getattr(egl, name).restype = ctypes.c_void_p
        egl.eglGetCurrentSurface.argtypes = [ctypes.c_int]
        egl.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
        egl.eglMakeCurrent.restype = ctypes.c_uint
        self._egl = egl
        self.context = egl.eglGetCurrentContext()
        if not self.context:
            raise RuntimeError("no current EGL context")
        self.display = egl.eglGetCurrentDisplay()
        self.draw = egl.eglGetCurrentSurface(EGL_DRAW)
        self.read = egl.eglGetCurrentSurface(EGL_READ)

    def make_current(self) -> None:
        if not self._egl.eglMakeCurrent(self.display, self.draw, self.read, self.context):
            raise RuntimeError("eglMakeCurrent failed")

    def release(self) -> None:
        self._egl.eglMakeCurrent(self.display, None, None, None)

    @property
    def is_current(self) -> bool:
        return self._egl.eglGetCurrentContext() == self.context


_glx: _GLX | None = None


def release_glx() -> bool:
    """Release whatever GLX context is current on this thread (e.g. a GLFW window's)."""
    global _glx
    if _glx is None:
        _glx = _GLX()
    return _glx.release()


@contextlib.contextmanager
def egl_current(egl: EGLContext, restore_window=None) -> Iterator[None]:
    """Inside: `egl` current (any GLX context released first). After: `egl` released and, when
    given, the GLFW window `restore_window` made current again."""
    release_glx()
    egl.make_current()
    try:
        yield
    finally:
        egl.release()
        if restore_window is not None:
            import glfw

            glfw.make_context_current(restore_window)
