"""Offline face-identity metric of `imp eval`: dlib's face-recognition ResNet (128-d descriptors).

Weights come from the ``face-recognition-models`` package (``.dat`` files shipped inside
the package, nothing is downloaded); the code comes from the ``dlib-bin`` wheel.  Two
descriptors closer than :data:`SAME_PERSON_THRESHOLD` (0.6, Euclidean) are taken as the
same person, which is dlib's own convention (99.38% on LFW).

Pipeline per image: HOG frontal face detector (largest face) -> 5-point shape predictor
-> aligned 150x150 chip -> ResNet -> 128-d descriptor.  Small images (e.g. the 128x128
head crops the model generates) are first upscaled so that their short side is at least
``min_side`` pixels, because the HOG detector's window is 80x80 px.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import numpy as np

SAME_PERSON_THRESHOLD = 0.6
"""dlib's threshold: descriptor distance below it means the same person."""

_INSTALL_HINT = "pip install -e .[eval]"

_MODEL_FILES = {
    "shape_predictor": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in image pixels, x1/y1 exclusive-ish as dlib uses them."""


class IdentityUnavailable(RuntimeError):
    """dlib or the face_recognition_models weights are not installed."""


@dataclass(frozen=True)
class FaceEmbedding:
    """One face descriptor and how it was obtained.

    Attributes:
        embedding: (128,) float32 dlib ResNet descriptor.
        detected: True when the HOG detector found the face; False when the caller's
            fallback box was used for the landmarks instead.
        box: (x0, y0, x1, y1) face box that was used, in the input image's pixels.
    """

    embedding: np.ndarray
    detected: bool
    box: Box


def _models_dir() -> Path:
    """Folder holding face_recognition_models' .dat files.

    face_recognition_models' own helpers (``face_recognition_model_location()``) import
    ``pkg_resources``, which setuptools >= 81 no longer ships, so the package is located
    with ``find_spec`` (which does not execute its ``__init__``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailable(
            f"face identity needs the face_recognition_models package: {_INSTALL_HINT}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [n for n in _MODEL_FILES.values() if not (folder / n).is_file()]
    if missing:
        raise IdentityUnavailable(
            f"face_recognition_models lacks {', '.join(missing)} (need >= 0.3.0): {_INSTALL_HINT}"
        )
    return folder


def _import_dlib() -> Any:
    try:
        import dlib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise IdentityUnavailable(
            f"face identity needs dlib (the dlib-bin wheel): {_INSTALL_HINT}"
        ) from exc
    return dlib


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return a C-contiguous (H, W, 3) uint8 RGB copy/view of ``image``.

    Accepts (H, W) greyscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA (alpha dropped),
    uint8 or float in [0, 1].
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {img.shape}")
    return np.ascontiguousarray(img)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two (128,) descriptors (< 0.6: same person)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


class FaceIdentity:
    """dlib face detector + 5-point aligner + ResNet descriptor, loaded on first use.

    Args:
        min_side: images whose short side is below this are upscaled (bilinear) to it
            before detection, landmarks and descriptor; 400 finds a ~40 px face in a
            64x64 image.  0 disables upscaling.
        upsample: extra ``upsample_num_times`` for the HOG detector (each doubles the
            image; slower).
        num_jitters: dlib's test-time augmentation (0 = one pass; 10 is ~10x slower and
            slightly more stable).

    Raises:
        IdentityUnavailable: (on first use or :meth:`load`) dlib or the weights are missing.
    """

    threshold: float = SAME_PERSON_THRESHOLD

    def __init__(self, min_side: int = 400, upsample: int = 0, num_jitters: int = 0) -> None:
        self.min_side = int(min_side)
        self.upsample = int(upsample)
        self.num_jitters = int(num_jitters)
        self._models: Optional[tuple[Any, Any, Any, Any]] = None  # (dlib, det, sp, rec)

    def load(self) -> "FaceIdentity":
        """Build the dlib objects now (otherwise on the first :meth:`embed`)."""
        if self._models is None:
            dlib = _import_dlib()
            folder = _models_dir()
            self._models = (
                dlib,
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(str(folder / _MODEL_FILES["shape_predictor"])),
                dlib.face_recognition_model_v1(str(folder / _MODEL_FILES["recognition"])),
            )
        return self

    # -- internals -------------------------------------------------------------------
    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """RGB uint8 image, upscaled so min(H, W) >= min_side; returns (image, scale)."""
        img = to_rgb_uint8(image)
        h, w = img.shape[:2]
        scale = 1.0
        if self.min_side > 0 and min(h, w) < self.min_side:
            scale = self.min_side / min(h, w)
            dlib = self._models[0]  # type: ignore[index]
            img = dlib.resize_image(img, int(round(h * scale)), int(round(w * scale)))
        return img, scale

    def detect(self, image: np.ndarray) -> Optional[Box]:
        """Largest frontal face in ``image`` ((H, W[, C]) uint8) as (x0, y0, x1, y1), or None."""
        self.load()
        img, scale = self._prepare(image)
        rect = self._largest(img)
        if rect is None:
            return None
        return tuple(int(round(v / scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))  # type: ignore[return-value]

    def _largest(self, img: np.ndarray) -> Any:
        _, detector, _, _ = self._models  # type: ignore[misc]
        rects = detector(img, self.upsample)
        if len(rects) == 0:
            return None
        return max(rects, key=lambda r: r.width() * r.height())

    # -- public API ------------------------------------------------------------------
    def embed(self, image: np.ndarray, box: Optional[Sequence[float]] = None) -> Optional[FaceEmbedding]:
        """Descriptor of the largest face in ``image``.

        Args:
            image: (H, W, 3) uint8 RGB (greyscale / RGBA / float [0, 1] are converted).
            box: optional fallback face box (x0, y0, x1, y1) in ``image`` pixels, used for
                the landmarks when the detector finds no face.  It should frame the face
                roughly like dlib's detector does (brows to chin, ear to ear).

        Returns:
            :class:`FaceEmbedding` ((128,) float32 embedding, ``detected`` flag, box), or
            None when no face was detected and no fallback box was given.
        """
        self.load()
        dlib, _, predictor, recognizer = self._models  # type: ignore[misc]
        img, scale = self._prepare(image)
        rect = self._largest(img)
        detected = rect is not None
        if rect is None:
            if box is None:
                return None
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        shape = predictor(img, rect)
        vec = recognizer.compute_face_descriptor(img, shape, self.num_jitters)
        used = tuple(int(round(v / scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
        return FaceEmbedding(np.asarray(vec, dtype=np.float32), detected, used)  # type: ignore[arg-type]

    distance = staticmethod(distance)

    def distances_to(
        self,
        reference: np.ndarray,
        frames: Iterable[np.ndarray],
        boxes: Optional[Iterable[Optional[Sequence[float]]]] = None,
    ) -> tuple[np.ndarray, float]:
        """Distance of each frame's face to a reference descriptor.

        Args:
            reference: (128,) descriptor (e.g. ``embed(portrait).embedding``).
            frames: iterable of N (H, W, 3) uint8 RGB frames (or an (N, H, W, 3) array).
            boxes: optional per-frame fallback boxes (None entries allowed), see :meth:`embed`.

        Returns:
            (distances, detected_fraction): (N,) float64 distances, NaN where no face was
            found (and no box given); fraction of frames where the detector found a face.
        """
        frames = list(frames)
        box_list = list(boxes) if boxes is not None else [None] * len(frames)
        if len(box_list) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(box_list)} boxes")
        out = np.full(len(frames), np.nan, dtype=np.float64)
        n_detected = 0
        for i, (frame, box) in enumerate(zip(frames, box_list)):
            result = self.embed(frame, box)
            if result is not None:
                out[i] = distance(reference, result.embedding)
                n_detected += int(result.detected)
        return out, (n_detected / len(frames) if frames else float("nan"))
