"""Generation pipeline (model/diffusion/pipeline.py) with a randomly initialised tiny model on a real portrait:
portrait preparation, clip chaining and its frame counts, equality with the sampler's own chained
sampling, seeded reproducibility, and the MPI frames' cameras."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mediapipe")

from model.geometry import camera, mpi  # noqa: E402
from model.net.config import TINY  # noqa: E402
from model.diffusion.process import Conditions  # noqa: E402
from model.data.driving import DrivingFrames, default_driving  # noqa: E402
from model.diffusion.pipeline import Generator, alpha_to_uint8, image_to_model, mesh_inputs, model_to_uint8  # noqa: E402
from model.diffusion.sampler import DDIMScheduler, Guidance, sample_video  # noqa: E402
from model.net.unet import MPIUNet  # noqa: E402

PORTRAIT = "images/LivePortrait/s12.jpg"


@pytest.fixture(scope="module")
def one_thread():
    # the tiny model's work is far too small to share out; two threads on a busy CPU only contend
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def generator(shared_data, one_thread) -> Generator:
    torch.manual_seed(0)
    gen = Generator(MPIUNet(TINY))
    gen.prepare(shared_data / PORTRAIT)
    return gen


def _run(gen: Generator, frames: int, seed: int = 0, steps: int = 1, **kw) -> list[list]:
    return list(gen.generate_clips(default_driving(gen.portrait.track, max_frames=frames), seed=seed, steps=steps, **kw))


def test_prepared_portrait_is_the_head_crop_with_its_coordinate_map(generator):
    p = generator.portrait
    R = TINY.res
    assert p.image.shape == (R, R, 3) and p.background.shape == (R, R, 3) and p.matte.shape == (R, R)
    np.testing.assert_allclose(p.K, camera.crop_intrinsics(R).numpy())
    assert p.reference.shape == (3 + TINY.coord_channels, R, R)
    torch.testing.assert_close(p.reference[:3], image_to_model(p.image))
    code = p.reference[3:]
    on_mesh = code.abs().amax(0) > 0
    # the face mesh sits on the person: inside the matte, covering a sensible part of the crop
    assert 0.1 < on_mesh.float().mean() < 0.6
    assert (p.matte[on_mesh.numpy()] > 0.5).mean() > 0.9
    # the background has the person removed: it differs from the portrait on the face
    diff = np.abs(p.background.astype(int) - p.image.astype(int)).sum(-1)
    assert diff[on_mesh.numpy()].mean() > 20
    assert code.min() >= -1 and code.max() <= 1


def test_a_crop_past_the_photos_edge_is_filled_not_black(shared_data, one_thread):
    """d38.jpg is a tight crop: the fixed head crop reaches past it. There the portrait shows the
    background inpainted outwards (as the training frames do), never black, and the person runs
    on past the photo's bottom edge (a suit, not a bust cut off by a straight line)."""
    from model.diffusion.pipeline import prepare_portrait
    from model.tracking.crop import crop_affine, valid_mask

    p = prepare_portrait(shared_data / "images" / "LivePortrait" / "d38.jpg", TINY)
    R = p.res
    photo = valid_mask(crop_affine(p.track.K, R), p.track.image_size, R)
    outside = ~photo
    assert 0.05 < outside.mean() < 0.9
    rows = np.nonzero(photo.any(1))[0]
    assert rows[-1] < R - 2, "d38's photo ends above the crop's bottom"
    below = np.zeros_like(photo)
    below[rows[-1] + 1:] = True
    # under the photo: the person where it stood on the photo's bottom edge, the background elsewhere
    # (the photo's outermost columns, maybe blended with the black past it, are its corners': they
    # fade with the distance from the corner, matting._continuation)
    cols = np.nonzero(photo.any(0))[0]
    inner = np.zeros(R, bool)
    inner[cols[1]:cols[-1]] = True
    torso = below & ((p.matte[rows[-1]] > 0.9) & inner)[None, :]
    assert torso.sum() > 0.1 * below.sum()
    assert (p.matte[torso] > 0.8).all() and (p.valid[torso] > 0.8).all()
    assert np.abs(p.image[torso].astype(int) - p.background[torso].astype(int)).sum(-1).mean() > 40
    empty = outside & (p.valid == 0)
    assert empty.mean() > 0.03
    np.testing.assert_array_equal(p.image[empty], p.background[empty])
    assert (p.image[outside].max(-1) > 20).mean() > 0.95  # not the black fill
    # nothing is generated where the portrait shows neither photo nor person: the MPI is transparent
    # there and its background is the filled crop
    torch.manual_seed(0)
    gen = Generator(MPIUNet(TINY))
    gen.portrait = p
    frames = next(gen.generate_clips(default_driving(p.track, max_frames=TINY.frames), steps=1))
    assert all((f.alpha[:, empty] == 0).all() and (f.alpha[:, torso] > 0).any() for f in frames)
    np.testing.assert_array_equal(frames[0].background.transpose(1, 2, 0), p.background)


def test_outside_the_photo_the_clip_carries_the_condition_not_paint():
    """keep_condition_outside: on the photo a clip's colours are the network's and so is its alpha
    near the condition's person (PERSON_REACH px), none farther away (scribbles the network painted
    into the background); beyond the photo the identity condition over the background (what the
    DetailHead gives with its gates shut, shown exactly through the MPI's alpha) and the network's
    alpha cut to the condition's matte (where the person is in that frame)."""
    from model.diffusion.clips import PERSON_REACH, keep_condition_outside

    rng = np.random.default_rng(0)
    T, R = 3, 128
    frontal, residual = (rng.uniform(-1, 1, (T, 3, R, R)).astype(np.float32) for _ in range(2))
    identity = np.concatenate([rng.uniform(-1, 1, (T, 3, R, R)), np.zeros((T, 1, R, R)), rng.uniform(0, 1, (T, 1, R, R))], 1)
    yy, xx = np.mgrid[:R, :R]
    dist = np.stack([np.hypot(yy - 64, xx - (40 + 10 * t)) for t in range(T)])  # a person moving right
    identity[:, 3] = np.clip(25.0 - dist, 0.0, 1.0)
    identity[:, 3, 116:, 20:60] = np.linspace(0.2, 1.0, 40)  # a person continued below the photo, soft at one side
    identity = identity.astype(np.float32)
    identity[:, :3] *= identity[:, 3:4]  # premultiplied, as portrait_warp makes it
    background = rng.uniform(-1, 1, (3, R, R)).astype(np.float32)
    photo = np.zeros((R, R), bool)
    photo[10:110, 5:100] = True
    alpha = rng.uniform(0, 1, (T, 4, R, R)).astype(np.float32)
    f, r, a = keep_condition_outside(frontal, residual, alpha, identity, background, photo)
    near = (dist <= 24 + PERSON_REACH)[:, None] & photo
    far = (dist > 25 + PERSON_REACH * np.sqrt(2))[:, None] & photo
    near, far = (np.broadcast_to(m, alpha.shape) for m in (near, far))
    assert near.any() and far.any() and (alpha[far] > 0.1).any()
    np.testing.assert_array_equal(a[near], alpha[near])
    assert (a[far] == 0).all()
    np.testing.assert_allclose(a[:, :, ~photo], (alpha * identity[:, 3:4])[:, :, ~photo], atol=1e-6)
    np.testing.assert_array_equal(f[:, :, photo], frontal[:, :, photo])
    np.testing.assert_array_equal(r[:, :, photo], residual[:, :, photo])
    # beyond the photo the cut MPI shows the condition over the background exactly: its colours
    # are that composite un-mixed by the MPI's own mask (DetailHead.through_alpha), not the
    # composite itself, which it would composite over the background a second time
    composite = identity[:, :3] + (1 - identity[:, 3:4]) * background
    np.testing.assert_array_equal(f[:, :, ~photo], r[:, :, ~photo])
    mask = 1 - np.prod(1 - a, axis=1, keepdims=True)
    view = f * mask + (1 - mask) * background
    person = np.broadcast_to((~photo & (mask[:, 0] > 0.05))[:, None], view.shape)
    assert person.any()
    # the composite where the mask reaches the condition's alpha, its colour at that mask below
    want = background + (composite - background) * mask / np.maximum(mask, identity[:, 3:4])
    np.testing.assert_allclose(view[person], want[person], atol=1e-5)
    assert (mask >= identity[:, 3:4])[:, 0][~photo[None].repeat(T, 0) & (mask[:, 0] > 0.05)].mean() > 0.1  # the composite is seen
    opaque = np.broadcast_to((~photo & (identity[:, 3] == 1))[:, None], view.shape)
    soft = np.broadcast_to((~photo & (identity[:, 3] > 0.2) & (identity[:, 3] < 0.9))[:, None], view.shape)
    np.testing.assert_allclose(f[opaque], composite[opaque], atol=1e-6)  # the condition's own colour
    assert soft.any() and np.abs(f[soft] - composite[soft]).max() > 0.1  # there the composite held the background
    empty = np.broadcast_to((~photo & (identity[:, 3] == 0))[:, None], view.shape)
    np.testing.assert_allclose(f[empty], np.broadcast_to(background, f.shape)[empty], atol=1e-6)


def test_inside_the_photo_a_clips_alpha_is_cut_around_the_person(generator):
    """Inside the portrait's photo a clip keeps the network's colours, but its alpha is cut to a
    few pixels around the condition's person (the network's scribbles in the background beside
    the hair), also for a photo that covers the whole crop (which once skipped the cut)."""
    from model.diffusion.clips import PERSON_REACH

    p = generator.portrait
    T, R = 2, TINY.res
    identity = torch.zeros(T, 5, R, R)
    identity[:, 3, R // 4:R // 2, R // 4:R // 2] = 1.0
    colours = torch.rand(T, 3, R, R) * 2 - 1
    own = p.photo
    for photo in (own, np.ones_like(own)):
        p.photo = photo  # the module's portrait: put back below
        try:
            f, _, a = p.keep_condition_outside(colours, colours, torch.ones(T, 3, R, R), identity)
        finally:
            p.photo = own
        assert (a[:, :, R // 4:R // 2, R // 4:R // 2] == 1).all()
        yy, xx = np.mgrid[:R, :R]
        far = photo & ((np.abs(yy - 3 * R / 8 + 0.5) > R / 8 + PERSON_REACH + 1) | (np.abs(xx - 3 * R / 8 + 0.5) > R / 8 + PERSON_REACH + 1))
        assert far.sum() > R * R / 4 and (a[:, :, torch.from_numpy(far)] == 0).all()
        torch.testing.assert_close(f[:, :, torch.from_numpy(photo)], colours[:, :, torch.from_numpy(photo)])


def test_generated_clips_of_a_close_up_show_the_continued_person_as_the_condition_has_it(shared_data, one_thread):
    """d38's crop reaches past the photo: there a generated frame's colours are the identity
    condition (the person continued past the photo) over the background, whatever the network
    would paint; on the photo they are the network's own."""
    import dataclasses

    from model.diffusion.pipeline import image_to_model, prepare_portrait

    cfg = dataclasses.replace(TINY, identity_warp=True, detail_channels=8)
    p = prepare_portrait(shared_data / "images" / "LivePortrait" / "d38.jpg", cfg)
    assert 0.05 < (~p.photo).mean() < 0.9
    torch.manual_seed(0)
    gen = Generator(MPIUNet(cfg))
    gen.portrait = p
    driving = default_driving(p.track, max_frames=cfg.frames)
    frames = next(gen.generate_clips(driving, steps=1))
    ident = p.identity(default_driving(p.track, max_frames=cfg.frames).frames(cfg.frames), cfg.identity_unmix)
    bg, ident = image_to_model(p.background).numpy(), np.asarray(ident)
    composite = ident[:, :3] + (1 - ident[:, 3:4]) * bg
    ours = np.stack([f.frontal for f in frames]).astype(np.float32) / 127.5 - 1
    diff = np.abs(ours - composite)
    assert diff[:, :, p.photo].mean() > 5 / 127.5  # on the photo: the (random) network's colours
    # beyond it the frame shows the composite, through the MPI's alpha (keep_condition_outside)
    mask = 1 - np.prod(1 - np.stack([f.alpha for f in frames]).astype(np.float32) / 255, axis=1, keepdims=True)
    view = ours * mask + (1 - mask) * bg
    want = bg + (composite - bg) * mask / np.maximum(mask, np.maximum(ident[:, 3:4], 1e-3))
    assert np.abs(view - want)[:, :, ~p.photo].max() < 0.02


def test_the_photos_edge_is_not_darkened_by_the_black_beyond_it(shared_data):
    """At 128^2 d38's last photo row is only partly covered by the photo: cut with black beyond,
    it came out 34 levels darker than the row above it and drew a dark line along the photo's
    edge in every generated frame."""
    from model.data.portrait_crop import crop_portrait
    from model.tracking.crop import crop_affine, valid_mask

    crop = crop_portrait(shared_data / "images" / "LivePortrait" / "d38.jpg", 128)
    photo = valid_mask(crop_affine(crop.track.K, 128), crop.track.image_size, 128)
    last = np.nonzero(photo.any(1))[0][-1]
    cols = photo[last]
    for image in (crop.image, crop.background):
        assert image[last, cols].astype(int).mean() - image[last - 1, cols].astype(int).mean() > -10


def test_chained_clips_have_the_right_frame_counts(generator):
    F = TINY.frames
    statuses = []
    counts = [len(c) for c in _run(generator, 2 * F, progress=statuses.append)]
    # clip 0 gives F frames, every later clip F - 1 (its first frame repeats the previous clip's last)
    assert counts == [F, F - 1, 1]
    assert [(s.clip, s.step) for s in statuses] == [(0, 1), (1, 1), (2, 1)]
    assert [s.frames_done for s in statuses] == [0, F, 2 * F - 1] and statuses[0].frames_total == 2 * F
    assert [len(c) for c in _run(generator, F + 1)] == [F, 1]
    assert [len(c) for c in _run(generator, 5)] == [5]  # a short source: one padded, trimmed clip


def test_a_long_session_keeps_only_the_clips_being_sampled(generator):
    """Live generation runs for hours: the driving frames of clips already delivered are let go
    (a list of every clip's frames grew a 30-minute live session by tens of MB). Also: the time
    breakdown counts every delivered frame and the network passes."""
    import gc
    import tracemalloc

    clips = generator.generate_clips(default_driving(generator.portrait.track, max_frames=40 * TINY.frames), steps=1)
    for _ in range(5):
        next(clips)
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(30):
        next(clips)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    clips.close()
    per_clip = 478 * 3 * 4 * TINY.frames  # one clip's driving vertices alone
    assert grown < 5 * per_clip, f"{grown / 1e3:.0f} kB more after 30 clips"
    times = generator.times
    assert times.frames == TINY.frames + 34 * (TINY.frames - 1) and times.passes >= 35 and times.network > 0


def test_generator_equals_the_samplers_chained_video(generator):
    """Clip by clip from a driving stream gives exactly model.diffusion.sampler.sample_video on the whole
    sequence: same noise draws, same first-frame chaining, same dropped frames."""
    n, seed, steps = TINY.frames + 3, 7, 2
    ours = [f for clip in _run(generator, n, seed=seed, steps=steps) for f in clip]
    p, cfg = generator.portrait, generator.cfg
    frames = default_driving(p.track, max_frames=n).frames(n)
    coords, alpha, _ = mesh_inputs(frames.vertices_head, frames.T_cam_from_head, p.code, cfg)
    cond = Conditions(coords[None], alpha[None], p.reference[None], image_to_model(p.image)[None], torch.ones(1),
                      image_to_model(p.background)[None], valid=torch.from_numpy(p.valid).float()[None, None])
    scheduler = DDIMScheduler(generator.schedule, cfg.diffusion.eta)
    scheduler.set_timesteps(steps)
    ref = sample_video(generator.model, cond, scheduler, cfg.frames,
                       lambda T: Guidance.paper(T, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance),
                       torch.Generator().manual_seed(seed))
    assert len(ours) == n == ref.mpi.frontal.shape[1]
    np.testing.assert_array_equal(np.stack([f.frontal for f in ours]), model_to_uint8(ref.mpi.frontal[0]))
    np.testing.assert_array_equal(np.stack([f.residual for f in ours]), model_to_uint8(ref.mpi.residual[0]))
    np.testing.assert_array_equal(np.stack([f.alpha for f in ours]), alpha_to_uint8(ref.mpi.alpha[0]))


def test_seeded_runs_are_reproducible(generator):
    a, b, c = (_run(generator, TINY.frames, seed=s)[0] for s in (3, 3, 4))
    for fa, fb in zip(a, b):
        for name in ("frontal", "residual", "alpha"):
            np.testing.assert_array_equal(getattr(fa, name), getattr(fb, name))
    assert any(not np.array_equal(fa.frontal, fc.frontal) for fa, fc in zip(a, c))


def test_mpi_frames_carry_the_mpi_camera_and_the_background(generator):
    p = generator.portrait
    R, D = TINY.res, TINY.planes
    frames = _run(generator, TINY.frames)[0]
    driving = default_driving(p.track).frames(TINY.frames)
    for i, f in enumerate(frames):
        assert f.frontal.shape == (3, R, R) and f.residual.shape == (3, R, R) and f.alpha.shape == (D, R, R)
        assert f.frontal.dtype == f.alpha.dtype == np.uint8
        np.testing.assert_allclose(f.K, camera.crop_intrinsics(R).numpy())
        np.testing.assert_allclose(f.T_cam_from_head, driving.T_cam_from_head[i])
        r = float(np.linalg.norm(f.T_cam_from_head[:3, 3]))
        assert f.near == pytest.approx(r - mpi.NEAR_OFFSET, abs=1e-5) and f.far == pytest.approx(r + mpi.FAR_OFFSET, abs=1e-5)
        np.testing.assert_array_equal(f.background, p.background.transpose(2, 0, 1))
    # the video starts at the portrait's own head pose
    np.testing.assert_allclose(frames[0].T_cam_from_head, p.T_cam_from_head, atol=1e-6)


def test_clip_conditions_rasterise_the_driving_mesh_in_the_mpi_camera(generator):
    p, cfg = generator.portrait, generator.cfg
    frames = default_driving(p.track).frames(cfg.frames)
    cond = generator.clip_conditions(frames, image_to_model(p.image))
    assert cond.coords.shape == (1, cfg.frames, cfg.coord_channels, cfg.res, cfg.res)
    assert cond.mesh_alpha.shape == (1, cfg.frames, cfg.planes, cfg.res, cfg.res)
    assert float(cond.first_frame_flag) == 1.0
    assert float(generator.clip_conditions(frames, None).first_frame_flag) == 0.0
    # frame 0 of the built-in animation is the portrait's own face: its coordinate map is the portrait's
    still = DrivingFrames(p.track.vertices_head(0)[None], p.T_cam_from_head[None]).padded(cfg.frames)
    still_cond = generator.clip_conditions(still, None)
    torch.testing.assert_close(still_cond.coords[0, 0], p.reference[3:])
    # mesh alpha composites to the mesh's coverage and sits on the planes around the head's depth
    cover = 1 - torch.prod(1 - cond.mesh_alpha[0], dim=1)
    on = cond.coords[0].abs().amax(1) > 0
    assert (cover[on] > 0.4).float().mean() > 0.95 and (cover[~on] < 0.05).float().mean() > 0.95
    with pytest.raises(ValueError, match="driving frames"):
        generator.clip_conditions(frames[:3], None)


def test_portrait_first_frame_condition_reaches_the_model(generator):
    with_portrait = _run(generator, TINY.frames, seed=2)[0]
    without = _run(generator, TINY.frames, seed=2, first_frame="none")[0]
    # same noise, only clip 0's first-frame condition differs: its effect fades with the guidance
    diff = [np.abs(a.frontal.astype(int) - b.frontal.astype(int)).mean() for a, b in zip(with_portrait, without)]
    assert diff[0] > 1.0 and diff[0] > diff[-1]
    with pytest.raises(ValueError, match="first_frame"):
        _run(generator, 2, first_frame="video")
