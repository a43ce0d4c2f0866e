"""GPU switches of a training run: TF32 matmuls, deterministic kernels, torch.compile. None of them
changes what a run is (they are RunSettings, not TrainOptions: a run may resume with other ones).

What stays exact on a GPU and what does not (docs/training.md, "Determinism"):
- exact everywhere: the data (clip choice, L_mpi / L_side, t, noise, condition dropout and the
  pseudo ground truth's noise come from CPU generators seeded by (seed, step, rank), so they are
  the same on every device), the weights, Adam's moments and the step restored by --resume;
- not exact on CUDA, even with `deterministic`: the backward of grid_sample (the MPI renderer, in
  every loss) and of linear interpolation (the temporal upsampler) accumulate with atomics in a
  varying order; torch has no deterministic kernel for them and only warns. Two runs, or a run and
  its resumed copy, agree to float rounding at first and drift apart slowly like any two
  trainings from the same start; they are statistically the same run, not bit-equal.
- `deterministic` removes every other source (cuDNN autotuning, nondeterministic cuBLAS
  workspaces, scatter kernels that have a deterministic variant); TF32 and bf16 change the numbers
  (less precise products) but not their reproducibility; torch.compile may pick other kernels
  after a restart (autotuning), so resumed runs differ more with it.
- on a CPU everything is bit-exact (tests/test_train.py, the SIGKILL test in tests/test_kill_resume.py).
"""
from __future__ import annotations

import os

import torch
from torch import nn


def configure(device: torch.device, tf32: bool, deterministic: bool) -> list[str]:
    """Set the process-wide CUDA switches for a run on `device`; returns what was set (for the log).
    On a CPU nothing is changed."""
    if device.type != "cuda":
        return []
    done = []
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if tf32:
        done.append("TF32 matmuls and convolutions")
    if deterministic:
        # cuBLAS reads this when it creates its handle, i.e. at the first matmul: set it before any
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)  # grid_sample's backward has no such kernel: warn, not fail
        done.append("deterministic kernels where torch has them")
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: autotuned convolutions pay off
    return done


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """`model` through torch.compile when asked (the first steps are slow while it compiles)."""
    return torch.compile(model) if enabled else model
