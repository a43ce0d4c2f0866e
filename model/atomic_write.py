"""Files written so that a reader (another process, the next run after a crash or a power cut)
sees either the old or the new version, never half of one: write to a temporary file beside it,
fsync it, fsync the folder, rename, fsync the folder again.

Why both folder fsyncs: the rename is only durable once the folder's entry is on disk (the fsync
after it); the one before makes sure the temporary file's own entry and size reached the disk
before the rename can be, so that after a power cut the new name never points at an empty file
(ext4 / xfs may otherwise reorder the two)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data and size to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (names created, renamed, removed in it) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms / file systems where a folder cannot be opened: nothing more we can do
        return
    try:
        os.fsync(fd)
    except OSError:  # some network file systems refuse fsync on folders; their rename is atomic on the server
        pass
    finally:
        os.close(fd)


def publish(tmp: str | Path, final: str | Path) -> Path:
    """Rename the finished, closed file `tmp` to `final` durably (fsync of the file, of the folder
    before and after the rename)."""
    tmp, final = Path(tmp), Path(final)
    fsync_file(tmp)
    fsync_dir(tmp.parent)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def link_atomic(src: str | Path, dst: str | Path) -> Path:
    """Make `dst` another name of the file `src` (a hard link, no copy), replacing `dst` atomically;
    copies where the file system has no hard links."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    return publish(tmp, dst)


def save_npz_atomic(path: str | Path, arrays: dict, compressed: bool = False) -> Path:
    """Write arrays as an .npz file (its folder made if missing) so that readers see either the old
    or the new file; on an OSError (read-only folder, full disk) no temporary file is left and the
    error is raised."""
    import tempfile

    import numpy as np

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz", delete=False) as f:
            tmp = Path(f.name)
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        return publish(tmp, path)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that readers see either the old or the new file, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    publish(tmp, path)
