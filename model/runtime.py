"""Where torch runs: the device a command asked for and how many CPU threads it may use."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def resolve_device(name: str | None) -> str:
    """`name`, or cuda when available else cpu; ValueError when cuda is asked for but missing."""
    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} but CUDA is not available (this torch build or machine has no GPU)")
    return device


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` CPU threads inside the block (None: torch's choice) and restore the previous
    count after, so callers in the same process (tests, the viewer) keep their setting.

    One thread per process is the fast choice on a busy CPU: idle OpenMP threads spin-wait for each
    other there, and a step can get 10-100x slower."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
