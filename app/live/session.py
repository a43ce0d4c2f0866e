"""Live session glue: generation worker -> ring buffer -> paced playback (-> optional clip save).

The render loop calls `poll(now)` once per window frame; it returns the next generated MPI frame
when one is due at the driving source's frame rate (FramePacer), or None to keep showing the
current one. When the buffer runs dry the session reports `waiting` with the sampler's progress,
so the panel says "generating..." instead of the picture stuttering. Saving hands every frame
shown to a ClipWriter on its own thread (app/live/clip_saver.py; the file appears under its name only
when finalised); `close()` stops the
worker, joins its thread and finalises a save in progress (or discards it when it holds no frame).
"""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from app.live.ring_buffer import FramePacer, RingBuffer
from app.live.worker import GenerationJob, GenerationWorker

SWITCH_INTERVAL = 0.001  # s, see LiveSession.start
BUFFER_FRAMES = 32  # ~1.3 s at 25 fps; a 256^2 x 24-plane frame is ~2 MB, so ~60 MB at most


@dataclass(frozen=True)
class LiveState:
    """What the panel shows about live generation."""

    fill: int  # frames waiting in the buffer
    capacity: int
    waiting: bool  # a frame is due and none is there (or none has come yet)
    worker: str  # the worker's status text (phase / sampler step)
    error: str | None
    frames_shown: int
    frames_generated: int
    finished: bool  # the worker ended and the buffer is drained
    saving: Path | None
    saved: str | None  # message about the last save

    @property
    def lines(self) -> list[str]:
        """The status lines of the panel (also what tests read)."""
        out = [f"buffer {self.fill}/{self.capacity} frames, shown {self.frames_shown}, generated {self.frames_generated}"]
        if self.error:
            out.append(f"error: {self.error}")
        elif self.finished:
            out.append("generation finished")
        elif self.waiting:
            out.append(f"generating... ({self.worker})")
        else:
            out.append(self.worker)
        if self.saving is not None:
            out.append(f"saving to {self.saving}")
        if self.saved:
            out.append(self.saved)
        return out


class LiveSession:
    """Owns the worker, the buffer, the pacer and the save writer of one live viewer session."""

    def __init__(self, job: GenerationJob, capacity: int = BUFFER_FRAMES, save: Path | None = None, process: bool = False):
        """process: generate in a separate process (app/live/process_worker.py, imp-viewer's default;
        job.driving must then be picklable) instead of on a thread of this one."""
        self.buffer: RingBuffer = RingBuffer(capacity)
        if process:
            from app.live.process_worker import ProcessGenerationWorker

            self.worker = ProcessGenerationWorker(job, self.buffer)
        else:
            self.worker = GenerationWorker(job, self.buffer)
        self.pacer: FramePacer | None = None
        self.frames_shown = 0
        self.first_shown_at: float | None = None
        self.latencies: deque[float] = deque(maxlen=10_000)  # s, capture -> shown, per frame (webcam driving)
        self._save_path = save
        self._writer = None
        self._saved: str | None = None
        self._waiting = True
        self._pending: tuple | None = None  # slider values waiting for the driving source to open

    @property
    def started(self) -> bool:
        return self.worker.started_at is not None

    def start(self) -> "LiveSession":
        # The worker runs Python between torch kernels while holding the GIL; every ctypes / GL call
        # of the render loop releases it and must win it back, which takes up to the switch
        # interval (5 ms by default) each time: a headset frame makes ~15 such calls and lost
        # frames to it. A 1 ms interval hands the GIL over sooner at little cost to the worker.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self.worker.start()
        return self

    # -- the render loop's side ----------------------------------------------------------------
    def poll(self, now: float | None = None):
        """The next MPIFrame if one is due now (and there), else None."""
        now = time.perf_counter() if now is None else now
        if self._pending is not None and self.worker.driving is not None:
            self.set_params(*self._pending)
        if self.pacer is None:
            if self.worker.fps is None:
                return None
            self.pacer = FramePacer(self.worker.fps)
        if not self.pacer.due(now):
            return None
        frame = self.buffer.get_nowait()
        if frame is None:
            self.pacer.starved()
            self._waiting = True
            return None
        self.pacer.advanced(now)
        self._waiting = False
        self.frames_shown += 1
        if self.first_shown_at is None:
            self.first_shown_at = time.perf_counter()
        # a live camera: how long ago the driving frame behind this one was captured (generated
        # frames come out in the order their driving frames went in, one each)
        captured = getattr(self.worker.driving, "capture_times", None)
        if captured is not None and self.frames_shown <= len(captured):
            self.latencies.append(time.perf_counter() - captured[self.frames_shown - 1])
        if self._save_path is not None and self._writer is None:
            self._open_writer()
        if self._writer is not None:
            self._append(frame)
        return frame

    @property
    def state(self) -> LiveState:
        status = self.worker.status
        ended = not self.worker.alive and status.phase in ("finished", "stopped", "failed")
        return LiveState(
            fill=len(self.buffer), capacity=self.buffer.capacity, waiting=self._waiting, worker=status.text,
            error=status.error, frames_shown=self.frames_shown, frames_generated=status.frames_generated,
            finished=ended and len(self.buffer) == 0 and status.error is None,
            saving=self._save_path if self._writer is not None else None, saved=self._saved,
        )

    # -- controls ------------------------------------------------------------------------------
    def set_params(self, params, animate: bool | None = None) -> bool:
        """Slider values for a parametric driving source (model.data.driving.DrivingParams); they act
        from the next clip the worker asks for (kept until the source is open). False when the
        source is open and not parametric."""
        from model.data.driving import ParametricDriving

        self._pending = (params, animate)
        driving = self.worker.driving
        if driving is None:
            return True
        self._pending = None
        # the source itself (worker thread) or the worker process's handle on it (RemoteDriving)
        if not (isinstance(driving, ParametricDriving) or getattr(driving, "parametric", False)):
            return False
        driving.params = params  # one reference swap, read by the worker at its next clip
        if animate is not None:
            driving.animate = animate
        return True

    def start_saving(self, path: Path) -> None:
        """Save every frame shown from now on to `path` (finalised by stop_saving / close)."""
        if self._writer is not None:
            return
        self._save_path = Path(path)
        self._saved = None

    def stop_saving(self) -> None:
        writer, self._writer, path, self._save_path = self._writer, None, self._save_path, None
        if writer is None:
            return
        if len(writer) == 0:
            writer.abort()
            self._saved = f"nothing saved to {path} (no frames)"
            return
        count = len(writer)
        try:
            writer.close()
            self._saved = f"saved {count} frames to {path}"
        except (OSError, ValueError) as exc:
            self._saved = f"could not save {path}: {exc}"

    @property
    def saving(self) -> bool:
        return self._save_path is not None

    def _open_writer(self) -> None:
        from app.live.clip_saver import BackgroundClipWriter

        try:
            # frames are compressed on the writer's thread: tens to hundreds of ms each at 512^2
            self._writer = BackgroundClipWriter(self._save_path, fps=self.worker.fps or 25.0)
        except (OSError, ValueError) as exc:
            self._saved = f"cannot save to {self._save_path}: {exc}"
            self._save_path = None

    def _append(self, frame) -> None:
        try:
            self._writer.append(frame)
        except (OSError, ValueError) as exc:
            self._writer.abort()
            self._writer = None
            self._saved = f"save to {self._save_path} failed: {exc}"
            self._save_path = None

    # -- shutdown ------------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> bool:
        """Stop the worker (joined within `timeout`) and finalise a save; True if the thread ended."""
        stopped = self.worker.stop(timeout)
        self.stop_saving()
        return stopped

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
