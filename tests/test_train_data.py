"""Training pairs (model/data/pairs.py) on real footage: shapes, alignment of the mesh conditions with
the frames, the reference-camera geometry of L_side batches, determinism and the conditions cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.geometry import camera, mpi
from model.net.config import get_config
from model.data.dataset import DatasetError
from model.data.pairs import PairSampler
from tests.train_fixtures import one_torch_thread, MICRO, conditions_cache, prepared_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory):
    return prepared_dataset(shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def sampler(data, tmp_path_factory):
    return PairSampler(data, get_config("tiny"), conditions_cache(tmp_path_factory), seed=3)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum()) / max(1, int((a | b).sum()))


def test_mpi_batch_shapes_and_mesh_on_the_person(sampler):
    cfg = sampler.cfg
    b = sampler.batch(step=0, rank=0, batch=2, side=False)
    B, T, R, D, C = 2, cfg.frames, cfg.res, cfg.planes, cfg.coord_channels
    assert b.portrait.shape == (B, 3 + C, R, R) and b.target.shape == (B, T, 3, R, R)
    assert b.matte.shape == (B, T, 1, R, R) and b.background.shape == (B, 3, R, R)
    assert b.coords.shape == (B, T, C, R, R) and b.mesh_alpha.shape == (B, T, D, R, R) and b.depths.shape == (B, T, D)
    assert float(b.target.min()) >= -1 and float(b.target.max()) <= 1
    assert torch.equal(b.T_tgt_from_mpi, torch.eye(4).expand(B, T, 4, 4))
    # L_mpi: the MPI camera is the target camera, so the mesh alphas composite to its coverage
    mask = 1 - (1 - b.mesh_alpha).prod(2, keepdim=True)
    assert torch.allclose(mask, b.mesh_coverage, atol=1e-4)
    # the tracked face mesh lies on the person: almost all of it inside the selfie matte
    cov = b.mesh_coverage > 0.5
    assert cov.float().mean() > 0.03
    assert float((b.matte[cov] > 0.5).float().mean()) > 0.9
    # planes: near = r - 0.15, far = r + 0.05 around the head distance of each target frame
    assert float(b.depths[..., 0].min()) > float(b.depths[..., -1].max())


def test_side_batch_renders_into_the_target_cameras(data, tmp_path_factory):
    """The reference-camera MPI of the target expressions, warped by T_tgt_from_mpi, must cover
    what the target frame's own mesh covers: that is what L_side compares with the real frame.
    The clip's head barely turns, so the reference pose is turned by 12 degrees about the joint."""
    sampler = PairSampler(data, get_config("tiny"), conditions_cache(tmp_path_factory), seed=3)
    v = [s.id for s in sampler.sources].index("LivePortrait-d18")
    src = sampler.sources[v]
    src.T[0] = camera.orbit(src.T[0], 0.21, 0.05)
    n, T = len(src), sampler.cfg.frames
    b = sampler.make_batch([(v, 0, n - T)], side=True)
    assert b.side and not torch.allclose(b.T_tgt_from_mpi[0, -1], torch.eye(4), atol=1e-2)
    alpha = b.mesh_alpha[0]
    zeros = torch.zeros(T, 3, *alpha.shape[-2:])
    K = b.K.expand(T, 3, 3)
    warped = mpi.render(zeros, zeros, alpha, b.depths[0], K, K, b.T_tgt_from_mpi[0]).mask
    unwarped = 1 - (1 - alpha).prod(1, keepdim=True)
    target_cov = b.mesh_coverage[0]
    iou_warped, iou_unwarped = _iou(warped, target_cov), _iou(unwarped, target_cov)
    assert iou_warped > 0.85
    assert iou_unwarped < iou_warped - 0.1
    # the portrait is the reference frame (its person continued past the video's edge) with its own coordinate map
    from model.data.pairs import image_to_tensor

    assert torch.equal(b.portrait[0, :3], image_to_tensor(sampler.sources[v].portrait(0)[0]))


def test_batches_are_a_function_of_seed_step_and_rank(sampler, data, tmp_path_factory):
    a = sampler.batch(step=5, rank=0, batch=2, side=False)
    again = PairSampler(data, get_config("tiny"), conditions_cache(tmp_path_factory), seed=3).batch(step=5, rank=0, batch=2, side=False)
    assert torch.equal(a.target, again.target) and torch.equal(a.coords, again.coords)
    picks = {tuple(sampler.draw(step, 0, 2)) for step in range(6)}
    assert len(picks) > 1
    assert any(sampler.draw(s, 0, 2) != sampler.draw(s, 1, 2) for s in range(6))


def test_conditions_cache_and_resizing(data, tmp_path, sampler):
    s = PairSampler(data, MICRO, tmp_path / "cache", seed=0)
    b = s.batch(0, 0, 1, side=False)
    assert b.target.shape[-1] == MICRO.res and b.K[0, 0, 0] == pytest.approx(2.5 * MICRO.res)
    # computed lazily, per video, on first use; prepare_cache fills the rest
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{b.videos[0]}-r{MICRO.res}"]
    s.prepare_cache()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(f"{v}-r{MICRO.res}" for v in s.video_ids)
    # a new sampler reads the cache (memory maps) and gives the same conditions
    s2 = PairSampler(data, MICRO, tmp_path / "cache", seed=0)
    c = s2.sources[0].own_conditions()
    assert isinstance(c["disparity"], np.memmap)
    assert torch.equal(s2.batch(0, 0, 1, side=False).mesh_alpha, b.mesh_alpha)


def test_unknown_video_ids_are_named(data):
    with pytest.raises(DatasetError, match="no-such-video"):
        PairSampler(data, MICRO, None, exclude=["no-such-video"])


def test_identity_batches_carry_the_reference_warped_onto_the_targets_and_the_real_pixel_mask(data, tmp_path):
    """A config with the identity condition: every L_mpi and L_side batch has the reference frame
    carried onto the clip's meshes in the MPI camera (as at generation), and `valid` marks the
    crop's real pixels, outside which the frames show the background instead of black."""
    import dataclasses

    cfg = dataclasses.replace(get_config("demo"), res=64)
    sampler = PairSampler(data, cfg, tmp_path / "cache", seed=3)
    for side in (False, True):
        b = sampler.batch(step=1, rank=0, batch=2, side=side)
        assert b.identity.shape == (2, cfg.frames, cfg.identity_channels, 64, 64)
        alpha, conf = b.identity[:, :, 3:4], b.identity[:, :, 4:5]
        assert float(alpha.min()) >= 0 and float(alpha.max()) <= 1 + 1e-6 and float(conf.max()) <= 1 + 1e-6
        # on the face the condition covers and is mostly trusted; it sits where the MPI camera sees the mesh
        on_mesh = 1 - (1 - b.mesh_alpha).prod(2, keepdim=True) > 0.5
        assert float((alpha[on_mesh] > 0.99).float().mean()) > 0.99 and float(conf[on_mesh].mean()) > 0.5
    assert b.valid.shape == (2, 1, 64, 64)
    invalid = b.valid[0, 0] < 0.5
    if invalid.any():  # d18's crop leaves the video: the target shows the background there
        torch.testing.assert_close(b.target[0, :, :, invalid], b.background[0, None, :, invalid].expand_as(b.target[0, :, :, invalid]),
                                   atol=0.02, rtol=0)


def test_the_reference_frame_is_continued_past_the_videos_edge_as_a_portrait_is(data):
    """d18's crop leaves its video: the reference frame's person runs on past the video's edge
    (model.data.matting.continue_person) in the portrait input and in the identity condition, as
    a close-up photo's does at generation; the targets stay as they are (outside `valid` the loss
    does not look)."""
    import dataclasses

    from model.data.dataset import PreparedDataset
    from model.data.pairs import VideoSource, image_to_tensor

    cfg = dataclasses.replace(get_config("demo"), res=64)
    ds = PreparedDataset(data)
    i = next(i for i, e in enumerate(ds.entries) if "d18" in e["id"])
    src = VideoSource(ds[i], ds.entries[i]["id"], cfg, None)
    outside = src.valid()[0].numpy() < 0.5
    assert outside.any()
    image, matte = src.portrait(0)
    continued = outside & (matte > 0.5)
    assert continued.sum() > 20
    assert (src.mattes(np.array([0]))[0, 0].numpy()[continued] < 0.5).mean() > 0.9  # the video's own matte stops at its edge
    np.testing.assert_array_equal(image[~outside], src._resize(src.video.images(np.array([0])))[0][~outside])
    # the identity condition of the reference's own pose carries the continued person
    ident = src.identity(0, src.vertices[:1], src.T[:1])
    assert float(ident[0, 3][torch.from_numpy(continued)].mean()) > 0.9
    sampler_portrait = image_to_tensor(image)
    assert float((sampler_portrait - src.frames(np.array([0]))[0]).abs()[:, torch.from_numpy(continued)].mean()) > 0.05
