"""im-portrait's model side, one subpackage per stage of the pipeline (../shared/DESIGN.md), each
importing only the stages before it:

    geometry/    cameras, MPI math + reference renderer, rasteriser, mesh conditions, portrait warp
    formats/     MPI clip files, glTF export, video decoding / encoding
    tracking/    MediaPipe face tracking: head pose, identity template, expressions, the head crop
    net/         configs, the Space-Time U-Net, checkpoints, model variants and the demo weights
    data/        mattes, dataset preparation and reading, training pairs, driving sources
    diffusion/   noise process + conditions, DDIM sampler with guidance, the generation pipeline
    training/    one training iteration, the training loop, losses, LPIPS
    evaluation/  `imp eval`: self-reenactment and identity figures
    coldstart/   generation without torch: a one-step student in ONNX Runtime with NumPy conditions
                 (the viewer's worker: its first frame does not wait for torch's import)

Flat: `lift` (the non-learned portrait -> MPI baseline), `resources` (shipped shaders / assets),
`runtime` (torch threads and device), `atomic_write`. Nothing here imports `app`; `app` builds on
this package.
"""
