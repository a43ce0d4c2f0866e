"""Saving shown frames without stalling the render loop.

Compressing one 512^2, 24-plane frame (zlib, lossless mode) takes tens to hundreds of ms, several
display frames; `BackgroundClipWriter` hands frames to a thread that appends them to a ClipWriter
(model/formats/clip.py: temporary name, renamed when closed). Frames are only referenced, never
copied: the viewer never writes into a frame it has shown.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

from model.formats.clip import ClipWriter, MPIFrame

MAX_PENDING = 64  # frames waiting for the thread; generation is far slower than compression, so
                  # this fills only when the disk stalls, and then the render loop waits rather than
                  # memory growing without bound
_END = object()


class BackgroundClipWriter:
    """`append(frame)` from the render loop; `close()` finishes the file (raising what went
    wrong on the thread), `abort()` drops it. `len()` counts the frames handed over."""

    def __init__(self, path: str | Path, fps: float, mode: str = "lossless"):
        self.path = Path(path)
        self._writer = ClipWriter(self.path, mode=mode, fps=fps)
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self._count = 0
        self.written = 0
        self.error: Exception | None = None
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name="imp-clip-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _END:
                return
            if self.error is not None or self._dropping:
                continue  # keep draining so that the render loop never blocks on a dead writer
            try:
                self._writer.append(frame)
                self.written += 1
            except (OSError, ValueError) as exc:
                self.error = exc

    def append(self, frame: MPIFrame) -> None:
        """Queue `frame`; raises the writer thread's error, if it had one."""
        if self.error is not None:
            raise self.error
        self._queue.put(frame)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def _finish_thread(self) -> None:
        self._queue.put(_END)
        self._thread.join()

    def close(self) -> None:
        """Write what is queued and finalise the file (renamed to its name only now)."""
        self._finish_thread()
        if self.error is not None:
            self._writer.abort()
            raise self.error
        self._writer.close()

    def abort(self) -> None:
        self._dropping = True
        self._finish_thread()
        self._writer.abort()
