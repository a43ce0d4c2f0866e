"""`imp train --data DATASET --config NAME --out RUN [--stage bootstrap|alternating] [--resume] ...`:
train the MPI diffusion model on prepared monocular videos (paper sec. 3.3; recipe in
docs/training.md); `imp train --stage distill --teacher CKPT --data DATASET --out RUN` distils a
trained model into a student that takes the guidance scales as inputs (one network pass instead
of two or three). Works alone on a CPU / GPU or under `torchrun` (DistributedDataParallel)."""
from __future__ import annotations

import argparse
import sys

from model.runtime import add_device_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATASET", help="dataset folder written by `imp prepare`")
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="model config: tiny, small, demo or paper (default tiny; distill: the teacher's)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder: checkpoints, config, TensorBoard logs, caches")
    parser.add_argument("--stage", choices=("bootstrap", "alternating", "distill"), default="bootstrap",
                        help="bootstrap: colour branch with L_mpi; alternating: geometry branch with L_mpi / L_side; distill: a "
                             "student with the guidance scales as inputs learns --teacher's guided prediction (default bootstrap)")
    parser.add_argument("--teacher", metavar="CKPT", help="distill stage: the trained model to distil (e.g. assets/demo-teacher.safetensors)")
    parser.add_argument("--resume", action="store_true", help="continue RUN/<stage>/latest.safetensors bit-exactly")
    parser.add_argument("--auto-resume", action="store_true",
                        help="resume when RUN/<stage> has a checkpoint, else start: for job scripts that are requeued or "
                             "restarted (torchrun --max_restarts) with the same command")
    parser.add_argument("--init", metavar="CKPT", help="start from this checkpoint: alternating stage default RUN/bootstrap/latest.safetensors; bootstrap: a warm "
                             "start from the weights of the same config whose shapes match (the rest initialised fresh)")
    parser.add_argument("--steps", type=int, default=1000, help="total iterations of this stage (default 1000)")
    parser.add_argument("--batch", type=int, default=1, help="clips per process and iteration (default 1)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--lpips", metavar="PATH", help="LPIPS-alex weights (model/training/lpips.py says how to make them); without it no LPIPS term")
    parser.add_argument("--p-side", type=float, default=0.2, help="probability of L_side per iteration in the alternating stage (default 0.2; 0 = ablation 'no L_side')")
    parser.add_argument("--k-steps", type=int, default=4, help="DDIM steps for the pseudo ground truth (default 4)")
    parser.add_argument("--no-residual", action="store_true", help="ablation: residual image = frontal (single-image MPI)")
    parser.add_argument("--no-late-stage-noise", action="store_true", help="ablation: L_side draws t from [0, T] instead of [T/2, T]")
    parser.add_argument("--videos", nargs="+", metavar="ID", help="train on these dataset video ids only")
    parser.add_argument("--exclude", nargs="+", metavar="ID", default=[], help="leave these video ids out (held out for `imp eval`)")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="save every N steps (default 200; also at the end and on Ctrl-C / SIGTERM)")
    parser.add_argument("--keep-last", type=int, default=3, metavar="N",
                        help="step checkpoints kept in RUN/<stage>/ (default 3; the one resumed from is kept too)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="data loader processes per training process (default: the cores left per training process, "
                             "at most 8: 1 on a 2-core machine with one process; 0 = build batches in the training process)")
    parser.add_argument("--prefetch", type=int, default=2, metavar="N", help="batches each loader process builds ahead (default 2)")
    parser.add_argument("--activation-checkpointing", choices=("auto", "on", "off"), default="auto",
                        help="recompute activations in the backward pass to save memory (default auto: on for configs of 256 px "
                             "and more, i.e. paper)")
    parser.add_argument("--image-every", type=int, default=100, help="TensorBoard sample renders every N steps (default 100; 0 = never)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of every random draw (default 0)")
    add_device_argument(parser, "where training runs")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast of the training pass and the L_side pseudo ground truth "
                                                          "(CUDA only; ignored on CPU)")
    parser.add_argument("--tf32", action="store_true", help="CUDA: TF32 matmuls and convolutions (faster on Ampere and newer, less precise)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps; mostly pays off on a GPU)")
    parser.add_argument("--deterministic", action="store_true",
                        help="CUDA: deterministic kernels where torch has them (docs/training.md says what stays exact)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per process (default 1: on a busy CPU more threads spin-wait and a step "
                             "can get 10-100x slower; for parallelism on a CPU start processes with torchrun)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from model.runtime import torch_threads

    with torch_threads(args.threads):
        return _run(args)


def _config(args: argparse.Namespace):
    """The model config to train: --config (default tiny), or for a student its teacher's with the
    guidance inputs (model/training/distill.py)."""
    from model.net.checkpoint import read_config
    from model.net.config import get_config
    from model.training.distill import student_config

    if args.stage != "distill":
        if args.teacher is not None:
            raise ValueError("--teacher is for --stage distill")
        return get_config(args.config or "tiny")
    if args.teacher is None:
        raise ValueError("--stage distill needs --teacher CKPT: the trained model to distil")
    teacher = read_config(args.teacher)
    if args.config is not None and args.config != teacher.name:
        raise ValueError(f"--config {args.config}: a student has its teacher's config ({teacher.name}); drop --config")
    return student_config(teacher)


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from model.net.checkpoint import CheckpointError
    from model.data.dataset import DatasetError
    from model.training.loop import RunSettings, TrainError, train
    from model.runtime import resolve_device
    from model.training.step import TrainOptions

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"imp train: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = _config(args)
        opts = TrainOptions(stage=args.stage, teacher=args.teacher, steps=args.steps, batch=args.batch, lr=args.lr, p_side=args.p_side,
                            k_steps=args.k_steps, late_stage_noise=not args.no_late_stage_noise, residual=not args.no_residual,
                            lpips=args.lpips, seed=args.seed, amp=args.amp and device.startswith("cuda"),
                            videos=tuple(args.videos) if args.videos else None, exclude=tuple(args.exclude))
        settings = RunSettings(out=Path(args.out), data=Path(args.data), resume=args.resume, auto_resume=args.auto_resume,
                               init=Path(args.init) if args.init else None, checkpoint_every=max(1, args.checkpoint_every),
                               image_every=args.image_every, device=device, progress=not args.quiet, workers=args.workers,
                               prefetch=args.prefetch, keep_last=args.keep_last,
                               activation_checkpointing=args.activation_checkpointing, tf32=args.tf32, compile=args.compile,
                               deterministic=args.deterministic)
        log = lambda msg: print(f"imp train: {msg}", file=sys.stderr)
        result = train(cfg, opts, settings, log)
    except (KeyError, ValueError, TrainError, CheckpointError, DatasetError, FileNotFoundError) as exc:
        print(f"imp train: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports for all
        return 130 if result.interrupted else 0
    print(f"{result.checkpoint}: step {result.step}/{opts.steps}, last loss {result.losses[-1] if result.losses else float('nan'):.4f}, "
          f"{result.samples_per_second:.2f} samples/s ({result.cpu_seconds_per_step:.1f} CPU s/step, "
          f"{result.data_seconds_per_step:.2f} s/step waiting for data)")
    return 130 if result.interrupted else 0
