"""The checkpoint files of one stage of a run (RUN/<stage>/):

    step-000001200.safetensors   one per save, the last N kept (`imp train --keep-last`), plus the
                                 one the run resumed from
    latest.safetensors           another name (a hard link) of the newest step file: what `imp eval`,
                                 `--init` and people read

Every file appears whole or not at all (model/net/checkpoint.py writes to a temporary file, fsyncs
it and its folder, renames). A run killed at any moment (SIGKILL, power cut, preemption) leaves the
newest finished step file, and `newest_readable` finds it even if `latest` was not relinked yet.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from model.atomic_write import fsync_dir, link_atomic
from model.net.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from model.net.config import ModelConfig

LATEST = "latest.safetensors"
STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")


def step_path(stage_dir: Path, step: int) -> Path:
    return Path(stage_dir) / f"step-{step:09d}.safetensors"


def step_files(stage_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every step file, oldest first."""
    found = []
    for p in Path(stage_dir).glob("step-*.safetensors"):
        m = STEP_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save(stage_dir: Path, step: int, write: Callable[[Path], object], keep_last: int, protect: set[Path] | frozenset[Path] = frozenset()) -> Path:
    """Write step `step` with `write(path)` (an atomic writer), point `latest` at it, then delete
    step files older than the last `keep_last` except those in `protect`. Returns the step file."""
    stage_dir = Path(stage_dir)
    path = step_path(stage_dir, step)
    write(path)
    link_atomic(path, stage_dir / LATEST)
    prune(stage_dir, keep_last, protect | {path})
    return path


def prune(stage_dir: Path, keep_last: int, protect: set[Path] | frozenset[Path] = frozenset()) -> list[Path]:
    """Delete all but the newest `keep_last` step files (and those in `protect`); returns them."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    keep = {Path(p).resolve() for p in protect}
    files = step_files(stage_dir)
    gone = [p for _, p in files[:-keep_last] if p.resolve() not in keep]
    for p in gone:
        p.unlink(missing_ok=True)
    if gone:
        fsync_dir(stage_dir)
    return gone


def remove_temporaries(stage_dir: Path) -> list[Path]:
    """Delete the temporary files a killed save left behind (never read: their final names are
    renamed in only when complete)."""
    gone = [p for p in Path(stage_dir).glob("*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def newest_readable(stage_dir: Path, expected: ModelConfig | None = None,
                    warn: Callable[[str], None] = lambda msg: None) -> tuple[Path, Checkpoint] | None:
    """The newest checkpoint of the stage that loads (step files newest first, then `latest` for
    runs written before step files existed), or None when there is none. A file that does not
    load (a disk that lost it, a copy cut short) is reported through `warn` and skipped; a config
    mismatch is an error, not a reason to fall back."""
    stage_dir = Path(stage_dir)
    candidates = [p for _, p in reversed(step_files(stage_dir))]
    if (stage_dir / LATEST).is_file():
        candidates.append(stage_dir / LATEST)
    for path in candidates:
        try:
            return path, load_checkpoint(path, expected=expected)
        except CheckpointError as exc:
            if "does not match the requested config" in str(exc):
                raise
            warn(f"skipping unreadable checkpoint {path}: {exc}")
        except Exception as exc:  # safetensors' own errors for a truncated or damaged file
            warn(f"skipping unreadable checkpoint {path}: {type(exc).__name__}: {exc}")
    return None
