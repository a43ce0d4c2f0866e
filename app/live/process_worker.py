"""The generation worker in a separate process, for measuring it against the thread
(app/live/worker.py; `imp bench viewer --worker process`).

A spawned process loads the model, prepares the portrait, opens the driving source and samples
clips; each MPI frame's arrays go through shared memory (a few frame-sized slots the parent
creates), and only the slot number and the camera (K, pose, near, far) through a queue. A
receiver thread in the viewer's process copies a frame out of its slot, hands the slot back and
puts the frame into the RingBuffer, blocking while it is full, so the child waits for slots and
memory stays bounded as with the thread.

The job's `driving` must be picklable (a module-level function), and the viewer cannot change the
driving source's parameters while it runs (`driving` stays None): what the sliders need, the
thread has.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
import traceback
from dataclasses import replace

import numpy as np

from app.live.ring_buffer import RingBuffer
from app.live.worker import PUT_POLL, WORKER_NICE, GenerationJob, WorkerStatus

SLOTS = 4  # frames in flight between the processes


def _layout(res: int, planes: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(field, shape, byte offset) of one frame's uint8 arrays in a slot; the slot size last."""
    out, offset = [], 0
    for name, shape in (("frontal", (3, res, res)), ("residual", (3, res, res)), ("alpha", (planes, res, res)),
                        ("background", (3, res, res))):
        out.append((name, shape, offset))
        offset += int(np.prod(shape))
    out.append(("", (), offset))
    return out


def _child(job: GenerationJob, shm_name: str, res: int, planes: int, free, out, stop) -> None:
    """The worker process: sample clips into the shared slots, report over `out`."""
    from multiprocessing import shared_memory

    try:  # lower than the render loop, for every thread torch starts from here on
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE))
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

    try:
        import torch

        from model.diffusion.pipeline import Generator
        from model.runtime import resolve_device

        if job.threads:
            torch.set_num_threads(job.threads)
        out.put(("status", {"phase": "loading model"}))
        generator = Generator.from_checkpoint(job.checkpoint, resolve_device(job.device))
        out.put(("status", {"phase": "preparing portrait"}))
        portrait = generator.prepare(job.portrait)
        out.put(("status", {"phase": "tracking driving"}))
        driving = job.driving(portrait)
        out.put(("fps", float(driving.fps)))
        steps = job.steps or generator.cfg.diffusion.sample_steps
        out.put(("status", {"phase": "generating", "steps": steps, "generating_since": time.perf_counter()}))

        def progress(status) -> None:
            out.put(("status", {"clip": status.clip, "step": status.step, "steps": status.steps}))
            check()

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
                out.put(("frame", slot, frame.K, frame.T_cam_from_head, frame.near, frame.far))
            out.put(("times", generator.times))
        out.put(("end", "finished", None, None))
    except Stopped:
        out.put(("end", "stopped", None, None))
    except Exception as exc:  # noqa: BLE001 - every failure must reach the UI
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        out.put(("end", "failed", message, traceback.format_exc()))
    finally:
        shm.close()


class ProcessGenerationWorker:
    """GenerationWorker's interface (status, fps, times, start / alive / join / stop) with the
    sampling in a spawned process; see the module docstring."""

    def __init__(self, job: GenerationJob, buffer: RingBuffer):
        from model.net.checkpoint import load_checkpoint

        self.job = job
        self.buffer = buffer
        self.status = WorkerStatus()
        self.driving = None  # the source lives in the child: no sliders
        self.fps: float | None = None
        self.started_at: float | None = None
        self.times = None
        self.traceback: str | None = None
        cfg = load_checkpoint(job.checkpoint).config
        self._res, self._planes = cfg.res, cfg.planes
        self._layout = _layout(cfg.res, cfg.planes)
        ctx = multiprocessing.get_context("spawn")  # MediaPipe, OpenGL and torch threads do not survive a fork
        from multiprocessing import shared_memory

        self._shm = shared_memory.SharedMemory(create=True, size=SLOTS * self._layout[-1][2])
        self._free, self._out, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        for slot in range(SLOTS):
            self._free.put(slot)
        self._process = ctx.Process(target=_child, name="imp-generation", daemon=True,
                                    args=(job, self._shm.name, cfg.res, cfg.planes, self._free, self._out, self._stop))
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
        self.status = replace(self.status, **changes)

    def _frame(self, slot: int, K, T, near: float, far: float):
        from model.formats.clip import MPIFrame

        base = slot * self._layout[-1][2]
        arrays = {name: np.ndarray(shape, np.uint8, buffer=self._shm.buf, offset=base + offset).copy()
                  for name, shape, offset in self._layout[:-1]}
        self._free.put(slot)
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
                elif kind == "fps":
                    self.fps = message[1]
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
