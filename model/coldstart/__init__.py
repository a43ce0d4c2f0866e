"""Generation without torch, for the viewer's worker: its first frame must not wait for torch's
import (~2 s of ~3 on this 2-core CPU). `generator` samples a one-step guidance-distilled student
in ONNX Runtime (`onnx_network`, from the file `onnx_export` makes once with torch: `imp
export-onnx`, run by scripts/setup.sh) on conditions made by NumPy twins of the torch rasteriser,
mesh conditions and identity warp (`raster`, `conditions`; tests keep them equal to the code that
makes the training pairs).

May import: `model.geometry`, `model.formats`, `model.tracking`, `model.data`, `model.net`,
`model.diffusion` (its torch-free `clips`; only `onnx_export` imports torch), `model.atomic_write`."""
