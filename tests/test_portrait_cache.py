"""Prepared portraits on disk (model/data/portrait_cache.py): a portrait prepared once is read back
exactly, without tracking it again; another image or resolution is prepared afresh; a torn entry or
a cache that cannot be written never fails the preparation; and generating from a cached portrait
needs no MediaPipe import (imp-viewer's first frame)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")

from model.data.portrait_cache import PreparedCrop, default_cache_dir, load_prepared, portrait_key  # noqa: E402
from model.diffusion.pipeline import prepare_portrait, read_portrait_image  # noqa: E402
from model.net.config import TINY  # noqa: E402


def _same(a, b) -> None:
    for name in ("image", "matte", "background", "valid", "K"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    torch.testing.assert_close(a.reference, b.reference, rtol=0, atol=0)
    torch.testing.assert_close(a.code, b.code, rtol=0, atol=0)
    for name, value in a.track.to_arrays().items():
        np.testing.assert_array_equal(value, b.track.to_arrays()[name], err_msg=name)


def _no_tracking(monkeypatch) -> None:
    import model.tracking

    def fail(*args, **kwargs):
        raise AssertionError("the portrait was tracked again instead of read from the cache")

    monkeypatch.setattr(model.tracking, "track_image", fail)


def test_a_prepared_portrait_is_read_back_exactly_without_tracking(astronaut_path, tmp_path, monkeypatch):
    fresh = prepare_portrait(astronaut_path, TINY)
    first = prepare_portrait(astronaut_path, TINY, tmp_path)
    _same(fresh, first)
    entries = list((tmp_path / "portraits").glob("*.npz"))
    assert len(entries) == 1
    _no_tracking(monkeypatch)
    _same(fresh, prepare_portrait(astronaut_path, TINY, tmp_path))
    # the same pixels as an array: the same entry
    _same(fresh, prepare_portrait(read_portrait_image(astronaut_path), TINY, tmp_path))
    # another resolution, another image: not in the cache, so they would need tracking
    with pytest.raises(AssertionError, match="tracked again"):
        prepare_portrait(astronaut_path, replace(TINY, res=2 * TINY.res), tmp_path)
    edited = read_portrait_image(astronaut_path).copy()
    edited[0, 0] ^= 1
    with pytest.raises(AssertionError, match="tracked again"):
        prepare_portrait(edited, TINY, tmp_path)


def test_a_torn_entry_is_prepared_again_and_replaced(astronaut_path, tmp_path):
    rgb = read_portrait_image(astronaut_path)
    key = portrait_key(rgb, TINY.res)
    entry = tmp_path / "portraits" / f"{key}.npz"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"PK\x03\x04 half a zip file")
    assert load_prepared(tmp_path, key, TINY.res) is None
    p = prepare_portrait(rgb, TINY, tmp_path)
    stored = load_prepared(tmp_path, key, TINY.res)
    assert isinstance(stored, PreparedCrop)
    np.testing.assert_array_equal(stored.background, p.background)
    assert load_prepared(tmp_path, key, 2 * TINY.res) is None  # stored at another resolution: not used


def test_a_cache_that_cannot_be_written_only_warns(astronaut_path, tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="could not keep the prepared portrait"):
        p = prepare_portrait(astronaut_path, TINY, blocked)
    assert p.image.shape == (TINY.res, TINY.res, 3)


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IMP_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("IMP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "im-portrait"


def test_generating_from_a_cached_portrait_needs_no_mediapipe(tiny_checkpoint, astronaut_path, tmp_path):
    """The worker's path to the first clip (model, portrait, sliders driving, identity warp) in a
    fresh interpreter: with the portrait prepared before, MediaPipe is never imported (its import
    alone takes ~1 s); its mesh constants are read from the wheel's source file."""
    from model.diffusion.pipeline import Generator

    cfg_res = Generator.from_checkpoint(tiny_checkpoint, "cpu").cfg
    prepare_portrait(astronaut_path, cfg_res, tmp_path)
    code = ("import sys\n"
            "from model.data.driving import default_driving\n"
            "from model.diffusion.pipeline import Generator\n"
            f"g = Generator.from_checkpoint({str(tiny_checkpoint)!r}, 'cpu')\n"
            f"p = g.prepare({str(astronaut_path)!r}, {str(tmp_path)!r})\n"
            "frames = next(iter(g.generate_clips(default_driving(p.track, max_frames=g.cfg.frames), seed=0, steps=1)))\n"
            "print(len(frames), 'mediapipe' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False", done.stdout
    assert int(done.stdout.split()[-2]) > 0
