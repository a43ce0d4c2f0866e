"""`imp eval` and model/evaluation/reenactment.py: the image metrics, the SGBM stereo check and the side check on
real footage with an oracle MPI (real frames over the tracked mesh depth), the landmark distance,
and the command end to end with a trained checkpoint."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from app.cli import imp as cli
from model.net.config import get_config
from model.evaluation.generators import oracle_generator
from model.evaluation.metrics import l1, landmark_distance, psnr, ssim
from model.evaluation.reenactment import EvalSettings, evaluate
from model.data.pairs import VideoSource
from model.data.dataset import PreparedDataset
from tests.train_fixtures import one_torch_thread, MICRO, conditions_cache, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


def test_image_metrics():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    b = (a + 0.2).clamp(-1, 1)
    assert l1(a, a) == 0 and psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    mse = float(((a - b) / 2).square().mean())
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / mse))
    noisy = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    assert ssim(a, noisy) < ssim(a, (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)) < 1.0
    # masked: only the pixels inside count (the side check's face figures)
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[:, :, 8:24, 8:24] = True
    spoiled = torch.where(mask, a, -a)
    assert l1(spoiled, a, mask) == 0 and psnr(spoiled, a, mask) == math.inf and psnr(spoiled, a) < 10
    assert psnr(b, a, mask) == pytest.approx(10 * math.log10(1 / float(((a - b) / 2).square()[mask.expand_as(a)].mean())))
    assert math.isnan(psnr(b, a, torch.zeros_like(mask)))


def test_region_errors_split_the_error_where_it_is():
    from model.evaluation.reenactment import region_errors

    real = torch.zeros(2, 3, 8, 8)
    frames = real.clone()
    face = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    face[..., 2:4, 2:4] = True
    person = face.clone()
    person[..., 2:8, 1:6] = True
    frames[:, :, 6:8, 1:3] = 0.2  # wrong on the person off the face only (the torso)
    frames[:, :, 0, 0] = 1.0  # and on one background pixel, outside the valid region
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    valid[..., 0, 0] = False
    r = region_errors(frames, real, valid, face, person)
    assert r["face_psnr"] == math.inf and r["background_psnr"] == math.inf
    assert r["person_share"] == pytest.approx(1.0) and r["face_share"] == 0.0 and r["background_share"] == 0.0
    mse = (0.1 ** 2) * 4 / (5 * 6 - 4)  # 4 wrong pixels of the 26 off-face person pixels
    assert r["person_psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)


def test_oracle_on_real_footage_stereo_and_side(data):
    """Real frames painted over the tracked mesh depth: exact frontal view; SGBM on its 5 cm stereo
    pair finds the disparity the MPI claims (sub-pixel); the side check stays finite."""
    r = evaluate(str(data), get_config("tiny"), oracle_generator, None, EvalSettings(max_frames=6, landmarks=False, progress=False))
    assert r["frontal"]["l1"] < 1e-5 and r["frontal"]["ssim"] > 0.9999
    assert r["stereo"]["disparity_error_px"] < 0.5 and r["stereo"]["matched_fraction"] > 0.8
    assert 20 < r["side"]["psnr"] < 80 and len(r["per_video"]) == 2
    assert 10 < r["side"]["face_psnr"] < 80 and 0 < r["side"]["face_l1"] < 0.5


def test_self_reenactment_scores_the_mpi_as_generation_delivers_it(data):
    """A network that paints opaque white over the whole frame: generation cuts its alpha to a few
    pixels around the identity condition's person (model.diffusion.clips.keep_condition_outside),
    so away from the person the frames show the video's background, and the eval scores that."""
    import dataclasses

    from model.net.unet import MPIPrediction

    cfg = dataclasses.replace(get_config("tiny"), identity_warp=True, detail_channels=8)

    def painter(cond, real):
        B, T, _, R, _ = cond.identity.shape
        white = torch.ones(B, T, 3, R, R)
        alpha = torch.zeros(B, T, cfg.planes, R, R)
        alpha[:, :, 0] = 1.0
        return MPIPrediction(white, white, alpha)

    r = evaluate(str(data), cfg, painter, None, EvalSettings(max_frames=4, landmarks=False, identity=False, progress=False))
    # all white scores 4.9 dB there; cut, white stays only on the soft edge and the few pixels
    # around the person (a wide band at 64^2), and the rest is the video's background: 10 dB
    assert r["frontal"]["background_psnr"] > 8, r["frontal"]
    assert r["frontal"]["face_psnr"] < 8  # the person keeps the network's (white) paint


def test_landmark_distance_measures_a_shift(data):
    src = VideoSource(PreparedDataset(data)[0], "v", get_config("tiny"), None)
    frames = ((src.frames(np.arange(3)).permute(0, 2, 3, 1) + 1) * 127.5).round().byte().numpy()
    same, found = landmark_distance(frames, frames)
    assert same == 0.0 and found == 1.0
    shifted = np.roll(frames, 2, axis=2)
    d, found = landmark_distance(shifted, frames)
    assert found == 1.0 and 1.3 < d < 2.7


def test_eval_cli_with_a_checkpoint(data, tmp_path, tmp_path_factory, capsys):
    from model.training.loop import RunSettings, train
    from model.training.step import TrainOptions

    run = train(MICRO, TrainOptions(steps=1, lr=1e-3), RunSettings(out=tmp_path / "run", data=data, progress=False,
                                                                   tensorboard=False, cache_dir=conditions_cache(tmp_path_factory)))
    out = tmp_path / "eval.json"
    vid = PreparedDataset(data).entries[0]["id"]
    code = cli.main(["eval", "--checkpoint", str(run.checkpoint), "--data", str(data), "--videos", vid, "--max-frames", "4",
                     "--sample-steps", "1", "--no-landmarks", "--json", str(out), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "not held out" in captured.err  # the checkpoint was trained on this video
    assert "SGBM err px" in table and "side PSNR" in table
    result = json.loads(out.read_text())
    assert result["videos"] == [vid] and result["stage"] == "bootstrap" and result["step"] == 1
    assert set(result) >= {"frontal", "side", "stereo", "landmarks"}
    assert 0 < result["frontal"]["l1"] < 1 and result["frontal"]["psnr"] > 0 and -1 <= result["frontal"]["ssim"] <= 1
    assert result["side"]["psnr"] > 0 and result["side"]["face_psnr"] > 0
    assert "face PSNR" in table and "frontal error by region" in table
    shares = [result["frontal"][f"{r}_share"] for r in ("face", "person", "background")]
    assert all(0 <= v <= 1 for v in shares) and sum(shares) == pytest.approx(1.0, abs=1e-6)
    assert all(result["frontal"][f"{r}_psnr"] > 0 for r in ("face", "person", "background"))
    code = cli.main(["eval", "--checkpoint", str(run.checkpoint), "--data", str(data), "--videos", "nope", "--quiet"])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_eval_without_weights_says_so(data, capsys, monkeypatch):
    import model.net.checkpoint

    monkeypatch.setattr(model.net.checkpoint, "DEMO_CHECKPOINT", "no-such-demo-model.safetensors")
    assert cli.main(["eval", "--data", str(data)]) == 2
    assert "no trained weights are available" in capsys.readouterr().err


def test_row_names_never_collide(tmp_path):
    from app.cli.eval import row_name

    state = {"step": 100}
    rows: dict = {}
    for path in (tmp_path / "runA" / "alternating" / "latest.safetensors", tmp_path / "snap-1.safetensors",
                 tmp_path / "other" / "snap-1.safetensors", tmp_path / "runA" / "alternating" / "latest.safetensors"):
        rows[row_name(path, state, rows)] = {}
    assert list(rows) == ["runA/alternating@100", "snap-1@100", "snap-1@100 (2)", "runA/alternating@100 (2)"]


def test_stereo_against_the_mesh_tells_a_flat_mpi_from_a_shaped_one(data):
    """A flat MPI (real frames on one plane) is perfectly self-consistent in stereo but its fused
    disparity misses the face's relief; the oracle with the tracked mesh's depth matches both."""
    from model.net.unet import MPIPrediction

    def flat(cond, real):
        alpha = torch.zeros_like(cond.mesh_alpha)
        alpha[:, :, alpha.shape[2] // 2] = 1.0
        return MPIPrediction(real, real, alpha)

    settings = EvalSettings(max_frames=6, landmarks=False, progress=False)
    shaped = evaluate(str(data), get_config("tiny"), oracle_generator, None, settings)["stereo"]
    flat_r = evaluate(str(data), get_config("tiny"), flat, None, settings)["stereo"]
    assert flat_r["disparity_error_px"] < shaped["disparity_error_px"] < 0.2  # one plane: nothing to get wrong
    assert shaped["mesh_error_px"] == pytest.approx(shaped["disparity_error_px"])  # its depth is the mesh's
    # no relief: at the fixture's 64² the face's relief is a fraction of a pixel of disparity, and
    # the flat MPI misses it by about twice the oracle's stereo error (1.96x with its tracks of 2026-12-07)
    assert flat_r["mesh_error_px"] > 1.5 * shaped["mesh_error_px"]


def test_cross_identity_with_the_warp_baseline_keeps_the_portraits_identity(data, shared_data, tmp_path):
    """The warp carries the portrait's own pixels: dlib recognises the portrait's person in its
    frames, and its face follows the retargeted driving mesh (MediaPipe finds it where the mesh is)."""
    from model.evaluation.cross_identity import CrossSettings, evaluate_cross
    from model.evaluation.generators import warp_generator

    cfg = get_config("demo")
    vid = PreparedDataset(data).entries[0]["id"]
    portrait = shared_data / "images" / "dreamtalk" / "f30.png"
    r = evaluate_cross(str(data), cfg, warp_generator, [str(portrait)], [vid],
                       CrossSettings(frames=6, samples=tmp_path / "sheets", progress=False))
    assert r["identity"]["detected_fraction"] == 1.0
    assert r["identity"]["distance"] < 0.5 and r["identity"]["same_person_rate"] == 1.0, r["identity"]
    assert r["landmarks"]["distance_px"] < 3.0, r["landmarks"]
    assert (tmp_path / "sheets" / f"f30--{vid}.png").is_file()
    assert r["per_pair"][0]["portrait"] == "f30.png" and r["per_pair"][0]["frames"] == 6


def test_eval_cli_cross_identity_and_warp_baseline(data, shared_data, tmp_path, capsys):
    """`imp eval --portraits ... --warp-baseline`: a checkpoint's row and the warp's, in both tables."""
    import dataclasses

    from model.net.checkpoint import save_checkpoint
    from model.net.unet import MPIUNet

    cfg = dataclasses.replace(get_config("demo"), name="demo-micro", res=32, colour_channels=(16, 16, 16),
                              geometry_channels=(8, 8, 8), stem_channels=16, time_channels=16)
    torch.manual_seed(0)
    ckpt = tmp_path / "id.safetensors"
    save_checkpoint(ckpt, MPIUNet(cfg), cfg, {"step": 0})
    vid = PreparedDataset(data).entries[1]["id"]
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--videos", vid, "--max-frames", "3",
                     "--portraits", str(shared_data / "images" / "dreamtalk" / "f30.png"), "--cross-frames", "4",
                     "--sample-steps", "1", "--no-landmarks", "--warp-baseline", "--json", str(out), "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    assert "cross-identity" in table and "same person" in table and table.count("warp baseline") == 3  # self-reenactment, its regions, cross-identity
    result = json.loads(out.read_text())["checkpoints"]
    warp = result["warp baseline (no learning)"]
    assert warp["cross_identity"]["per_pair"][0]["video"] == vid and "identity" in warp and warp["frontal"]["psnr"] > 10


def test_eval_cli_warp_only_runs_no_network(data, tmp_path, capsys):
    """`imp eval --warp-only`: the warp baseline's row alone, at the checkpoint's config, with no
    network loaded (a file without weights would fail to load); a config without the identity
    condition is a clear error."""
    import dataclasses

    from safetensors import safe_open
    from safetensors.torch import save_file

    from model.net.checkpoint import save_checkpoint
    from model.net.unet import MPIUNet

    cfg = dataclasses.replace(get_config("demo"), name="demo-micro", res=32, colour_channels=(16, 16, 16),
                              geometry_channels=(8, 8, 8), stem_channels=16, time_channels=16)
    ckpt = tmp_path / "cfg.safetensors"
    save_checkpoint(ckpt, MPIUNet(cfg), cfg, {"step": 0})
    with safe_open(str(ckpt), "pt") as f:
        metadata = f.metadata()
    config_only = tmp_path / "config-only.safetensors"  # the config without weights: only read_config can use it
    save_file({"unused": torch.zeros(1)}, str(config_only), metadata=metadata)
    vid = PreparedDataset(data).entries[0]["id"]
    out = tmp_path / "warp.json"
    code = cli.main(["eval", "--warp-only", "--checkpoint", str(config_only), "--data", str(data), "--videos", vid,
                     "--max-frames", "3", "--no-landmarks", "--no-identity", "--json", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert table.count("warp baseline") == 2 and "demo-micro" not in table  # self-reenactment and its regions, no model row
    result = json.loads(out.read_text())
    assert result["method"] == "warp" and result["videos"] == [vid] and result["frontal"]["psnr"] > 10

    code = cli.main(["eval", "--warp-only", "--checkpoint", str(ckpt), str(config_only), "--data", str(data), "--quiet"])
    assert code == 2 and "takes one --checkpoint" in capsys.readouterr().err

    plain = dataclasses.replace(cfg, name="plain-micro", identity_warp=False)
    save_checkpoint(tmp_path / "plain.safetensors", MPIUNet(plain), plain, {"step": 0})
    code = cli.main(["eval", "--warp-only", "--checkpoint", str(tmp_path / "plain.safetensors"), "--data", str(data),
                     "--videos", vid, "--max-frames", "3", "--quiet"])
    assert code == 2 and "needs a config with the identity condition" in capsys.readouterr().err
