"""The denoiser in ONNX Runtime: one guidance-distilled student step + its frontal decode, as
`model/coldstart/onnx_export.py` wrote it, run without torch.

Why: the viewer's generation worker must show its first clip ~1.5 s after launch, and importing
torch alone costs ~2 s here; onnxruntime imports in a fraction of that. The file is made once per
checkpoint (`imp export-onnx`, run by scripts/setup.sh) and cached under
`onnx_path(checkpoint, default_cache_dir())`, keyed by the checkpoint's bytes.

Nothing here imports torch, directly or through the project (tests/test_onnx_network.py checks it
in a fresh process). Shapes are fixed by the export: batch 1, cfg.frames frames T, cfg.res R,
cfg.planes D, Cc coordinate channels.

    inputs   x_t (1,T,3,R,R) f32, t (1,) i64, coords (1,T,Cc,R,R), mesh_alpha (1,T,D,R,R),
             portrait (1,3+Cc,R,R), first_frame (1,3,R,R), first_frame_flag (1,),
             identity (1,T,5,R,R) [identity_warp configs], background (1,3,R,R), valid (1,1,R,R),
             guidance (1,T,2) [guidance_input configs]
    outputs  frontal, residual (1,T,3,R,R) in [-1,1]; alpha (1,T,D,R,R) in [0,1];
             video (1,T,3,R,R): the MPI rendered over the background in its own camera
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: numpy / onnxruntime only when a session is made
    import numpy as np

OUTPUT_NAMES = ("frontal", "residual", "alpha", "video")
EXPORT_COMMAND = "imp export-onnx"

# ONNX metadata_props keys written by the export
META_FORMAT = "im_portrait.format"
META_CHECKPOINT_SHA256 = "im_portrait.checkpoint_sha256"
META_INPUTS = "im_portrait.inputs"  # comma-separated input names, in order
META_OUTPUTS = "im_portrait.outputs"
META_OPTIMIZED = "im_portrait.ort_optimized"  # the ONNX Runtime level the file was optimised at, offline
FORMAT = "im-portrait-student-step-2"  # raise when the exported graph's inputs / outputs / meaning change


class OnnxModelError(RuntimeError):
    """The ONNX file of the network is missing or unreadable (says which file and what to do)."""


def checkpoint_digest(path: str | Path) -> str:
    """sha256 hex digest of a checkpoint file's bytes (7 MB for the demo model: ~15 ms)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_path(checkpoint: str | Path, cache_dir: str | Path) -> Path:
    """Where the ONNX export of `checkpoint` is cached: cache_dir/onnx/<sha256[:16]>.onnx, so that
    retrained weights under the same name get a file of their own."""
    return Path(cache_dir) / "onnx" / f"{checkpoint_digest(checkpoint)[:16]}.onnx"


# Graph optimisation: the export saves a file ONNX Runtime has already optimised at PREOPTIMIZE_LEVEL
# (SessionOptions.optimized_model_filepath), and sessions load it at LOAD_LEVEL. Measured on this
# 2-core CPU for the demo model, create session + first run, 1 thread, 4 runs each: raw file at
# ENABLE_ALL 0.70-0.74 s; pre-optimised BASIC 0.35-0.41, EXTENDED 0.32-0.39 (0.32-0.40 with BASIC
# again at load), ALL 0.33-0.38 s. ALL adds CPU-specific layouts (NCHWc) and is no faster: EXTENDED.
PREOPTIMIZE_LEVEL = "ORT_ENABLE_EXTENDED"
LOAD_LEVEL = "ORT_DISABLE_ALL"


def session_options(threads: int = 1, level: str = LOAD_LEVEL):
    """onnxruntime.SessionOptions for one clip at a time on the CPU: `threads` intra-op threads,
    no inter-op parallelism (the graph is a chain), sequential execution, graph optimisation
    `level` (a GraphOptimizationLevel name)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return opts


def _unusable(path: Path, why: str) -> OnnxModelError:
    return OnnxModelError(f"{path}: {why}; delete it and run `{EXPORT_COMMAND}` again "
                          f"(add --checkpoint CKPT for other weights than the demo model's)")


class OnnxNetwork:
    """One student denoising step + decode of a checkpoint, exported to ONNX, in an ONNX Runtime
    CPU session. `net(**inputs)` takes the inputs named in `input_names` (NumPy arrays, shapes in
    the module docstring) and returns {"frontal", "residual", "alpha", "video"}."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: no ONNX file of the network here; make it with `{EXPORT_COMMAND}` "
                                 f"(add --checkpoint CKPT for other weights than the demo model's, --out to choose the file)")
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / NoSuchFile kinds
            raise _unusable(self.path, f"cannot load this ONNX file of the network ({type(exc).__name__}: {exc}); "
                                       "it may be truncated or made by another version") from exc
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        self.input_names: list[str] = [i.name for i in inputs]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        if self.metadata.get(META_FORMAT) != FORMAT or tuple(self.output_names) != OUTPUT_NAMES:
            raise _unusable(self.path, f"not an im-portrait network export of format {FORMAT!r} (its format: "
                                       f"{self.metadata.get(META_FORMAT)!r}, outputs {self.output_names})")
        self.input_shapes: dict[str, tuple[int, ...]] = {i.name: tuple(i.shape) for i in inputs}
        self._dtypes = {i.name: _NUMPY_TYPES.get(i.type, "float32") for i in inputs}

    @property
    def checkpoint_sha256(self) -> str:
        """sha256 of the checkpoint the file was exported from ("" if not recorded)."""
        return self.metadata.get(META_CHECKPOINT_SHA256, "")

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run one step: inputs by name (module docstring), outputs by name."""
        missing = [n for n in self.input_names if n not in inputs]
        unknown = sorted(set(inputs) - set(self.input_names))
        if missing or unknown:
            raise ValueError(f"OnnxNetwork({self.path.name}): takes inputs {self.input_names}; "
                             f"missing {missing}, unknown {unknown}")
        import numpy as np

        feed = {n: np.ascontiguousarray(inputs[n], dtype=self._dtypes[n]) for n in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(double)": "float64",
                "tensor(int32)": "int32"}
