"""`imp bench train`: training throughput per config on this machine (issue 5's figure).

For each config it runs, in a temporary run folder and with the real training loop
(`model.training.loop.train`, one process, no TensorBoard): the bootstrap stage (L_mpi), then from that
checkpoint the alternating stage with L_mpi only (`p_side` 0) and with L_side on every step
(`p_side` 1, k pseudo-ground-truth steps). It prints samples/s (wall clock) and process CPU seconds
per step, both without the first step (caches, allocations), and the expected stage-2 rate at the
paper's p_side = 0.2. The data is a prepared dataset (`--data`), or one video of ../shared/data
prepared at the config's resolution into the temporary folder.

Random weights and few steps: speed does not depend on what has been learned. Timings on a shared
machine are noisy; the CPU seconds per step are the steadier figure.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

DEFAULT_CONFIGS = ["tiny", "small"]
DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "LivePortrait" / "d18.mp4"
DEFAULT_STEPS = {"tiny": 30, "small": 6, "paper": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", help=f"config name (repeatable; default: {', '.join(DEFAULT_CONFIGS)}; "
                                                          "paper needs far more memory and hours per step on a CPU)")
    parser.add_argument("--data", type=Path, default=None, help="prepared dataset (`imp prepare`); default: prepare "
                        "../shared/data/videos/LivePortrait/d18.mp4 at each config's resolution")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per stage / branch (default {', '.join(f'{k} {v}' for k, v in DEFAULT_STEPS.items())})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as `imp train`)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per config")


def _dataset(cfg, data: Path | None, tmp: Path) -> Path:
    if data is not None:
        return data
    if not DEFAULT_VIDEO.is_file():
        raise FileNotFoundError(f"{DEFAULT_VIDEO}: no default video (../shared/data beside the checkout); pass --data DATASET")
    from model.data.prepare import PrepareConfig, prepare_dataset

    out = tmp / f"data-{cfg.res}"
    prepare_dataset([DEFAULT_VIDEO], out, PrepareConfig(res=cfg.res, max_frames=max(2 * cfg.frames, 48)), progress=False,
                    log=lambda msg: None)
    return out


def measure(name: str, data: Path | None, steps: int | None, threads: int) -> dict:
    """Samples/s and CPU s/step of bootstrap, alternating L_mpi and alternating L_side for `name`."""
    import torch

    from model.net.config import get_config
    from model.training.loop import RunSettings, train
    from model.training.step import TrainOptions

    torch.set_num_threads(threads)
    cfg = get_config(name)
    n = (steps or DEFAULT_STEPS.get(name, 4)) + 1  # + the untimed first step
    rows = {}
    with tempfile.TemporaryDirectory(prefix="imp-bench-train-") as tmp:
        tmp = Path(tmp)
        ds = _dataset(cfg, data, tmp)
        # one conditions cache for all runs; no progress, logs or checkpoints before the end
        settings = lambda out, init=None: RunSettings(out=tmp / out, data=ds, init=init, progress=False, tensorboard=False,
                                                      cache_dir=tmp / "cache", checkpoint_every=10 ** 9)
        quiet = lambda msg: None
        rows["bootstrap"] = train(cfg, TrainOptions(stage="bootstrap", steps=n), settings("bootstrap"), quiet)
        for branch, p_side in (("alternating_mpi", 0.0), ("alternating_side", 1.0)):
            rows[branch] = train(cfg, TrainOptions(stage="alternating", steps=n, p_side=p_side),
                                 settings(branch, rows["bootstrap"].checkpoint), quiet)
    out = {"config": name, "res": cfg.res, "frames": cfg.frames, "planes": cfg.planes, "timed_steps": n - 1, "threads": threads}
    for branch, r in rows.items():
        out[f"{branch}_samples_s"] = round(r.samples_per_second, 3)
        out[f"{branch}_cpu_s_per_step"] = round(r.cpu_seconds_per_step, 3)
    # expected stage-2 rate with L_side on 20 % of the steps (the paper's p_side)
    t_mix = 0.8 / out["alternating_mpi_samples_s"] + 0.2 / out["alternating_side_samples_s"]
    out["alternating_p0.2_samples_s"] = round(1.0 / t_mix, 3)
    return out


def run(args: argparse.Namespace) -> int:
    configs = args.config or DEFAULT_CONFIGS
    for name in configs:
        r = measure(name, args.data, args.steps, args.threads)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{name:6s} {r['res']}² x {r['frames']} frames x {r['planes']} planes, 1 process, {r['threads']} thread(s): "
                  f"bootstrap {r['bootstrap_samples_s']:.2f} samples/s ({r['bootstrap_cpu_s_per_step']:.2f} CPU s/step); "
                  f"alternating L_mpi {r['alternating_mpi_samples_s']:.2f}, L_side {r['alternating_side_samples_s']:.2f}, "
                  f"at p_side 0.2 {r['alternating_p0.2_samples_s']:.2f} samples/s", flush=True)
    return 0
