"""The viewer's generation worker: a background thread that loads the model, prepares the
portrait, opens the driving source and samples clip after clip into the viewer's RingBuffer.

A thread is the simple way: MPI frames reach the render loop without being copied between
processes and the sliders change the driving source directly. But on 2 cores the worker's Python
between torch kernels waits for the GIL the spinning render loop holds, so imp-viewer runs the
same work in a separate process by default (app/live/process_worker.py, which says what was
measured); `imp-viewer --worker thread` uses this one.

Stopping: `stop()` sets an event that is checked after every denoising step and while waiting for
room in the full buffer, closes the buffer, then joins the thread with a timeout. Errors never
escape the thread: they end it and are kept in `status.error` for the UI to show.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.live.ring_buffer import RingBuffer

if TYPE_CHECKING:  # the worker's module stays light: the viewer imports it before any model code
    from model.data.driving_cache import TrackingProgress

WORKER_NICE = 5  # how much lower the generation thread's CPU priority is than the render loop's
PUT_POLL = 0.1  # s: how often a worker blocked on a full buffer looks at the stop event


class _Stopped(Exception):
    """Raised inside the sampler's progress callback to leave it between two steps."""


@dataclass(frozen=True)
class WorkerStatus:
    """What the worker is doing, for the panel. phase: starting | loading model | preparing portrait |
    tracking driving | generating | finished | stopped | failed."""

    phase: str = "starting"
    clip: int = 0
    step: int = 0
    steps: int = 0
    frames_generated: int = 0
    first_frame_time: float | None = None  # time.perf_counter() when the first frame entered the buffer
    error: str | None = None
    device: str | None = None  # where the worker generates: a torch device (--device auto: cuda or cpu) or "cpu (ONNX Runtime)"
    phases: tuple[tuple[str, float], ...] = ()  # (phase, time.perf_counter() it began), in order
    tracking: tuple[str, int, int] | None = None  # a driving video's (pass, frames done, frames in all; 0: unknown)

    @property
    def generating_since(self) -> float | None:
        """time.perf_counter() when sampling began (model and inputs ready), from `phases`."""
        return dict(self.phases).get("generating")

    def updated(self, at: float | None = None, **changes) -> "WorkerStatus":
        """This status with `changes`; a new phase is logged in `phases` as begun `at` (default:
        now; the worker process sends its own clock, the same monotonic clock on Linux)."""
        phase = changes.get("phase")
        if phase is not None and phase != self.phase:
            changes["phases"] = self.phases + ((phase, time.perf_counter() if at is None else at),)
        return replace(self, **changes)

    @property
    def text(self) -> str:
        if self.phase == "generating" and self.steps:
            on = f" on {self.device}" if self.device else ""
            return f"generating clip {self.clip + 1}{on}: step {self.step}/{self.steps}"
        if self.phase == "failed":
            return f"generation failed: {self.error}"
        if self.phase == "tracking driving" and self.tracking is not None:
            stage, done, total = self.tracking
            return f"tracking driving ({stage} frame {done}/{total})" if total else f"tracking driving ({stage} frame {done})"
        return self.phase


@dataclass
class GenerationJob:
    """What to generate. `driving(portrait, on_progress)` opens the driving source once the
    portrait is prepared (its Track is what video / webcam / slider sources retarget onto);
    on_progress(stage, done, total) is the worker's callback for a driving video's tracking
    (model.data.driving.VideoDriving), which sliders and webcams, having nothing to wait for, ignore."""

    checkpoint: Path
    portrait: object  # path or RGB uint8 array
    driving: Callable[[object, TrackingProgress], object]  # (model.diffusion.pipeline.Portrait, on_progress) -> model.data.driving.DrivingSource
    seed: int = 0
    steps: int | None = None
    max_frames: int | None = None
    device: str = "auto"  # auto|cpu|cuda[:N] (model.runtime.resolve_device): the GPU when there is one
    threads: int | None = None  # CPU threads of the network: torch's (process-wide; None: torch's choice) or ONNX Runtime's (None: 1)
    cache_dir: Path | None = None  # prepared portraits are kept here (model/data/portrait_cache.py); None: not kept


def open_generator(job: GenerationJob):
    """The generator a worker samples `job` with, loaded: the ONNX Runtime one when it can serve
    (model.coldstart.generator.onnx_generator: a one-step student on the CPU; it never imports
    torch, whose import was most of the wait for the first frame), else the torch one on the
    device asked for. Both have `device`, `cfg`, `times`, `prepare` and `generate_clips`."""
    from model.coldstart.generator import onnx_generator

    choice = onnx_generator(job.checkpoint, job.device, job.steps, job.cache_dir, job.threads)
    if choice.generator is not None:
        return choice.generator
    if choice.missing:  # one line on the terminal: the first frame waits for torch's import now
        print(f"imp-viewer: generating with torch: {choice.why}", file=sys.stderr, flush=True)
    import torch

    from model.diffusion.pipeline import Generator
    from model.runtime import resolve_device

    if job.threads:
        torch.set_num_threads(job.threads)
    return Generator.from_checkpoint(job.checkpoint, resolve_device(job.device))


def _lower_priority() -> None:
    """Give this thread (and the torch threads it starts, which inherit it) a lower CPU priority
    than the render loop: on a busy CPU a headset frame that waits for a core is a lost frame,
    a generated frame that waits is only later. Linux nice values are per thread; elsewhere nothing."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICE))
    except (AttributeError, OSError):
        pass


class GenerationWorker:
    """Runs `job` on a daemon thread into `buffer`. Attributes set by the thread for the UI:
    `status`, `driving` (the DrivingSource once open; sliders change its params), `fps` (the
    driving source's frame rate once known)."""

    def __init__(self, job: GenerationJob, buffer: RingBuffer):
        self.job = job
        self.buffer = buffer
        self.status = WorkerStatus()
        self.driving = None
        self.fps: float | None = None
        self.started_at: float | None = None
        self._generator = None  # model.diffusion.pipeline.Generator once loaded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imp-generation", daemon=True)

    def start(self) -> "GenerationWorker":
        self.started_at = time.perf_counter()
        self._thread.start()
        return self

    @property
    def times(self):
        """The model.diffusion.pipeline.GenerationTimes of the sampling so far (None before it began)."""
        return None if self._generator is None else self._generator.times

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _set(self, **changes) -> None:
        self.status = self.status.updated(**changes)  # one reference swap: the UI reads a consistent status

    def _check(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def _run(self) -> None:
        _lower_priority()
        try:
            self._generate()
            self._set(phase="stopped" if self._stop.is_set() else "finished")
        except _Stopped:
            self._set(phase="stopped")
        except Exception as exc:  # noqa: BLE001 - every failure must reach the UI, not kill the app
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            self._set(phase="failed", error=message)
            self.traceback = traceback.format_exc()
        finally:
            self.buffer.close()  # the render loop drains what is left and then knows no more will come
            close = getattr(self.driving, "close", None)  # a webcam releases its camera
            if close is not None:
                close()

    def _generate(self) -> None:
        job = self.job
        self._set(phase="loading model")
        generator = open_generator(job)
        self._set(device=str(generator.device))
        self._generator = generator
        self._check()
        self._set(phase="preparing portrait")
        portrait = generator.prepare(job.portrait, job.cache_dir)
        self._check()
        self._set(phase="tracking driving")

        def tracking(stage: str, done: int, total: int) -> None:
            self._set(tracking=(stage, done, total))
            self._check()  # a long video's tracking stops when the viewer closes

        self.driving = job.driving(portrait, tracking)
        self.fps = float(self.driving.fps)
        self._check()
        steps = job.steps or generator.cfg.diffusion.sample_steps
        self._set(phase="generating", steps=steps)

        def progress(status) -> None:
            self._set(clip=status.clip, step=status.step, steps=status.steps)
            self._check()

        clips = generator.generate_clips(self.driving, seed=job.seed, steps=steps, max_frames=job.max_frames, progress=progress)
        try:
            for frames in clips:
                for frame in frames:
                    while not self.buffer.put(frame, timeout=PUT_POLL):
                        self._check()
                        if self.buffer.closed:
                            return
                    if self.status.first_frame_time is None:
                        self._set(first_frame_time=time.perf_counter())
                    self._set(frames_generated=self.status.frames_generated + 1)
        finally:
            clips.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end on its own; True once it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to end (between two sampler steps) and wait for it; True once it has."""
        self._stop.set()
        self.buffer.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()
