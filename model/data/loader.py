"""Training batches for the loop, built ahead of time in DataLoader worker processes.

The batch of step k on rank r is a pure function of (seed, k, r) and of the branch L_mpi / L_side
that step uses (model/data/pairs.py), so any process can build it: worker w of W builds steps
start + w, start + w + W, ... and the DataLoader hands them back in step order (it takes one item
from each worker in turn). A resumed run starts the stream at the step it resumes from and sees the
same batches as an uninterrupted run, whatever the number of workers: bit-exact resume holds with
workers as without (tests/test_loader.py).

Where things happen:
- workers (processes): memory-mapped reads, resizes, the cached per-frame conditions, alpha
  planes, the identity condition; on a CPU run also the L_side batches' reference-camera
  rasterising, the one costly part;
- on a GPU run the L_side rasterising is left to the training process, on the GPU
  (`PendingBatch.finish`), where the torch rasteriser runs many times faster; batches arrive in
  pinned memory and are copied asynchronously;
- `workers=0`: everything in the training process, as before this module existed.

Workers are started with `spawn`, not fork: a forked child of a process that has run OpenCV's or
MediaPipe's thread pools (the test session prepares its data in-process; a GPU process has CUDA
threads) can hang on a lock held by a thread that does not exist in the child. Each worker builds
its own PairSampler from a picklable recipe (`SamplerSpec`), so no memory map is ever pickled; the
price is a few seconds of imports once per run.
"""
from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.data.pairs import PairSampler, PendingBatch, TrainBatch
from model.net.config import ModelConfig

MAX_AUTO_WORKERS = 8  # beyond this the loader outruns any step this model makes
ALIGN = 64  # bytes: every tensor of a packed batch starts on a cache line (and any dtype's alignment)


@dataclass(frozen=True)
class SamplerSpec:
    """Everything a process needs to build the same PairSampler as the training process."""

    data: Path
    cfg: ModelConfig
    cache_dir: Path | None
    videos: tuple[str, ...] | None
    exclude: tuple[str, ...]
    seed: int

    def build(self, progress: bool = False) -> PairSampler:
        return PairSampler(self.data, self.cfg, self.cache_dir, list(self.videos) if self.videos else None, list(self.exclude),
                           self.seed, progress=progress)


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask: a cluster job's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def default_workers(local_processes: int = 1) -> int:
    """Loader workers per training process when none are asked for: the cores left to each
    training process after itself (2 cores, 1 process: 1 worker; 2 torchrun processes: 0, the
    batches are then built in-process), at most MAX_AUTO_WORKERS."""
    per_process = cpu_cores() // max(1, local_processes)
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


@dataclass
class PackedBatch:
    """A PendingBatch with all its tensors in one byte buffer: a worker hands a batch over as one
    shared-memory segment instead of one per tensor (each costs a file descriptor passed over a
    socket; for `tiny` one buffer doubled the loader's rate), and a GPU run pins one buffer."""

    buffer: torch.Tensor
    layout: list[tuple[str, torch.dtype, tuple[int, ...], int]]  # name, dtype, shape, byte offset
    batch: PendingBatch  # without tensors: cfg, side, videos, ... (and how many pending samples)

    @staticmethod
    def pack(pending: PendingBatch, shared: bool) -> "PackedBatch":
        tensors = dict(pending.tensors)
        for i, todo in enumerate(pending.pending or []):
            tensors.update({f"pending/{i}/{f.name}": getattr(todo, f.name) for f in dataclasses.fields(todo)})
        layout, offset = [], 0
        for name, t in tensors.items():
            layout.append((name, t.dtype, tuple(t.shape), offset))
            offset += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
        buffer = torch.empty(offset, dtype=torch.uint8)
        if shared:
            buffer.share_memory_()  # allocated there once: sending it to the training process copies nothing more
        for (name, dtype, shape, off), t in zip(layout, tensors.values()):
            _view(buffer, dtype, shape, off).copy_(t)
        # the shell keeps the class of each pending item (SideRaster, OwnPlanes), the buffer its tensors
        shell = dataclasses.replace(pending, tensors={}, pending=None if pending.pending is None else [type(p) for p in pending.pending])
        return PackedBatch(buffer, layout, shell)

    def unpack(self) -> PendingBatch:
        views = {name: _view(self.buffer, dtype, shape, off) for name, dtype, shape, off in self.layout}
        pending = None
        if self.batch.pending is not None:
            pending = [cls(*(views.pop(f"pending/{i}/{f.name}") for f in dataclasses.fields(cls))) for i, cls in enumerate(self.batch.pending)]
        return dataclasses.replace(self.batch, tensors=views, pending=pending)

    def pin_memory(self) -> "PackedBatch":
        return dataclasses.replace(self, buffer=self.buffer.pin_memory())


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...], offset: int) -> torch.Tensor:
    n = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
    return buffer[offset:offset + n].view(dtype).view(shape)


class StepBatches(IterableDataset):
    """The batches of steps [start, stop) for one rank as (step, PendingBatch), split between the
    DataLoader's workers by step (worker w takes steps start + w + k * workers)."""

    def __init__(self, spec: SamplerSpec, rank: int, batch: int, start: int, stop: int, side_of: Callable[[int], bool],
                 defer: bool = False):
        super().__init__()
        self.spec, self.rank, self.batch = spec, rank, batch
        self.start, self.stop = start, stop
        self.side_of = side_of  # must pickle (a module-level function or a functools.partial of one)
        self.defer = defer  # leave the mesh conditions to the training device (PairSampler.gather)
        self.sampler: PairSampler | None = None  # the training process may lend its own (workers=0)

    def __iter__(self) -> Iterator[tuple[int, PendingBatch | PackedBatch]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.sampler is None:
            self.sampler = self.spec.build()
        for step in range(self.start + worker, self.stop, workers):
            side = self.side_of(step)
            batch = self.sampler.gather(self.sampler.draw(step, self.rank, self.batch), side, defer=self.defer)
            yield step, batch if info is None else PackedBatch.pack(batch, shared=True)


def _quiet_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the training process handles it (finish the step,
    # save, stop) and shuts the workers down; they must not die first with a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import cv2

        cv2.setNumThreads(1)  # one core per worker: resizes must not fight the training process's threads
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass


class BatchLoader:
    """The training batches of one rank from step `start` on, on the training device.

    workers = 0: built in this process when asked for (today's behaviour); workers > 0: built by
    that many DataLoader processes, `prefetch` batches ahead each, pinned when the device is a GPU.
    L_side rasterising runs on the device when it is a GPU, in the workers otherwise."""

    def __init__(self, spec: SamplerSpec, rank: int, batch: int, start: int, stop: int, side_of: Callable[[int], bool],
                 device: torch.device | str, workers: int, prefetch: int = 2, sampler: PairSampler | None = None):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.device = torch.device(device)
        self.workers = workers
        self.prefetch = prefetch
        self.dataset = StepBatches(spec, rank, batch, start, stop, side_of, defer=self.device.type == "cuda")
        if workers == 0:
            self.dataset.sampler = sampler  # reuse the caller's (its caches, no second set of tracks)
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[tuple[int, TrainBatch]]:
        if self.workers == 0:
            items = iter(self.dataset)
        else:
            loader = DataLoader(self.dataset, batch_size=None, num_workers=self.workers, prefetch_factor=self.prefetch,
                                pin_memory=self.device.type == "cuda", worker_init_fn=_quiet_worker,
                                multiprocessing_context="spawn",
                                # its own generator: without one, starting the workers draws from torch's
                                # global RNG, which a checkpoint restores; resume would not be bit-exact
                                generator=torch.Generator().manual_seed(0))
            items = iter(loader)
        expected = self.start
        try:
            for step, pending in items:
                if step != expected:  # cannot happen with in-order DataLoaders; a silent reorder would break resume
                    raise RuntimeError(f"data loader delivered step {step} where step {expected} was due")
                expected += 1
                if isinstance(pending, PackedBatch):
                    pending = pending.unpack()
                yield step, pending.finish(self.device)
        finally:
            shutdown = getattr(items, "_shutdown_workers", None)
            if shutdown is not None:  # stop the workers now (a stopped run), not at garbage collection
                shutdown()
