"""Clip files (model.formats.clip): exact lossless round trip, compact quality, atomic writing, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.geometry import mpi
from model.formats.clip import ClipError, ClipReader, ClipWriter, MPIClip, MPIFrame, load_clip, open_clip, save_clip
from bench.synthetic import head_mpi, random_mpi


def _random_clip(n: int = 3, size: tuple[int, int] = (20, 28), planes: int = 5, background: bool = True, seed: int = 0) -> MPIClip:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        f = random_mpi(size, planes, seed=seed + i, background=background)
        # arbitrary float32 cameras: exactness must not depend on "nice" values
        f.K = rng.normal(size=(3, 3)).astype(np.float32)
        f.T_cam_from_head = rng.normal(size=(4, 4)).astype(np.float32)
        f.near, f.far = float(np.float32(rng.uniform(0.5, 1))), float(np.float32(rng.uniform(1, 2)))
        frames.append(f)
    return MPIClip.from_frames(frames, fps=30000 / 1001)


def _moving_head_clip(n: int, size: int = 64, planes: int = 8) -> MPIClip:
    head = head_mpi(size, planes)
    frames = []
    for i in range(n):
        roll = lambda a: np.roll(a, i, axis=-1)  # noqa: E731
        T = head.T_cam_from_head.copy()
        T[0, 3] = 0.001 * i
        frames.append(MPIFrame(roll(head.frontal), roll(head.residual), roll(head.alpha), head.K, T, head.near, head.far, head.background))
    return MPIClip.from_frames(frames, fps=25.0)


def _frontal_view(frame: MPIFrame) -> torch.Tensor:
    t = frame.tensors()
    return mpi.render_in_mpi_camera(t["frontal"], t["residual"], t["alpha"], t.get("background"))


def _assert_same_exact_fields(a: MPIClip, b: MPIClip) -> None:
    for name in ("K", "T_cam_from_head", "near", "far"):
        x, y = getattr(a, name), getattr(b, name)
        assert y.dtype == np.float32 and np.array_equal(x, y), name
    assert b.fps == a.fps
    if a.background is None:
        assert b.background is None
    else:
        assert b.background.dtype == np.uint8 and np.array_equal(a.background, b.background)


@pytest.mark.parametrize("background", [True, False])
def test_lossless_round_trip_is_bit_exact(tmp_path, background):
    clip = _random_clip(background=background)
    path = tmp_path / "clip.mpi"
    save_clip(clip, path, mode="lossless")
    back = load_clip(path)
    for name in ("frontal", "residual", "alpha"):
        assert getattr(back, name).dtype == np.uint8
        assert np.array_equal(getattr(clip, name), getattr(back, name)), name
    _assert_same_exact_fields(clip, back)
    with open_clip(path) as reader:
        assert (reader.info.mode, len(reader), reader.info.num_planes, reader.info.height, reader.info.width) == ("lossless", 3, 5, 20, 28)
        f = reader.frame(2)
        assert np.array_equal(f.alpha, clip.alpha[2]) and f.near == clip.near[2]
        f.alpha[0, 0, 0] = 1  # frames read from files are ordinary writable arrays


def test_compact_round_trip_keeps_cameras_exact_and_the_frontal_view_close(tmp_path):
    clip = _moving_head_clip(6)
    path = tmp_path / "clip.mpi"
    save_clip(clip, path, mode="compact")
    back = load_clip(path)
    assert back.frontal.shape == clip.frontal.shape and back.alpha.shape == clip.alpha.shape
    _assert_same_exact_fields(clip, back)
    for i in range(len(clip)):
        err = (_frontal_view(back.frame(i)) - _frontal_view(clip.frame(i))).pow(2).mean().item()
        assert -10 * np.log10(err) > 38.0, (i, err)
    assert path.stat().st_size < 0.25 * (clip.frontal.nbytes + clip.residual.nbytes + clip.alpha.nbytes)
    # the alpha mosaic is read back from the luma plane as coded: empty and opaque stay exact
    assert np.abs(back.alpha.astype(int) - clip.alpha.astype(int)).mean() < 1.0


def test_compact_handles_odd_sizes(tmp_path):
    full = _moving_head_clip(3, size=64)
    clip = MPIClip(full.frontal[..., 5:38, 9:56], full.residual[..., 5:38, 9:56], full.alpha[..., 5:38, 9:56],
                   full.K, full.T_cam_from_head, full.near, full.far, full.fps, full.background[:, 5:38, 9:56])
    save_clip(clip, tmp_path / "odd.mpi", mode="compact")
    back = load_clip(tmp_path / "odd.mpi")
    assert back.size == (33, 47) and back.num_planes == clip.num_planes
    assert np.abs(back.frontal.astype(int) - clip.frontal.astype(int)).mean() < 6.0
    _assert_same_exact_fields(clip, back)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "clip.mpi"
    frames = [_random_clip(1, seed=i).frame(0) for i in range(2)]
    with ClipWriter(path, "lossless", fps=10) as writer:
        writer.append(frames[0])
        assert not path.exists()  # nothing under the real name until close
        writer.append(frames[1])
    assert len(load_clip(path)) == 2
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="generator crashed"):
        with ClipWriter(path, "compact", fps=10) as writer:
            writer.append(frames[0])
            raise RuntimeError("generator crashed")
    assert path.read_bytes() == before  # the old clip survives a crashed rewrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mpi"]  # no temporary left behind


def test_writer_rejects_bad_frames(tmp_path):
    writer = ClipWriter(tmp_path / "a.mpi", "lossless")
    writer.append(random_mpi((8, 8), 3))
    with pytest.raises(ValueError, match="planes"):
        writer.append(random_mpi((8, 8), 4))
    writer.abort()
    with pytest.raises(ValueError, match="no frames"):
        ClipWriter(tmp_path / "b.mpi", "compact").close()
    with pytest.raises(ValueError, match="unknown clip mode"):
        ClipWriter(tmp_path / "c.mpi", "zip")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["lossless", "compact"])
def test_cut_files_are_refused(tmp_path, mode):
    path = tmp_path / "clip.mpi"
    save_clip(_moving_head_clip(2, size=16, planes=3), path, mode=mode)
    data = path.read_bytes()
    for keep in (4, 10, 30, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{keep}.mpi"
        cut.write_bytes(data[:keep])
        with pytest.raises(ClipError, match="is truncated") as info:
            load_clip(cut)
        assert str(cut) in str(info.value) and isinstance(info.value, ValueError)


def test_corrupt_bytes_fail_the_checksum(tmp_path):
    path = tmp_path / "clip.mpi"
    save_clip(_random_clip(), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ClipError, match="fails its checksum"):
        load_clip(path)


def test_foreign_and_missing_files_are_named(tmp_path):
    from PIL import Image

    from model.formats.video import VideoWriter

    png = tmp_path / "picture.mpi"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    with pytest.raises(ClipError, match="not an MPI clip.*PNG") as info:
        load_clip(png)
    assert str(png) in str(info.value)
    mp4 = tmp_path / "video.mp4"
    with VideoWriter(mp4, fps=10) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ClipError, match="MP4"):
        ClipReader(mp4)
    with pytest.raises(ClipError, match="no such clip file"):
        load_clip(tmp_path / "missing.mpi")


def test_frame_index_out_of_range(tmp_path):
    path = tmp_path / "clip.mpi"
    save_clip(_random_clip(2), path)
    with open_clip(path) as reader, pytest.raises(IndexError, match="frame 2 is out of range.*2 frames"):
        reader.frame(2)
