"""`imp generate` end to end with a randomly initialised tiny checkpoint on real footage: a real
portrait driven by another person's real video (cross-identity), chained clips written as an MPI
clip that loads and renders; seeded reproducibility; --animate; and the clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")

from app.cli.imp import main  # noqa: E402
from model.geometry import camera, mpi  # noqa: E402
from model.formats.clip import load_clip  # noqa: E402
from model.net.config import TINY  # noqa: E402

PORTRAIT = "images/LivePortrait/s12.jpg"
DRIVING = "videos/dreamtalk/W009_front_neutral_level1_001.mp4"  # another person, 25 fps


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(autouse=True)
def keep_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _generate(*extra: str) -> list[str]:
    # one thread: the tiny model's work is too small to share, two threads on a busy CPU only contend
    return ["generate", "--steps", "1", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def cross_clip(shared_data, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "cross.mpi"
    code = main(_generate("--portrait", str(shared_data / PORTRAIT), "--driving", str(shared_data / DRIVING),
                          "--checkpoint", str(checkpoint), "-o", str(out), "--max-frames", "9", "--seed", "5"))
    assert code == 0
    return out


def test_generate_writes_a_chained_clip_in_the_portrait_crop_camera(cross_clip, capsys):
    clip = load_clip(cross_clip)
    # tiny clips are 8 frames: 9 frames = clip 0 (8) + clip 1 (8, its first frame dropped)
    assert len(clip) == 9
    assert clip.size == (TINY.res, TINY.res) and clip.num_planes == TINY.planes
    assert clip.fps == 25.0
    assert clip.background is not None and clip.background.shape == (3, TINY.res, TINY.res)
    np.testing.assert_allclose(clip.K, np.broadcast_to(camera.crop_intrinsics(TINY.res).numpy(), (9, 3, 3)))
    r = np.linalg.norm(clip.T_cam_from_head[:, :3, 3], axis=-1)
    assert np.all((r > 0.7) & (r < 1.5))  # the crop camera puts the head about 1 m away
    np.testing.assert_allclose(clip.near, r - mpi.NEAR_OFFSET, atol=1e-5)
    np.testing.assert_allclose(clip.far, r + mpi.FAR_OFFSET, atol=1e-5)
    # the head moves with the driver but starts at the portrait's pose, so frames differ in pose
    assert not np.allclose(clip.T_cam_from_head[0], clip.T_cam_from_head[-1], atol=1e-6)
    assert clip.alpha.max() > 0


def test_same_seed_same_clip(cross_clip, shared_data, checkpoint, tmp_path):
    again = tmp_path / "again.mpi"
    assert main(_generate("--portrait", str(shared_data / PORTRAIT), "--driving", str(shared_data / DRIVING),
                          "--checkpoint", str(checkpoint), "-o", str(again), "--max-frames", "9", "--seed", "5")) == 0
    a, b = load_clip(cross_clip), load_clip(again)
    for name in ("frontal", "residual", "alpha", "K", "T_cam_from_head", "near", "far", "background"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_animate_without_driving_video(shared_data, checkpoint, tmp_path):
    out = tmp_path / "anim.mpi"
    assert main(_generate("--portrait", str(shared_data / PORTRAIT), "--animate", "--checkpoint", str(checkpoint),
                          "-o", str(out), "--max-frames", "8", "--fps", "20", "--mode", "compact")) == 0
    clip = load_clip(out)
    assert len(clip) == 8 and clip.fps == 20.0 and clip.num_planes == TINY.planes


def test_generated_clip_renders_with_imp_render(cross_clip, tmp_path, gl_context):
    pytest.importorskip("app.cli.render")
    from model.formats.video import probe

    out = tmp_path / "front.mp4"
    assert main(["render", str(cross_clip), "-o", str(out)]) == 0
    info = probe(out)
    assert info.frames == 9 and (info.width, info.height) == (TINY.res, TINY.res)


def test_without_weights_it_says_so_and_fails(shared_data, tmp_path, monkeypatch, capsys):
    import model.resources

    empty = tmp_path / "assets"
    empty.mkdir()
    monkeypatch.setattr(model.resources, "resource_dir", lambda name: empty)
    out = tmp_path / "x.mpi"
    code = main(["generate", "--portrait", str(shared_data / PORTRAIT), "--animate", "-o", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "no trained weights are available" in err and "--checkpoint" in err


def test_clear_errors(shared_data, checkpoint, tmp_path, capsys):
    out = tmp_path / "x.mpi"
    portrait, video = str(shared_data / PORTRAIT), str(shared_data / DRIVING)

    def fails(args: list[str], *needles: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, err
        assert not out.exists()

    ckpt = ["--checkpoint", str(checkpoint)]
    fails(_generate("--portrait", str(tmp_path / "none.png"), "--driving", video, *ckpt, "-o", str(out)), "none.png", "no such portrait")
    fails(_generate("--portrait", portrait, "--driving", str(tmp_path / "none.mp4"), *ckpt, "-o", str(out)), "no such driving video")
    fails(_generate("--portrait", portrait, "--animate", "--checkpoint", str(tmp_path / "none.safetensors"), "-o", str(out)),
          "no such checkpoint")
    fails(_generate("--portrait", portrait, "--animate", "--checkpoint", portrait, "-o", str(out)), "not a safetensors file")
    from safetensors.torch import save_file

    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    fails(_generate("--portrait", portrait, "--animate", "--checkpoint", str(foreign), "-o", str(out)), "not an im-portrait checkpoint")
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    fails(_generate("--portrait", str(blank), "--animate", *ckpt, "-o", str(out)), "no face found")
    fails(_generate("--portrait", str(blank), "--animate", *ckpt, "-o", str(out), "--steps", "0"), "--steps must be at least 1")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    fails(_generate("--portrait", str(text), "--animate", *ckpt, "-o", str(out)), "cannot be read as an image")
    fails(_generate("--portrait", portrait, "--driving", str(text), *ckpt, "-o", str(out)), "notes.txt")
