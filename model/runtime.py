"""Where torch runs: the device a command asked for and how many CPU threads it may use."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


DEVICE_CHOICES = "auto|cpu|cuda[:N]"


def check_device(name: str | None) -> str:
    """`name` (auto|cpu|cuda[:N]; None = auto) normalised, or ValueError saying what to pass, without
    importing torch: imp-viewer checks --device before its generation worker starts, and the worker
    resolves "auto" (torch's import takes 1.5-1.8 s of the first frame here)."""
    name = (name or "auto").strip().lower()
    kind, sep, index = name.partition(":")
    if name not in ("auto", "cpu") and (kind != "cuda" or (sep and not index.isdigit())):
        raise ValueError(f"--device {name!r}: expected {DEVICE_CHOICES}")
    return name


def worker_device(name: str | None) -> str:
    """--device for a generation worker that resolves it itself: "auto" as it is (resolving it
    imports torch, which belongs in the worker), anything else resolved now, so that a missing or
    misspelt GPU is a clear error before the worker starts."""
    name = check_device(name)
    return name if name == "auto" else resolve_device(name)


def resolve_device(name: str | None) -> str:
    """The torch device for `name` (auto|cpu|cuda[:N]; None = auto): auto is cuda when a GPU is
    available, else cpu. ValueError saying what to pass when the name is unknown or the GPU missing."""
    name = check_device(name)
    if name == "cpu":
        return name
    import torch  # here, not at import: argparse setup (add_device_argument) stays light

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    _, _, index = name.partition(":")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name} but CUDA is not available (this torch build or machine has no GPU); "
                         "use --device cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"--device {name} but this machine has {torch.cuda.device_count()} GPU(s): cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}")
    return name


def add_device_argument(parser, what: str = "torch device") -> None:
    """The --device option every command that runs the network shares (default auto)."""
    parser.add_argument("--device", default="auto", metavar=DEVICE_CHOICES,
                        help=f"{what}: auto (default: CUDA when a GPU is present, else the CPU), cpu, cuda or cuda:N")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` CPU threads inside the block (None: torch's choice) and restore the previous
    count after, so callers in the same process (tests, the viewer) keep their setting.

    One thread per process is the fast choice on a busy CPU: idle OpenMP threads spin-wait for each
    other there, and a step can get 10-100x slower."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def single_threaded_blas() -> None:
    """NumPy's BLAS (OpenBLAS) on one thread for the rest of this process.

    After every matrix product, however small, OpenBLAS's idle threads spin (sched_yield) and its
    caller waits for them spinning too: in imp-viewer, the per-frame camera maths of 3x3 and 4x4
    matrices kept a whole core of 2 busy, taken from the generation worker. The matrices of the
    render loop and of the generation worker's NumPy code are far too small for threads to pay.
    (torch has thread pools of its own: `torch_threads`.)"""
    import numpy  # noqa: F401 - loads OpenBLAS: threadpoolctl limits only the libraries already loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
