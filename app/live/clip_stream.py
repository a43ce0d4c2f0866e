"""Playing an MPI clip file without holding it in memory.

A minute of 512^2, 24-plane clip is ~12 GB of frames (8 MB each as uint8), so `imp-viewer --clip`
reads it on a thread into a small RingBuffer ahead of playback instead of loading it whole. The
reader goes on past the last frame from the first one (playback loops). The render loop asks for
the frame its clock says (`frame(i)`): frames before it are dropped (playback skipped them), a
frame far ahead or behind (a seek, a loop back) restarts the reader there; a frame not read yet
gives None and the window keeps the last one.

Lossless clips are read frame by frame from their chunks (any frame directly); compact clips
decode their videos in order, so a seek backwards decodes again from the start.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from app.live.ring_buffer import RingBuffer
from model.formats.clip import ClipReader, MPIFrame, open_clip

STREAM_FRAMES = 12  # read ahead; 512^2 x 24 planes: ~95 MB
PUT_POLL = 0.05  # s: how often a reader blocked on a full buffer looks for a seek or a stop


class ClipStream:
    """An MPI clip file played through a reader thread: `len()`, `fps`, `size`, `num_planes`,
    `frame(i, wait=0)`, `close()` (also a context manager). Opening checks the file (ClipError)."""

    def __init__(self, path: str | Path, capacity: int = STREAM_FRAMES):
        self.path = Path(path)
        self._reader: ClipReader = open_clip(self.path)
        info = self._reader.info
        self.fps = info.fps
        self.size = (info.height, info.width)
        self.num_planes = info.num_planes
        self.capacity = capacity
        self._count = info.num_frames
        self._lock = threading.Condition()
        self._buffer: RingBuffer[tuple[int, int, MPIFrame]] = RingBuffer(capacity)
        self._generation = 0  # bumped by a seek: frames of an older generation are stale
        self._start = 0
        self._head: tuple[int, int, MPIFrame] | None = None  # the last frame taken from the buffer
        self._expected = 0  # the index the next frame from the buffer will have (the render loop's view)
        self._stop = threading.Event()
        self.error: str | None = None
        self.frames_read = 0
        self._thread = threading.Thread(target=self._run, name="imp-clip-reader", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return self._count

    # -- the reader thread ------------------------------------------------------------------------
    def _frames_from(self, start: int) -> Iterator[tuple[int, MPIFrame]]:
        """(index, frame) from `start` on, looping over the clip."""
        reader = self._reader
        index = start
        while True:
            if reader.info.mode == "lossless":
                yield index, reader.frame(index)
                index = (index + 1) % self._count
            else:
                for i, frame in enumerate(reader.frames()):  # decodes in order: skip up to `index`
                    if i >= index:
                        yield i, frame
                index = 0

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    generation, start = self._generation, self._start
                for index, frame in self._frames_from(start):
                    if self._stop.is_set() or generation != self._generation:
                        break
                    item = (generation, index, frame)
                    while not self._buffer.put(item, timeout=PUT_POLL):
                        if self._stop.is_set() or generation != self._generation:
                            break
                    else:
                        self.frames_read += 1
                        continue
                    break
        except Exception as exc:  # noqa: BLE001 - a corrupt chunk mid-clip: the window says so, keeps going
            self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        finally:
            self._buffer.close()

    # -- the render loop's side -----------------------------------------------------------------
    def _seek(self, index: int) -> None:
        with self._lock:
            self._generation += 1
            self._start = index
        self._expected = index
        self._head = None
        while self._buffer.get_nowait() is not None:  # drop what was read for the old position
            pass

    def frame(self, index: int, wait: float = 0.0) -> MPIFrame | None:
        """Frame `index` if it has been read (waiting up to `wait` s for it), else None."""
        if not 0 <= index < self._count:
            raise IndexError(f"{self.path}: frame {index} is out of range (0..{self._count - 1})")
        deadline = time.perf_counter() + wait
        while True:
            if self._head is not None:
                distance = (index - self._head[1]) % self._count  # how far playback is ahead of the reader
                if distance == 0:
                    return self._head[2]
                if distance <= self.capacity:
                    self._head = None  # playback skipped it
                    continue
                self._seek(index)  # a jump (seek, loop back, far behind): restart the reader there
            elif (index - self._expected) % self._count > self.capacity:
                self._seek(index)
            remaining = deadline - time.perf_counter()
            item = self._buffer.get(timeout=remaining) if remaining > 0 else self._buffer.get_nowait()
            if item is None:
                return None  # not read yet: the caller keeps its frame and asks again
            if item[0] != self._generation:
                continue  # read for a position given up
            self._head = item
            self._expected = (item[1] + 1) % self._count

    def close(self) -> None:
        self._stop.set()
        self._buffer.close()
        self._thread.join(timeout=5.0)
        self._reader.close()

    def __enter__(self) -> "ClipStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
