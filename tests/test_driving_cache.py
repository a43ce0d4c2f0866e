"""The driving-track cache (model/data/driving_cache.py) on a real video: a driving video is tracked
(and its torso's and hair's motion measured) once and read back the same; another file, another frame count or
a torn entry is tracked afresh; a cache that cannot be written costs a warning, not the run."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from model.data import driving_cache  # noqa: E402
from model.data.driving import VideoDriving  # noqa: E402
from model.tracking import track_image  # noqa: E402

VIDEO = "videos/LivePortrait/d18.mp4"
FRAMES = 10


def _same(a, b) -> None:
    """Two (Track, torso shifts, hair steadiness) results are equal."""
    (ta, sa, ha), (tb, sb, hb) = a, b
    for f in dataclasses.fields(ta):
        np.testing.assert_array_equal(np.asarray(getattr(ta, f.name)), np.asarray(getattr(tb, f.name)), err_msg=f.name)
    np.testing.assert_array_equal(sa, sb)
    assert isinstance(ha, int) and ha == hb


@pytest.fixture
def no_tracking(monkeypatch):
    """Counts the tracker's runs; `forbid()` makes any further run fail the test."""
    import model.tracking as tracking

    real = tracking.track_video
    calls = []

    def counted(*args, **kwargs):
        if calls and calls[-1] == "forbidden":
            raise AssertionError("the video was tracked again instead of read from the cache")
        calls.append("ran")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracking, "track_video", counted)
    counted.calls = calls
    counted.forbid = lambda: calls.append("forbidden")
    return counted


def test_a_driving_video_is_tracked_once(shared_data, tmp_path, no_tracking):
    video = shared_data / VIDEO
    first = driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES)
    entries = list((tmp_path / "driving").glob("*.npz"))
    assert len(first[0]) == FRAMES and first[1].shape == (FRAMES, 2) and len(entries) == 1 and no_tracking.calls == ["ran"]
    no_tracking.forbid()
    _same(driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES), first)


def test_another_file_or_frame_count_is_tracked_afresh(shared_data, tmp_path, no_tracking):
    video = shared_data / VIDEO
    driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES)
    more, torso, _ = driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES + 2)
    assert len(more) == FRAMES + 2 and torso.shape == (FRAMES + 2, 2)
    # the same bytes under another name are the same entry; other bytes are not
    copy = tmp_path / "renamed.mp4"
    shutil.copyfile(video, copy)
    assert driving_cache.video_key(copy, FRAMES) == driving_cache.video_key(video, FRAMES)
    with open(copy, "ab") as f:
        f.write(b"\0")
    assert driving_cache.video_key(copy, FRAMES) != driving_cache.video_key(video, FRAMES)
    assert no_tracking.calls == ["ran", "ran"]


def test_a_torn_entry_is_tracked_again_and_rewritten(shared_data, tmp_path, no_tracking):
    video = shared_data / VIDEO
    first = driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES)
    (entry,) = (tmp_path / "driving").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    again = driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES)
    _same(again, first)
    assert no_tracking.calls == ["ran", "ran"]
    no_tracking.forbid()
    _same(driving_cache.driving_video_track(video, tmp_path, progress=False, max_frames=FRAMES), first)


def test_an_unwritable_cache_costs_a_warning_not_the_track(shared_data, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    with pytest.warns(UserWarning, match="IMP_CACHE_DIR"):
        track, _, _ = driving_cache.driving_video_track(shared_data / VIDEO, blocker, progress=False, max_frames=FRAMES)
    assert len(track) == FRAMES
    assert not list(tmp_path.glob("**/.*.npz")), "no temporary file left behind"


def test_video_driving_keeps_its_track_in_the_cache(shared_data, tmp_path, astronaut_path, no_tracking):
    portrait = track_image(astronaut_path)
    a = VideoDriving(shared_data / VIDEO, portrait, max_frames=FRAMES, progress=False, cache_dir=tmp_path)
    no_tracking.forbid()
    b = VideoDriving(shared_data / VIDEO, portrait, max_frames=FRAMES, progress=False, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.all_frames.vertices_head, b.all_frames.vertices_head)
    np.testing.assert_array_equal(a.all_frames.T_cam_from_head, b.all_frames.T_cam_from_head)
    np.testing.assert_array_equal(a.all_frames.torso_shift, b.all_frames.torso_shift)
    np.testing.assert_array_equal(a.all_frames.T_hair, b.all_frames.T_hair)


def test_a_videos_tracking_reports_each_frame_of_each_pass_and_a_cached_one_none(shared_data, tmp_path):
    calls: list[tuple[str, int, int]] = []
    track, _, _ = driving_cache.driving_video_track(shared_data / VIDEO, tmp_path, progress=False, max_frames=FRAMES,
                                                    on_progress=lambda *call: calls.append(call))
    assert len(track) == FRAMES
    assert calls == [("tracking", i, FRAMES) for i in range(1, FRAMES + 1)] + [("matting", i, FRAMES) for i in range(1, FRAMES + 1)]
    calls.clear()
    driving_cache.driving_video_track(shared_data / VIDEO, tmp_path, progress=False, max_frames=FRAMES,
                                      on_progress=lambda *call: calls.append(call))
    assert calls == []  # read from the cache: nothing to wait for


def test_what_the_progress_callback_raises_stops_the_tracking(shared_data, tmp_path):
    class Closed(Exception):
        pass

    def stop_at_three(stage: str, done: int, total: int) -> None:
        if done == 3:
            raise Closed

    with pytest.raises(Closed):
        driving_cache.driving_video_track(shared_data / VIDEO, tmp_path, progress=False, max_frames=FRAMES, on_progress=stop_at_three)
    assert not list(tmp_path.glob("**/*.npz")), "a track cut short is not kept"
