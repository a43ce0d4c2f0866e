"""Video files through PyAV: decoding to RGB frames and encoding H.264 mp4s.

Frames are uint8 RGB arrays (H, W, 3)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """A video file that cannot be read: missing, not a video, or corrupt."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frames: int  # as declared by the container; may be 0 when unknown


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and declared frame count of a video file."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: has no video stream (is it an audio file or an image?)")
            s = container.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 25)
            return VideoInfo(path, s.codec_context.width, s.codec_context.height, fps, int(s.frames or 0))
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: cannot be decoded as a video ({exc}); is the file complete?") from exc


def iter_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode RGB uint8 frames (H, W, 3) one by one."""
    import av

    path = Path(path)
    probe(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if max_frames is not None and i >= max_frames:
                    break
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: decoding failed part-way ({exc}); the file is probably truncated or corrupt") from exc


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """All frames (N, H, W, 3) uint8 and the frame rate."""
    info = probe(path)
    frames = list(iter_frames(path, max_frames))
    if not frames:
        raise VideoError(f"{path}: contains no decodable frames")
    return np.stack(frames), info.fps


class VideoWriter:
    """H.264 (yuv420p) mp4 writer; use as a context manager. Odd sizes are padded to even."""

    def __init__(self, path: str | Path, fps: float, crf: int = 18, codec: str = "libx264"):
        import av
        from fractions import Fraction

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf)}
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[:2]
        if self._size is None:
            self._size = (w + w % 2, h + h % 2)
            self._stream.width, self._stream.height = self._size
        pw, ph = self._size
        if (w, h) != (pw, ph):
            frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
