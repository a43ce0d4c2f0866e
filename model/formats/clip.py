"""MPI videos in memory and on disk.

An MPI frame (../shared/DESIGN.md): frontal (3, H, W), residual (3, H, W) and alpha (D, H, W) in
the MPI camera, plus that camera (K, T_cam_from_head) and near / far. Colours are 8-bit sRGB and
alpha 8-bit (0..255) in memory as on disk; `MPIFrame.tensors()` gives the float view the torch
renderer takes. Plane index 0 is the farthest.

Clip files (`.mpi`, one file, little-endian). `save_clip` / `ClipWriter` write them, `load_clip` /
`ClipReader` read them::

    file  := MAGIC (8 bytes: 89 'M' 'P' 'I' 0D 0A 1A 0A)  version (u16 = 1)  chunk*
    chunk := tag (4 ASCII bytes)  length (u64)  payload (length bytes)  crc32 (u32, of tag + payload)

    HEAD  JSON: {"mode": "lossless" | "compact", "height", "width", "planes", "fps",
                 "background": bool, "compact": {codecs, crfs, "mosaic_cols"} (compact only)}
    BGND  zlib(background (3, H, W) uint8)                         (when "background")
    lossless:
      FRME  camera (27 float32: K 3x3, T_cam_from_head 4x4 row-major, near, far)
            + zlib(frontal (3, H, W) | residual (3, H, W) | alpha (D, H, W), uint8)   one per frame
    compact:
      CAMS  N x 27 float32 cameras, as in FRME
      VCOL  Matroska video, one picture per frame: frontal | residual side by side (H, 2W), RGB
      VALP  Matroska video, one grey picture per frame: the D alpha planes tiled row-major into a
            mosaic of `mosaic_cols` columns (plane i at row i // cols, column i % cols)
    END_  u64 frame count; the last bytes of the file.

The PNG-style magic catches text-mode mangling; a missing END_ chunk means the writer never
finished (a crash, a full disk), and every chunk carries a CRC. `ClipWriter` writes to a hidden
temporary name beside the target and renames it on `close()`, so a file with the target's name is
always complete. Lossless mode is exact for every array (cameras are float32, as in `MPIClip`).
Compact mode keeps cameras, near / far, fps and background exact and sends colours and alpha
through video codecs (PyAV): RGB H.264 without a colour-space conversion (libx264rgb) for the
colours and grey H.264 for the alpha mosaic, whose pixels are read back from the luma plane as
stored (no range conversion). `imp bench clip` prints size and quality figures.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.geometry import mpi_planes

if TYPE_CHECKING:  # torch only where tensors are made: the viewer's main process reads clips without it
    import torch

    from model.geometry import mpi


@dataclass
class MPIFrame:
    frontal: np.ndarray  # (3, H, W) uint8
    residual: np.ndarray  # (3, H, W) uint8
    alpha: np.ndarray  # (D, H, W) uint8
    K: np.ndarray  # (3, 3) float32, pixels
    T_cam_from_head: np.ndarray  # (4, 4) float32
    near: float
    far: float
    background: np.ndarray | None = None  # (3, H, W) uint8, drawn as a plane at `far`

    @property
    def num_planes(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the MPI images."""
        return int(self.alpha.shape[1]), int(self.alpha.shape[2])

    def depths(self) -> np.ndarray:
        """Plane depths (D,) float32 in metres, index 0 = far."""
        # the NumPy twin of model.geometry.mpi.plane_depths (equal to float32 rounding): no torch here
        return mpi_planes.plane_depths(self.near, self.far, self.num_planes)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Batched float tensors for `model.geometry.mpi.render` (colours in [0, 1], batch of 1)."""
        import torch

        out = {
            "frontal": torch.from_numpy(self.frontal).float().div(255.0)[None],
            "residual": torch.from_numpy(self.residual).float().div(255.0)[None],
            "alpha": torch.from_numpy(self.alpha).float().div(255.0)[None],
            "depths": torch.from_numpy(self.depths()).float()[None],
            "K_src": torch.from_numpy(np.asarray(self.K, np.float32))[None],
        }
        if self.background is not None:
            out["background"] = torch.from_numpy(self.background).float().div(255.0)[None]
        return out

    def render_reference(self, K: np.ndarray, T_view_from_head: np.ndarray, size: tuple[int, int] | None = None) -> "mpi.Rendering":
        """This frame seen by a camera (K (3, 3), T_view_from_head (4, 4), size (w, h); default the
        MPI's own size) with the torch reference renderer: batch-of-1 tensors, colours in [0, 1].
        What the GL renderer (app/gl/renderer.py) must reproduce."""
        import torch

        from model.geometry import mpi

        t = self.tensors()
        T_view_from_mpi = np.asarray(T_view_from_head, np.float64) @ np.linalg.inv(np.asarray(self.T_cam_from_head, np.float64))
        h, w = self.size if size is None else (size[1], size[0])
        with torch.no_grad():
            return mpi.render(t["frontal"], t["residual"], t["alpha"], t["depths"], t["K_src"],
                              torch.from_numpy(np.asarray(K, np.float32))[None],
                              torch.from_numpy(T_view_from_mpi.astype(np.float32))[None], t.get("background"), (h, w))


@dataclass
class MPIClip:
    """N MPI frames sharing size, plane count and background."""

    frontal: np.ndarray  # (N, 3, H, W) uint8
    residual: np.ndarray  # (N, 3, H, W) uint8
    alpha: np.ndarray  # (N, D, H, W) uint8
    K: np.ndarray  # (N, 3, 3) float32
    T_cam_from_head: np.ndarray  # (N, 4, 4) float32
    near: np.ndarray  # (N,) float32
    far: np.ndarray  # (N,) float32
    fps: float
    background: np.ndarray | None = None  # (3, H, W) uint8

    def __len__(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def num_planes(self) -> int:
        return int(self.alpha.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.alpha.shape[2]), int(self.alpha.shape[3])

    def frame(self, i: int) -> MPIFrame:
        return MPIFrame(
            frontal=self.frontal[i],
            residual=self.residual[i],
            alpha=self.alpha[i],
            K=self.K[i],
            T_cam_from_head=self.T_cam_from_head[i],
            near=float(self.near[i]),
            far=float(self.far[i]),
            background=self.background,
        )

    @classmethod
    def from_frames(cls, frames: list[MPIFrame], fps: float) -> "MPIClip":
        if not frames:
            raise ValueError("an MPI clip needs at least one frame")
        return cls(
            frontal=np.stack([f.frontal for f in frames]),
            residual=np.stack([f.residual for f in frames]),
            alpha=np.stack([f.alpha for f in frames]),
            K=np.stack([np.asarray(f.K, np.float32) for f in frames]),
            T_cam_from_head=np.stack([np.asarray(f.T_cam_from_head, np.float32) for f in frames]),
            near=np.array([f.near for f in frames], np.float32),
            far=np.array([f.far for f in frames], np.float32),
            fps=float(fps),
            background=frames[0].background,
        )


# ---------------------------------------------------------------------------------------- files

MAGIC = b"\x89MPI\r\n\x1a\n"
VERSION = 1
MODES = ("lossless", "compact")
SUFFIX = ".mpi"
_VERSION = struct.Struct("<H")
_CHUNK = struct.Struct("<4sQ")
_CRC = struct.Struct("<I")
_COUNT = struct.Struct("<Q")
_CAMERA = 27  # float32s per frame: K (9), T_cam_from_head (16), near, far
_TAGS = (b"HEAD", b"BGND", b"FRME", b"CAMS", b"VCOL", b"VALP", b"END_")


class ClipError(ValueError):
    """A clip file that cannot be read: missing, not an MPI clip, truncated or corrupt."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


@dataclass(frozen=True)
class CompactSettings:
    """Codecs of compact clips; lower crf = better and bigger. On the synthetic 24-plane head of
    bench.synthetic (per-pixel noise textures, a hard case) the defaults give a frontal-view PSNR of
    ~49 dB at ~13 kB (256^2) / ~46 kB (512^2) per frame when it slides between frames, ~41 dB at
    ~90 / ~350 kB when every frame has new textures (`imp bench clip`)."""

    colour_codec: str = "libx264rgb"  # RGB straight in: no YUV rounding, no chroma subsampling
    colour_pix_fmt: str = "rgb24"
    colour_crf: int = 20
    alpha_codec: str = "libx264"
    alpha_crf: int = 10  # alpha errors show at silhouettes of every view: keep it finer than colour
    preset: str = "medium"


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    mode: str
    num_frames: int
    num_planes: int
    height: int
    width: int
    fps: float
    has_background: bool
    compact: dict = field(default_factory=dict)  # codec settings and mosaic layout (compact mode)


def _pack_camera(frame: MPIFrame) -> bytes:
    values = np.concatenate([
        np.asarray(frame.K, np.float32).reshape(9),
        np.asarray(frame.T_cam_from_head, np.float32).reshape(16),
        np.array([frame.near, frame.far], np.float32),
    ])
    return values.astype("<f4").tobytes()


def _unpack_cameras(data: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(K (n, 3, 3), T (n, 4, 4), near (n,), far (n,)) float32 from n packed cameras."""
    v = np.frombuffer(data, "<f4").reshape(n, _CAMERA).astype(np.float32)
    return v[:, :9].reshape(n, 3, 3).copy(), v[:, 9:25].reshape(n, 4, 4).copy(), v[:, 25].copy(), v[:, 26].copy()


def mosaic_columns(num_planes: int) -> int:
    """Columns of the alpha mosaic: the squarest grid holding every plane."""
    return int(np.ceil(np.sqrt(num_planes)))


def alpha_mosaic(alpha: np.ndarray, cols: int) -> np.ndarray:
    """Tile alpha (D, H, W) row-major into one grey image (rows*H (+1), cols*W (+1)), padded with
    zeros to even sizes (H.264 works on 2x2 chroma blocks even for grey)."""
    D, H, W = alpha.shape
    rows = -(-D // cols)
    out = np.zeros((rows * H + (rows * H) % 2, cols * W + (cols * W) % 2), np.uint8)
    for i in range(D):
        r, c = divmod(i, cols)
        out[r * H:(r + 1) * H, c * W:(c + 1) * W] = alpha[i]
    return out


def alpha_from_mosaic(mosaic: np.ndarray, num_planes: int, height: int, width: int, cols: int) -> np.ndarray:
    """Inverse of `alpha_mosaic`: (D, H, W) uint8."""
    out = np.empty((num_planes, height, width), np.uint8)
    for i in range(num_planes):
        r, c = divmod(i, cols)
        out[i] = mosaic[r * height:(r + 1) * height, c * width:(c + 1) * width]
    return out


def _colour_picture(frame: MPIFrame) -> np.ndarray:
    """frontal | residual side by side, (H (+1), 2W, 3) uint8 RGB, padded to an even height."""
    pic = np.concatenate([frame.frontal, frame.residual], axis=2).transpose(1, 2, 0)
    if pic.shape[0] % 2:
        pic = np.concatenate([pic, pic[-1:]], axis=0)
    return np.ascontiguousarray(pic)


class _StreamEncoder:
    """One video stream encoded into an in-memory Matroska file (compact clips are small)."""

    def __init__(self, codec: str, pix_fmt: str, crf: int, preset: str, fps: float, width: int, height: int):
        import av

        self._buf = io.BytesIO()
        self._container = av.open(self._buf, mode="w", format="matroska")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = pix_fmt
        self._stream.options = {"crf": str(crf), "preset": preset}

    def encode(self, picture: np.ndarray, fmt: str) -> None:
        import av

        for packet in self._stream.encode(av.VideoFrame.from_ndarray(picture, format=fmt)):
            self._container.mux(packet)

    def finish(self) -> bytes:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self._buf.getvalue()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # already broken: nothing left worth saving
            pass


class ClipWriter:
    """Writes an MPI clip frame by frame (the generator and the viewer save clips as they come).

    Frames go to a hidden temporary file beside `path`, renamed to `path` by `close()`; as a
    context manager an exception discards the temporary file instead. Every frame must have the
    first frame's plane count and size; the clip's background is the first frame's."""

    def __init__(self, path: str | Path, mode: str = "lossless", fps: float = 25.0, settings: CompactSettings | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown clip mode {mode!r}: choose {' or '.join(MODES)}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.mode = mode
        self.fps = float(fps)
        self.settings = settings or CompactSettings()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._file = open(self._tmp, "wb")
        self._file.write(MAGIC + _VERSION.pack(VERSION))
        self._shape: tuple[int, int, int] | None = None
        self._count = 0
        self._cameras: list[bytes] = []
        self._encoders: dict[str, _StreamEncoder] = {}
        self._cols = 0

    def __len__(self) -> int:
        return self._count

    def _chunk(self, tag: bytes, payload: bytes) -> None:
        self._file.write(_CHUNK.pack(tag, len(payload)))
        self._file.write(payload)
        self._file.write(_CRC.pack(zlib.crc32(payload, zlib.crc32(tag))))

    def _start(self, frame: MPIFrame) -> None:
        D, H, W = frame.alpha.shape
        self._shape = (D, H, W)
        head = {"mode": self.mode, "height": H, "width": W, "planes": D, "fps": self.fps,
                "background": frame.background is not None}
        if self.mode == "compact":
            self._cols = mosaic_columns(D)
            s = self.settings
            head["compact"] = {**asdict(s), "mosaic_cols": self._cols}
            colour = _colour_picture(frame)
            mosaic = alpha_mosaic(frame.alpha, self._cols)
            self._encoders = {
                "colour": _StreamEncoder(s.colour_codec, s.colour_pix_fmt, s.colour_crf, s.preset, self.fps, colour.shape[1], colour.shape[0]),
                "alpha": _StreamEncoder(s.alpha_codec, "gray", s.alpha_crf, s.preset, self.fps, mosaic.shape[1], mosaic.shape[0]),
            }
        self._chunk(b"HEAD", json.dumps(head).encode())
        if frame.background is not None:
            self._chunk(b"BGND", zlib.compress(np.ascontiguousarray(frame.background, np.uint8).tobytes(), 6))

    def append(self, frame: MPIFrame) -> None:
        if self._file is None:
            raise RuntimeError(f"ClipWriter for {self.path} is closed")
        D, H, W = frame.alpha.shape
        for name in ("frontal", "residual", "background"):
            value = getattr(frame, name)
            if value is not None and value.shape != (3, H, W):
                raise ValueError(f"MPI frame {name} has shape {value.shape}, expected (3, {H}, {W}) like its alpha")
        if self._shape is None:
            self._start(frame)
        elif self._shape != (D, H, W):
            raise ValueError(f"frame {self._count} has {D} planes of {H}x{W}, the clip {self._shape[0]} of {self._shape[1]}x{self._shape[2]}")
        camera = _pack_camera(frame)
        if self.mode == "lossless":
            arrays = b"".join(np.ascontiguousarray(a, np.uint8).tobytes() for a in (frame.frontal, frame.residual, frame.alpha))
            self._chunk(b"FRME", camera + zlib.compress(arrays, 6))
        else:
            self._cameras.append(camera)
            self._encoders["colour"].encode(_colour_picture(frame), "rgb24")
            self._encoders["alpha"].encode(alpha_mosaic(np.asarray(frame.alpha, np.uint8), self._cols), "gray")
        self._count += 1

    def close(self) -> None:
        """Finish the file and give it its name. A clip needs at least one frame."""
        if self._file is None:
            return
        if self._count == 0:
            self.abort()
            raise ValueError(f"{self.path}: no frames were appended, nothing to save")
        try:
            if self.mode == "compact":
                self._chunk(b"CAMS", b"".join(self._cameras))
                self._chunk(b"VCOL", self._encoders["colour"].finish())
                self._chunk(b"VALP", self._encoders["alpha"].finish())
                self._encoders = {}
            self._chunk(b"END_", _COUNT.pack(self._count))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file; `path` is left as it was."""
        for enc in self._encoders.values():
            enc.abort()
        self._encoders = {}
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ClipWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _looks_like(head: bytes) -> str:
    """A guess at what a foreign file is, for the error message."""
    signatures = [(b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
                  (b"PK\x03\x04", "a zip archive (.npz?)"), (b"\x93NUMPY", "a .npy array"), (b"GIF8", "a GIF image"),
                  (b"glTF", "a glTF binary (.glb)")]
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "an MP4/QuickTime video"
    if head[8:16].startswith(b"{") or head[:1] == b"{":
        return "a JSON/text file"
    return "an unknown format"


class ClipReader:
    """Reads a clip file: `info`, `len()`, `frames()` (streaming), `frame(i)`, `read()` (all).

    Opening checks the structure (magic, version, chunk table, end marker) without decoding;
    chunk CRCs are checked as chunks are read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ClipError(self.path, "no such clip file" if not self.path.exists() else "is not a file")
        self._file = open(self.path, "rb")
        try:
            self._chunks = self._scan()
            self.info = self._parse_head()
            self._background = self._read_background()
        except BaseException:
            self._file.close()
            raise

    # ------------------------------------------------------------------ structure
    def _scan(self) -> list[tuple[bytes, int, int]]:
        """[(tag, payload offset, length)] up to and including END_."""
        f = self._file
        size = os.fstat(f.fileno()).st_size
        start = f.read(len(MAGIC) + _VERSION.size)
        if len(start) < len(MAGIC) and MAGIC.startswith(start):
            raise ClipError(self.path, f"is truncated: it ends after {len(start)} bytes, inside its header")
        if not start.startswith(MAGIC):
            raise ClipError(self.path, f"is not an MPI clip (it looks like {_looks_like(start)}); expected a {SUFFIX} file written by `imp` (model.formats.clip)")
        if len(start) < len(MAGIC) + _VERSION.size:
            raise ClipError(self.path, "is truncated: it ends inside its header")
        (version,) = _VERSION.unpack(start[len(MAGIC):])
        if version != VERSION:
            raise ClipError(self.path, f"is a version {version} clip; this im-portrait reads version {VERSION} (update im-portrait)")
        chunks = []
        pos = len(start)
        while True:
            if pos >= size:
                raise ClipError(self.path, f"is truncated: it ends after {len(chunks)} chunks without its end marker (was the writer interrupted?)")
            f.seek(pos)
            raw = f.read(_CHUNK.size)
            if len(raw) < _CHUNK.size:
                raise ClipError(self.path, f"is truncated inside chunk {len(chunks)}'s header")
            tag, length = _CHUNK.unpack(raw)
            if tag not in _TAGS:
                raise ClipError(self.path, f"is corrupt: unknown chunk {tag!r} at byte {pos}")
            offset = pos + _CHUNK.size
            if offset + length + _CRC.size > size:
                raise ClipError(self.path, f"is truncated: chunk {tag.decode()} at byte {pos} needs {length} bytes, the file ends first")
            chunks.append((tag, offset, length))
            pos = offset + length + _CRC.size
            if tag == b"END_":
                if pos != size:
                    raise ClipError(self.path, f"is corrupt: {size - pos} stray bytes after the end marker")
                return chunks

    def _payload(self, index: int) -> bytes:
        tag, offset, length = self._chunks[index]
        self._file.seek(offset)
        data = self._file.read(length)
        (crc,) = _CRC.unpack(self._file.read(_CRC.size))
        if zlib.crc32(data, zlib.crc32(tag)) != crc:
            raise ClipError(self.path, f"is corrupt: chunk {tag.decode()} at byte {offset - _CHUNK.size} fails its checksum")
        return data

    def _find(self, tag: bytes) -> list[int]:
        return [i for i, c in enumerate(self._chunks) if c[0] == tag]

    def _parse_head(self) -> ClipInfo:
        if self._chunks[0][0] != b"HEAD":
            raise ClipError(self.path, "is corrupt: it does not start with a HEAD chunk")
        try:
            head = json.loads(self._payload(0))
            mode, H, W, D, fps = head["mode"], int(head["height"]), int(head["width"]), int(head["planes"]), float(head["fps"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ClipError(self.path, f"is corrupt: unreadable HEAD chunk ({exc})") from exc
        if mode not in MODES:
            raise ClipError(self.path, f"has unknown mode {mode!r}")
        (count,) = _COUNT.unpack(self._payload(len(self._chunks) - 1))
        if mode == "lossless":
            found = len(self._find(b"FRME"))
        else:
            cams = self._find(b"CAMS")
            if len(cams) != 1 or len(self._find(b"VCOL")) != 1 or len(self._find(b"VALP")) != 1:
                raise ClipError(self.path, "is corrupt: a compact clip needs one CAMS, VCOL and VALP chunk each")
            found = self._chunks[cams[0]][2] // (4 * _CAMERA)
        if found != count or count == 0:
            raise ClipError(self.path, f"is corrupt: the end marker says {count} frames, the file holds {found}")
        return ClipInfo(self.path, mode, count, D, H, W, fps, bool(head.get("background")), head.get("compact", {}))

    def _read_background(self) -> np.ndarray | None:
        if not self.info.has_background:
            return None
        found = self._find(b"BGND")
        if len(found) != 1:
            raise ClipError(self.path, f"is corrupt: its header promises one background, it holds {len(found)}")
        H, W = self.info.height, self.info.width
        return self._inflate(self._payload(found[0]), 3 * H * W, "background").reshape(3, H, W)

    def _inflate(self, data: bytes, size: int, what: str) -> np.ndarray:
        try:
            raw = zlib.decompress(data)
        except zlib.error as exc:
            raise ClipError(self.path, f"is corrupt: {what} does not decompress ({exc})") from exc
        if len(raw) != size:
            raise ClipError(self.path, f"is corrupt: {what} holds {len(raw)} bytes, expected {size}")
        return np.frombuffer(bytearray(raw), np.uint8)  # bytearray: callers get writable arrays

    # ------------------------------------------------------------------ frames
    def __len__(self) -> int:
        return self.info.num_frames

    def _lossless_frame(self, chunk: int, i: int) -> MPIFrame:
        D, H, W = self.info.num_planes, self.info.height, self.info.width
        data = self._payload(chunk)
        K, T, near, far = _unpack_cameras(data[:4 * _CAMERA], 1)
        arrays = self._inflate(data[4 * _CAMERA:], (6 + D) * H * W, f"frame {i}")
        return MPIFrame(
            frontal=arrays[:3 * H * W].reshape(3, H, W), residual=arrays[3 * H * W:6 * H * W].reshape(3, H, W),
            alpha=arrays[6 * H * W:].reshape(D, H, W), K=K[0], T_cam_from_head=T[0], near=float(near[0]), far=float(far[0]),
            background=self._background,
        )

    def _decode(self, tag: bytes, grey: bool) -> Iterator[np.ndarray]:
        import av

        blob = self._payload(self._find(tag)[0])
        try:
            with av.open(io.BytesIO(blob)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for picture in container.decode(stream):
                    if grey:  # the luma plane as coded: no range conversion of alpha values
                        plane = picture.planes[0]
                        yield np.frombuffer(plane, np.uint8).reshape(picture.height, plane.line_size)[:, :picture.width]
                    else:
                        yield picture.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise ClipError(self.path, f"is corrupt: its {tag.decode()} video does not decode ({exc})") from exc

    def _compact_frames(self) -> Iterator[MPIFrame]:
        n, D, H, W = len(self), self.info.num_planes, self.info.height, self.info.width
        cols = int(self.info.compact.get("mosaic_cols", mosaic_columns(D)))
        K, T, near, far = _unpack_cameras(self._payload(self._find(b"CAMS")[0]), n)
        colours, alphas = self._decode(b"VCOL", grey=False), self._decode(b"VALP", grey=True)
        for i in range(n):
            colour, mosaic = next(colours, None), next(alphas, None)
            if colour is None or mosaic is None:
                raise ClipError(self.path, f"is corrupt: its videos end after {i} of {n} frames")
            pic = colour[:H].transpose(2, 0, 1)
            yield MPIFrame(
                frontal=np.ascontiguousarray(pic[:, :, :W]), residual=np.ascontiguousarray(pic[:, :, W:2 * W]),
                alpha=alpha_from_mosaic(mosaic, D, H, W, cols), K=K[i], T_cam_from_head=T[i],
                near=float(near[i]), far=float(far[i]), background=self._background,
            )

    def frames(self) -> Iterator[MPIFrame]:
        """Every frame in order, decoded one at a time."""
        if self.info.mode == "lossless":
            for i, chunk in enumerate(self._find(b"FRME")):
                yield self._lossless_frame(chunk, i)
        else:
            yield from self._compact_frames()

    def frame(self, i: int) -> MPIFrame:
        """Frame i (0-based). Compact clips decode from the start: prefer `frames()` for many."""
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"{self.path}: frame {i} is out of range, the clip has {n} frame{'s' if n != 1 else ''} (0..{n - 1})")
        if self.info.mode == "lossless":
            return self._lossless_frame(self._find(b"FRME")[i], i)
        for j, frame in enumerate(self._compact_frames()):
            if j == i:
                return frame
        raise AssertionError("unreachable: frame count checked when opening")

    def read(self) -> MPIClip:
        return MPIClip.from_frames(list(self.frames()), self.info.fps)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ClipReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_clip(path: str | Path) -> ClipReader:
    """A reader on a clip file; raises ClipError when it is missing, foreign, truncated or corrupt."""
    return ClipReader(path)


def load_clip(path: str | Path) -> MPIClip:
    """The whole clip in memory."""
    with ClipReader(path) as reader:
        return reader.read()


def save_clip(clip: MPIClip, path: str | Path, mode: str = "lossless", settings: CompactSettings | None = None) -> None:
    """Write `clip` to `path` (see the module docstring for the format); atomic like ClipWriter."""
    with ClipWriter(path, mode=mode, fps=clip.fps, settings=settings) as writer:
        for i in range(len(clip)):
            writer.append(clip.frame(i))
