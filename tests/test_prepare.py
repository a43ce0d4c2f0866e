"""`imp prepare` on real footage: the dataset it writes, the videos it skips and why, resuming after
an interruption, and the crop geometry."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from app.cli import imp as cli
from model.geometry import camera
from model.atomic_write import write_json_atomic
from model.data import dataset, matting, prepare
from model.formats import video
from model.data.prepare import PrepareConfig, PrepareError, prepare_dataset
from model.tracking.crop import crop_affine, crop_image

SHORT = dict(max_frames=20, min_frames=8)


def _videos(shared_data):
    return [shared_data / "videos/dreamtalk/W009_front_neutral_level1_001.mp4", shared_data / "videos/LivePortrait/d18.mp4"]


def _quiet(msg: str) -> None:
    pass


def test_prepare_writes_dataset_and_skips_bad_videos(shared_data, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    a, b = _videos(shared_data)
    # a corrupt file: the first 3 kB of a real mp4
    (inputs / "corrupt.mp4").write_bytes(a.read_bytes()[:3000])
    # a real but too short clip (5 frames) and a clip without a face (noise)
    frames, fps = video.read_video(b, max_frames=5)
    with video.VideoWriter(inputs / "short.mp4", fps) as w:
        for f in frames:
            w.write(f)
    rng = np.random.default_rng(0)
    with video.VideoWriter(inputs / "noface.mp4", 25) as w:
        for _ in range(12):
            w.write(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    out = tmp_path / "ds"
    code = cli.main(["prepare", str(a), str(b), str(inputs), "-o", str(out), "--res", "64",
                     "--max-frames", "20", "--min-frames", "8", "--quiet"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    status = {e["source"].split("/")[-1]: e for e in manifest["videos"]}
    assert status[a.name]["status"] == "ok" and status[a.name]["frames"] == 20
    assert status[b.name]["status"] == "ok" and status[b.name]["frames"] == 20
    assert status["corrupt.mp4"]["status"] == "skipped" and "unreadable" in status["corrupt.mp4"]["reason"]
    assert status["short.mp4"]["status"] == "skipped" and "too short" in status["short.mp4"]["reason"]
    assert status["noface.mp4"]["status"] == "skipped" and "no face" in status["noface.mp4"]["reason"]
    assert not list(out.glob(".partial-*"))

    data = dataset.PreparedDataset(out)
    assert len(data) == 2 and data.total_frames == 40 and data.res == 64
    for v in data:
        assert v.frames.shape == (20, 64, 64, 3) and v.frames.dtype == np.uint8
        assert v.mattes.shape == (20, 64, 64) and v.background.shape == (64, 64, 3)
        assert isinstance(v.frames, np.memmap)
        track = v.track
        assert len(track) == 20
        # the crop camera is exact: the track's own resized-crop camera, and crop_intrinsics(res)
        assert np.allclose(v.K, track.crop_camera(64), atol=1e-4)
        assert np.allclose(v.K, camera.crop_intrinsics(64).numpy())
        # the face (landmarks in crop pixels) is on the person in the matte, and inside the crop
        lm = v.landmarks()
        assert lm.shape == (20, 478, 2)
        nose = np.round(lm[:, 1]).astype(int)  # landmark 1: tip of the nose
        assert ((nose >= 0) & (nose < 64)).all()
        assert np.mean([v.mattes[i, y, x] for i, (x, y) in enumerate(nose)]) > 200
        # the background has no person in it where the face is (it differs from the frames there)
        x, y = nose[0]
        assert np.abs(v.background[y, x].astype(int) - v.frames[0, y, x].astype(int)).sum() > 30
        # outside the source frame nothing is made up: black frames, zero mattes
        assert np.allclose(dataset.crop_affine_from_meta(v.meta), crop_affine(track.K, 64), atol=1e-5)
        valid = v.valid_mask
        assert abs(valid.mean() - v.meta["inside_fraction"]) < 1e-6
        outside = ~valid
        # (one pixel of bilinear/box-filter blending at the image's edge)
        import cv2

        outside = cv2.erode(outside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert (v.frames[:, outside] == 0).all() and (v.mattes[:, outside] == 0).all()
        batch = v.read([3, 4, 5, 6])
        assert batch["images"].shape == (4, 3, 64, 64) and batch["mattes"].shape == (4, 1, 64, 64)
        real = v.frames[3].transpose(2, 0, 1) / 127.5 - 1.0
        assert np.allclose(batch["images"][0][:, valid], real[:, valid], atol=1e-6)
        # ... and the model sees no black frame: outside the source the background, extended over the crop
        bg = v.background.transpose(2, 0, 1) / 127.5 - 1.0
        assert np.allclose(batch["images"][0][:, ~valid], bg[:, ~valid], atol=1e-6)
        assert (v.background[outside] > 0).any(-1).mean() > 0.99  # inpainted, not the black fill
        # an older dataset (no meta "background") stored a background with the black border
        # inpainted into it: it is rebuilt from the frames, the same as a fresh preparation's
        assert v.meta["background"] == dataset.BACKGROUND_FORMAT
        if not valid.all():
            old = tmp_path / "old" / v.path.name
            shutil.copytree(v.path, old)
            cv2.imwrite(str(old / "background.png"), np.zeros_like(v.background))  # stands for the stale file
            old_meta = {k: val for k, val in v.meta.items() if k != "background"}
            assert np.array_equal(dataset.PreparedVideo(old, old_meta).background, v.background)
        assert -1.0 <= batch["images"].min() and batch["images"].max() <= 1.0
        assert np.allclose(batch["vertices_head"], track.vertices_head()[3:7])
        with pytest.raises(IndexError):
            v.read([20])
    # the 256 x 256 dreamtalk clip is filled by the face: its tracker crop reaches beyond the frame
    assert dataset.PreparedVideo.open(out / status[a.name]["id"]).meta["inside_fraction"] < 0.9


def test_resume_after_interruption_does_not_redo_finished_videos(shared_data, tmp_path, monkeypatch):
    a, b = _videos(shared_data)
    out = tmp_path / "ds"
    cfg = PrepareConfig(res=48, **SHORT)
    prepare_dataset([a], out, cfg, progress=False, log=_quiet)
    first = next(p for p in out.iterdir() if p.is_dir())
    stamp = (first / "frames.npy").stat().st_mtime_ns

    # interrupted while writing the second video (Ctrl-C in the middle of its frames)
    calls = {"n": 0}
    real_call = matting.SelfieMatter.__call__

    def interrupted(self, image):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_call(self, image)

    monkeypatch.setattr(matting.SelfieMatter, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([a, b], out, cfg, progress=False, log=_quiet)
    monkeypatch.setattr(matting.SelfieMatter, "__call__", real_call)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["status"] for e in manifest["videos"]] == ["ok"]  # b is not listed as done
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [first.name]

    # what a hard kill (no chance to clean up) leaves: a half-written folder for b
    partial = out / (dataset.PARTIAL_PREFIX + prepare.video_id(b, set()))
    partial.mkdir()
    (partial / "frames.npy").write_bytes(b"\x93NUMPY half")
    messages = []
    manifest = prepare_dataset([a, b], out, cfg, progress=False, log=messages.append)
    assert any("interrupted" in m for m in messages)
    assert [e["status"] for e in manifest["videos"]] == ["ok", "ok"]
    assert (first / "frames.npy").stat().st_mtime_ns == stamp  # a was not redone
    assert not partial.exists()
    assert len(dataset.PreparedDataset(out)) == 2

    # a third run has nothing to do and changes nothing
    before = (out / "manifest.json").read_text()
    prepare_dataset([a, b], out, cfg, progress=False, log=_quiet)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(before)


def test_inputs_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="no video files"):
        prepare.find_videos([empty])
    assert cli.main(["prepare", str(empty), "-o", str(tmp_path / "ds"), "--quiet"]) == 2
    assert "no video files in this folder" in capsys.readouterr().err
    with pytest.raises(PrepareError, match="no such file"):
        prepare.find_videos([tmp_path / "missing.mp4"])
    # an existing dataset at another resolution is not silently mixed
    (tmp_path / "ds2").mkdir()
    write_json_atomic(tmp_path / "ds2" / "manifest.json", {"version": 1, "res": 64, "videos": []})
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    with pytest.raises(PrepareError, match="--res 64"):
        prepare_dataset([clip], tmp_path / "ds2", PrepareConfig(res=128), progress=False, log=_quiet)


def test_crop_maps_source_points_to_the_crop_camera():
    """A dot at source pixel p lands at K_crop K_src^-1 p, with and without downscaling."""
    from model.tracking.crop import crop_K

    H, W = 300, 420
    p = np.array([250.0, 140.0])
    yy, xx = np.mgrid[0:H, 0:W]
    img = (np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 6.0**2)) * 255).astype(np.float32)
    for crop, res in (((120.0, 40.0, 256.0), 64), ((-30.0, -50.0, 400.0), 200), ((200.0, 100.0, 100.0), 128)):
        K = crop_K(np.array(crop, np.float32))
        A = crop_affine(K, res)
        out = crop_image(img, A, res).astype(np.float64)
        ys, xs = np.mgrid[0:res, 0:res]
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        expected = (A @ np.array([p[0], p[1], 1.0]))[:2]
        assert np.abs(centroid - expected).max() < 0.05, (crop, res, centroid, expected)
        assert np.allclose(camera.crop_intrinsics(res).numpy(), A @ K, atol=1e-3)
    with pytest.raises(ValueError, match="square-pixel"):
        crop_affine(np.array([[100.0, 0, 10], [0, 120.0, 10], [0, 0, 1]]), 64)


def test_crop_warps_only_where_the_image_reaches():
    """A crop far larger than its frame (a small video) samples only the blocks the frame reaches:
    the same picture as warping the whole (m res)^2 canvas, up to OpenCV's fixed-point rounding,
    and exactly 0 around it."""
    import cv2

    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (120, 140, 3), np.uint8), (0, 0), 2)
    res = 64
    for s, tx, ty in ((0.16, 30.0, 25.0), (0.3, -10.0, 40.0), (0.9, 5.0, -20.0), (1.4, -100.0, -60.0), (0.2, 200.0, 0.0), (0.25, 0.0, 0.0)):
        A = np.array([[s, 0.0, tx], [0.0, s, ty], [0.0, 0.0, 1.0]])
        m = max(1, int(round(1.0 / s))) if s < 1.0 else 1
        Am = (np.array([[m, 0.0, (m - 1) / 2.0], [0.0, m, (m - 1) / 2.0], [0.0, 0.0, 1.0]]) @ A)[:2]
        full = cv2.warpAffine(img, Am, (m * res, m * res), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        full = cv2.resize(full, (res, res), interpolation=cv2.INTER_AREA).astype(int)
        out = crop_image(img, A, res).astype(int)
        assert out.shape == full.shape
        assert np.abs(out - full).max() <= 2, (s, tx, ty)
        assert np.array_equal(out > 0, full > 0), (s, tx, ty)  # the same support: no block left out
    assert crop_image(img, np.array([[0.5, 0, 500.0], [0, 0.5, 0.0], [0, 0, 1]]), res).max() == 0  # misses it


def _listing(root) -> list[tuple]:
    m = json.loads((root / "manifest.json").read_text())
    return [(e["id"], e["status"], e["frames"], e.get("found_fraction")) for e in m["videos"]]


def test_workers_and_shards_make_the_one_process_dataset(shared_data, tmp_path):
    """Two worker processes, and two shards merged (written into one folder, or into their own
    folders), give the dataset one process gives: same manifest, in the same order, same bytes."""
    videos = _videos(shared_data) + [shared_data / "videos/dreamtalk/M030_front_neutral_level1_001.mp4"]
    cfg = PrepareConfig(res=32, max_frames=12, min_frames=8)
    one = tmp_path / "one"
    prepare_dataset(videos, one, cfg, progress=False, log=_quiet)
    expected = _listing(one)
    assert [s for _, s, _, _ in expected] == ["ok"] * 3

    two = tmp_path / "two"
    prepare_dataset(videos, two, cfg, progress=False, log=_quiet, workers=2)

    shared = tmp_path / "shared"
    for i in (1, 0):
        prepare_dataset(videos, shared, cfg, progress=False, log=_quiet, shard=prepare.Shard(i, 2))
    assert sorted(p.name for p in shared.glob("manifest*.json")) == ["manifest-shard-0-of-2.json", "manifest-shard-1-of-2.json"]
    with pytest.raises(dataset.DatasetError, match="--merge"):
        dataset.PreparedDataset(shared)
    assert cli.main(["prepare", "--merge", str(shared), "--quiet"]) == 0
    assert not list(shared.glob("manifest-shard-*"))

    apart = [tmp_path / f"shard{i}" for i in range(2)]
    for i, folder in enumerate(apart):
        prepare_dataset(videos, folder, cfg, progress=False, log=_quiet, shard=prepare.Shard(i, 2))
    assert len(json.loads((apart[0] / "manifest-shard-0-of-2.json").read_text())["videos"]) == 2  # videos 0 and 2
    merged = tmp_path / "merged"
    merged.mkdir()
    prepare.merge_shards(merged, apart, log=_quiet)
    assert not any(f.exists() for f in apart)  # their videos moved in, the emptied folders removed

    for root in (two, shared, merged):
        assert _listing(root) == expected, root
        for vid, *_ in expected:
            for name in ("frames.npy", "mattes.npy", "background.png"):
                assert (root / vid / name).read_bytes() == (one / vid / name).read_bytes(), (root, vid, name)
    # resumable as before: a sharded run over the merged dataset finds its videos done and redoes none
    stamps = {vid: (shared / vid / "frames.npy").stat().st_mtime_ns for vid, *_ in expected}
    again = prepare_dataset(videos, shared, cfg, progress=False, log=_quiet, shard=prepare.Shard(0, 2))
    assert [e["id"] for e in again["videos"]] == [expected[0][0], expected[2][0]]
    assert stamps == {vid: (shared / vid / "frames.npy").stat().st_mtime_ns for vid, *_ in expected}


def test_preparing_a_video_does_without_torch(shared_data, tmp_path):
    """What a spawned --workers process runs (track, crop, matte, write) never imports torch: its
    import alone (~1.4 s) would be most of a worker's start-up."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from model.data.prepare import PrepareConfig, _prepare_one; "
            f"out = _prepare_one(Path({str(_videos(shared_data)[1])!r}), Path({str(tmp_path)!r}), 'd18', "
            "PrepareConfig(res=32, max_frames=8, min_frames=4), False, None); "
            "print(out[0], 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["ok", "False"], done.stdout
    assert (tmp_path / "d18" / "meta.json").exists()


def test_imp_prepare_does_without_torch(shared_data, tmp_path):
    """`imp prepare` as a whole, its command line included, never imports torch: `imp` reads the
    arguments of the command it runs only, and other commands' modules import torch."""
    import subprocess
    import sys

    code = ("import sys; from app.cli.imp import main; "
            f"code = main(['prepare', {str(_videos(shared_data)[1])!r}, '-o', {str(tmp_path / 'ds')!r}, '--res', '32', "
            "'--max-frames', '8', '--min-frames', '4', '--quiet']); "
            "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["videos"][0]["status"] == "ok"


def test_shard_and_merge_errors(tmp_path, capsys):
    assert prepare.Shard.parse("3/8") == prepare.Shard(3, 8)
    for bad in ("8/8", "-1/2", "1-2", "a/b"):
        with pytest.raises(PrepareError, match="--shard"):
            prepare.Shard.parse(bad)
    assert cli.main(["prepare", "--merge", str(tmp_path), "--quiet"]) == 2
    assert "nothing to merge" in capsys.readouterr().err
    for i, res in enumerate((64, 128)):
        write_json_atomic(tmp_path / f"manifest-shard-{i}-of-2.json", {"version": 1, "res": res, "videos": []})
    with pytest.raises(PrepareError, match="different --res"):
        prepare.merge_shards(tmp_path, log=_quiet)
    assert cli.main(["prepare", "--quiet"]) == 2 and "-o DATASET" in capsys.readouterr().err
