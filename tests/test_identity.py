"""model/evaluation/identity.py: dlib's face-recognition distance on real footage (same person
close, another far, also on 128 px head crops), and a clear one-line error without the package."""
from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.identity import FaceIdentity, IdentityUnavailable, distance

W011_NEUTRAL = "videos/dreamtalk/W011_front_neutral_level1_001.mp4"
W011_SURPRISED = "videos/dreamtalk/W011_front_surprised_level3_001.mp4"
TRUMP = "videos/MimicTalk/Trump_10s.mp4"


def _identity() -> FaceIdentity:
    try:
        return FaceIdentity().load()
    except IdentityUnavailable as exc:
        pytest.skip(str(exc))


def _frames(path, n: int) -> list[np.ndarray]:
    from model.formats.video import iter_frames

    frames = list(iter_frames(path))
    return [frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]


def test_same_person_is_close_another_is_far_also_at_128px(shared_data):
    import cv2

    fi = _identity()
    ref = fi.embed(_frames(shared_data / W011_NEUTRAL, 1)[0])
    assert ref is not None and ref.detected and ref.embedding.shape == (128,)
    same, found_same = fi.distances_to(ref.embedding, _frames(shared_data / W011_SURPRISED, 4))
    other, found_other = fi.distances_to(ref.embedding, _frames(shared_data / TRUMP, 4))
    assert found_same == 1.0 and found_other == 1.0
    assert (same < fi.threshold).all() and (other > fi.threshold).all(), (same, other)
    # the size the model generates: a 256 px frame shrunk to 128 px
    small = [cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in _frames(shared_data / W011_SURPRISED, 2)]
    d, found = fi.distances_to(ref.embedding, small)
    assert found == 1.0 and (d < fi.threshold).all(), d
    assert distance(ref.embedding, ref.embedding) == 0.0


def test_no_face_gives_none():
    fi = _identity()
    assert fi.embed(np.full((96, 96, 3), 128, np.uint8)) is None


def test_missing_package_is_one_clear_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(IdentityUnavailable) as err:
        FaceIdentity().load()
    msg = str(err.value)
    assert "\n" not in msg and "pip install -e .[eval]" in msg
