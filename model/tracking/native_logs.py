"""Keeping MediaPipe's C++ log lines out of the user's terminal.

MediaPipe's graphs (and the TensorFlow Lite and EGL code under them) log through glog / absl,
which write straight to file descriptor 2 from C++ threads: `W0000 ... landmark_projection_calculator
...`, `I0000 ... gl_context_egl ...`, "INFO: Created TensorFlow Lite XNNPACK delegate", and so on.
Environment variables such as GLOG_minloglevel do not reach them (absl reads its flags once, before
Python can set anything), and Python's own `sys.stderr` does not see those writes. So while a
MediaPipe graph starts or processes an image, fd 2 is pointed at a temporary file; afterwards the
lines that are MediaPipe's are dropped and everything else (a Python warning from another thread,
an error of another library) is written to the real stderr, late but not lost.

`hush_mediapipe()` installs this around MediaPipe's `SolutionBase.__init__` and `.process` (every
solution: face mesh, face detection, selfie segmentation) once per process; it is what
`FaceMeshRunner` and `SelfieMatter` call when they start. `set_verbose(True)` (the command lines'
`--verbose`) turns it off before or after installation.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

# lines MediaPipe and the libraries under it print, each through its end of line; anything else
# captured is replayed. Not anchored at a line's start: each is one write() from a C++ thread,
# which can land between a Python thread's text and its newline (print writes them apart)
NATIVE_LOG_LINE = re.compile(
    rb"(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-]+:\d+\]"  # glog / absl: I0000 00:00:1795... 19153 gl_context_egl.cc:85]
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|INFO: Created TensorFlow Lite [^\n]*delegate)[^\n]*(?:\n|$)"
)

_verbose = bool(os.environ.get("IMP_VERBOSE"))
_lock = threading.Lock()
_depth = 0  # nested / concurrent quiet windows: fd 2 is redirected once, restored by the last one out
_saved_fd: int | None = None
_capture = None
_installed = False


def set_verbose(verbose: bool) -> None:
    """True: leave MediaPipe's log lines on the terminal (the command lines' --verbose)."""
    global _verbose
    _verbose = bool(verbose)


def is_verbose() -> bool:
    return _verbose


def filter_native_lines(data: bytes) -> bytes:
    """`data` without the lines MediaPipe's C++ code writes (see NATIVE_LOG_LINE), also where one
    landed inside another writer's line."""
    return NATIVE_LOG_LINE.sub(b"", data)


def _enter() -> None:
    global _depth, _saved_fd, _capture
    with _lock:
        if _depth == 0:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            capture = tempfile.TemporaryFile()
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 at all: nothing to protect
                capture.close()
                _depth += 1
                return
            os.dup2(capture.fileno(), 2)
            _saved_fd, _capture = saved, capture
        _depth += 1


def _exit() -> None:
    global _depth, _saved_fd, _capture
    with _lock:
        _depth -= 1
        if _depth > 0 or _saved_fd is None:
            return
        try:
            sys.stderr.flush()  # Python text written meanwhile belongs in the capture, in order
        except (AttributeError, ValueError, OSError):
            pass
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        capture, _saved_fd, _capture = _capture, None, None
        capture.seek(0)
        rest = filter_native_lines(capture.read())
        capture.close()
        if rest:
            try:
                os.write(2, rest)
            except OSError:
                pass


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """While inside: MediaPipe's log lines written to fd 2 are dropped (unless verbose)."""
    if _verbose:
        yield
        return
    _enter()
    try:
        yield
    finally:
        _exit()


def hush_mediapipe() -> None:
    """Start and run every MediaPipe solution graph inside `quiet_native_logs` (once per process)."""
    global _installed
    if _installed:
        return
    try:
        from mediapipe.python import solution_base
    except ImportError:  # pragma: no cover - mediapipe is a dependency
        return
    with _lock:
        if _installed:
            return
        base = solution_base.SolutionBase
        init, process = base.__init__, base.process

        def quiet_init(self, *args, **kwargs):
            with quiet_native_logs():
                init(self, *args, **kwargs)
                # the calculators open on the graph's own threads after __init__ returns, and
                # log as they do: wait for that inside the quiet window
                graph = getattr(self, "_graph", None)
                if graph is not None:
                    graph.wait_until_idle()

        def quiet_process(self, *args, **kwargs):
            with quiet_native_logs():
                return process(self, *args, **kwargs)

        base.__init__, base.process = quiet_init, quiet_process
        _installed = True
