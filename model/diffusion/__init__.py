"""Diffusion: the process on the 2D video seen by the MPI camera, what the denoiser is conditioned
on and one conditioned network evaluation (`process`), DDIM with two-scale guidance and clip
chaining (`sampler`), and generation from a portrait and a driving source to MPI frames
(`pipeline`).

May import: `model.geometry`, `model.formats`, `model.tracking`, `model.data`, `model.net`."""
