"""The viewer's generation worker in a separate process (imp-viewer's default; the thread of
app/live/worker.py with `--worker thread`).

A spawned process loads the model, prepares the portrait, opens the driving source and samples
clips; each MPI frame's arrays go through shared memory (a few frame-sized slots the parent
creates), and only the slot number and the camera (K, pose, near, far) through a queue. A
receiver thread in the viewer's process copies a frame out of its slot, hands the slot back and
puts the frame into the RingBuffer, blocking while it is full, so the child waits for slots and
memory stays bounded as with the thread. The child runs at the lowest CPU priority (nice +19).

Why a process: measured with `imp bench viewer` on this 2-core CPU (512^2 per eye, demo model),
the thread generated 3.7-4.1 MPI frames/s with the window at 29-31 fps, because the worker's
Python between torch kernels waits for the GIL the spinning render loop holds; the process at
nice +19 generated 5.1 frames/s with the window at 41 fps (48 idle). At nice +5 the process made
8.5-9.5 frames/s but the window fell to 20-23 fps: the render loop keeps its core first.

The job's `driving` must be picklable (a module-level function or a functools.partial of one).
`driving` here is a `RemoteDriving`: the viewer's sliders set its params, which go to the child's
source before its next clip; a webcam's capture times come back with the frames.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import queue
import threading
import time
import traceback

from app.live.ring_buffer import RingBuffer
from app.live.worker import PUT_POLL, GenerationJob, WorkerStatus, open_generator

SLOTS = 4  # frames in flight between the processes
PROCESS_NICE = 19  # the generation process's priority below the render loop's (see the module docstring)


class RemoteDriving:
    """The viewer's handle on the driving source in the worker process: its frame rate, whether it
    is parametric (the sliders' `params` / `animate`, forwarded to the child, act from its next
    clip), and for a live camera the capture times of the frames received so far (None otherwise)
    and the camera frames it dropped (`capture.dropped`, as WebcamDriving has it)."""

    def __init__(self, control, fps: float, parametric: bool, live: bool):
        self._control = control
        self.fps = fps
        self.parametric = parametric
        self.capture_times: list[float] | None = [] if live else None
        self.dropped = 0  # a live camera's frames never delivered because newer ones were taken (WebcamDriving.capture)
        self._params = None
        self._animate = None

    @property
    def capture(self) -> "RemoteDriving":
        return self

    @property
    def params(self):
        return self._params

    @params.setter
    def params(self, value) -> None:
        self._params = value
        self._control.put(("params", value))

    @property
    def animate(self):
        return self._animate

    @animate.setter
    def animate(self, value: bool) -> None:
        self._animate = value
        self._control.put(("animate", value))


def _layout(res: int, planes: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(field, shape, byte offset) of one frame's uint8 arrays in a slot; the slot size last."""
    out, offset = [], 0
    for name, shape in (("frontal", (3, res, res)), ("residual", (3, res, res)), ("alpha", (planes, res, res)),
                        ("background", (3, res, res))):
        out.append((name, shape, offset))
        offset += math.prod(shape)
    out.append(("", (), offset))
    return out


def _apply_controls(control, driving) -> None:
    """Slider changes that came from the viewer, applied to the child's parametric source."""
    while True:
        try:
            name, value = control.get_nowait()
        except queue.Empty:
            return
        if driving is not None:
            setattr(driving, name, value)


def _child(job: GenerationJob, shm_name: str, res: int, planes: int, free, out, control, stop) -> None:
    """The worker process: sample clips into the shared slots, report over `out`."""
    from multiprocessing import shared_memory

    import numpy as np

    try:  # lower than the render loop, for every thread torch starts from here on
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + PROCESS_NICE))
    except (AttributeError, OSError):
        pass
    shm = shared_memory.SharedMemory(name=shm_name)
    layout = _layout(res, planes)
    size = layout[-1][2]

    class Stopped(Exception):
        pass

    def check() -> None:
        if stop.is_set():
            raise Stopped

    driving = None
    try:
        from model.coldstart.generator import OnnxGenerator  # noqa: F401 - the worker's own imports, before "loading model"
        from model.data.driving import ParametricDriving
        from model.runtime import single_threaded_blas

        out.put(("status", {"phase": "loading model", "at": time.perf_counter()}))
        generator = open_generator(job)
        # after the generator's imports: threadpoolctl limits the BLAS libraries already loaded, and
        # torch's, left at two threads beside the render loop, made the torch worker 10-100x slower
        single_threaded_blas()
        out.put(("status", {"device": str(generator.device)}))
        out.put(("status", {"phase": "preparing portrait", "at": time.perf_counter()}))
        portrait = generator.prepare(job.portrait, job.cache_dir)
        out.put(("status", {"phase": "tracking driving", "at": time.perf_counter()}))

        def tracking(stage: str, done: int, total: int) -> None:
            out.put(("status", {"tracking": (stage, done, total)}))
            check()

        driving = job.driving(portrait, tracking)
        captured = getattr(driving, "capture_times", None)
        out.put(("driving", float(driving.fps), isinstance(driving, ParametricDriving), captured is not None))
        steps = job.steps or generator.cfg.diffusion.sample_steps
        out.put(("status", {"phase": "generating", "steps": steps, "at": time.perf_counter()}))

        def progress(status) -> None:
            out.put(("status", {"clip": status.clip, "step": status.step, "steps": status.steps}))
            _apply_controls(control, driving)  # before the source is asked for the next clip's frames
            check()

        _apply_controls(control, driving)
        sent = 0
        for frames in generator.generate_clips(driving, seed=job.seed, steps=steps, max_frames=job.max_frames, progress=progress):
            for frame in frames:
                while True:
                    check()
                    try:
                        slot = free.get(timeout=PUT_POLL)
                        break
                    except queue.Empty:
                        pass
                base = slot * size
                for name, shape, offset in layout[:-1]:
                    view = np.ndarray(shape, np.uint8, buffer=shm.buf, offset=base + offset)
                    view[...] = getattr(frame, name)
                    del view
                # generated frames come out in the order their driving frames went in, one each
                when = captured[sent] if captured is not None and sent < len(captured) else None
                dropped = getattr(getattr(driving, "capture", None), "dropped", 0)
                out.put(("frame", slot, frame.K, frame.T_cam_from_head, frame.near, frame.far, when, dropped))
                sent += 1
            out.put(("times", generator.times))
        out.put(("end", "finished", None, None))
    except Stopped:
        out.put(("end", "stopped", None, None))
    except Exception as exc:  # noqa: BLE001 - every failure must reach the UI
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        out.put(("end", "failed", message, traceback.format_exc()))
    finally:
        close = getattr(driving, "close", None)  # a webcam releases its camera
        if close is not None:
            close()
        shm.close()


class ProcessGenerationWorker:
    """GenerationWorker's interface (status, fps, times, start / alive / join / stop) with the
    sampling in a spawned process; see the module docstring."""

    def __init__(self, job: GenerationJob, buffer: RingBuffer):
        from model.net.checkpoint import read_config

        self.job = job
        self.buffer = buffer
        self.status = WorkerStatus()
        self.driving: RemoteDriving | None = None  # once the child has opened the source
        self.fps: float | None = None
        self.started_at: float | None = None
        self.times = None
        self.traceback: str | None = None
        try:  # the slots' size
            cfg = read_config(job.checkpoint)
            res, planes = cfg.res, cfg.planes
        except Exception:  # noqa: BLE001 - the child loads it again and reports what is wrong, as the thread does
            res, planes = 1, 1
        self._layout = _layout(res, planes)
        ctx = multiprocessing.get_context("spawn")  # MediaPipe, OpenGL and torch threads do not survive a fork
        from multiprocessing import shared_memory

        self._shm = shared_memory.SharedMemory(create=True, size=SLOTS * self._layout[-1][2])
        self._free, self._out, self._control, self._stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
        for slot in range(SLOTS):
            self._free.put(slot)
        self._process = ctx.Process(target=_child, name="imp-generation", daemon=True,
                                    args=(job, self._shm.name, res, planes, self._free, self._out, self._control,
                                          self._stop))
        self._receiver = threading.Thread(target=self._receive, name="imp-generation-receiver", daemon=True)

    def start(self) -> "ProcessGenerationWorker":
        self.started_at = time.perf_counter()
        self._process.start()
        self._receiver.start()
        return self

    @property
    def alive(self) -> bool:
        return self._receiver.is_alive()

    def _set(self, **changes) -> None:
        self.status = self.status.updated(**changes)

    def _frame(self, slot: int, K, T, near: float, far: float, captured: float | None, dropped: int):
        import numpy as np

        from model.formats.clip import MPIFrame

        base = slot * self._layout[-1][2]
        arrays = {name: np.ndarray(shape, np.uint8, buffer=self._shm.buf, offset=base + offset).copy()
                  for name, shape, offset in self._layout[:-1]}
        self._free.put(slot)
        if captured is not None and self.driving is not None and self.driving.capture_times is not None:
            self.driving.capture_times.append(captured)
            self.driving.dropped = dropped
        return MPIFrame(K=K, T_cam_from_head=T, near=near, far=far, **arrays)

    def _receive(self) -> None:
        try:
            while True:
                try:
                    message = self._out.get(timeout=PUT_POLL)
                except queue.Empty:
                    if not self._process.is_alive():
                        self._set(phase="failed", error=f"the generation process died (exit code {self._process.exitcode})")
                        return
                    continue
                kind = message[0]
                if kind == "status":
                    self._set(**message[1])
                elif kind == "driving":
                    _, fps, parametric, live = message
                    self.driving = RemoteDriving(self._control, fps, parametric, live)
                    self.fps = fps
                elif kind == "times":
                    self.times = message[1]
                elif kind == "frame":
                    frame = self._frame(*message[1:])
                    while not self.buffer.put(frame, timeout=PUT_POLL):
                        if self.buffer.closed or self._stop.is_set():
                            return
                    if self.status.first_frame_time is None:
                        self._set(first_frame_time=time.perf_counter())
                    self._set(frames_generated=self.status.frames_generated + 1)
                elif kind == "end":
                    _, phase, error, trace = message
                    self.traceback = trace
                    self._set(phase="stopped" if self._stop.is_set() and phase == "finished" else phase, error=error)
                    return
        finally:
            self.buffer.close()

    def join(self, timeout: float | None = None) -> bool:
        self._receiver.join(timeout)
        return not self._receiver.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """End the process (between two sampler steps; killed after `timeout`) and free the slots."""
        self._stop.set()
        self.buffer.close()
        if self._process.pid is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(1.0)
        if self._receiver.is_alive():
            self._receiver.join(timeout)
        if self.status.phase not in ("finished", "failed"):
            self._set(phase="stopped")
        self._shm.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass
        return not self._process.is_alive()
