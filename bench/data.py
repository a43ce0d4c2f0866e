"""`imp bench data`: does the data loader or the training step limit training on this machine?

It measures, on real footage and for one config:
- the loader alone (model/data/loader.py): samples/s of the stage-2 batch stream (L_side on 20 % of
  the steps, the paper's p_side, which adds the reference-camera rasterising) with each worker
  count asked for, after the first batch (worker start-up) and with the conditions cache filled;
- a full training step with the real loop (model/training/loop.py, random weights, one process),
  in its own process so that its peak RSS is its own: samples/s, seconds per step spent waiting for
  the batch, peak RSS, with the loader's default workers (or the largest count asked for).

When the loader's samples/s are well above the step's, the step limits (add GPUs, not workers);
when they are close, raise --workers. The data is a prepared dataset (`--data`), or one video of
../shared/data prepared at the config's resolution into a temporary folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.train import DEFAULT_VIDEO

DEFAULT_TRAIN_STEPS = {"tiny": 8, "small": 3, "demo": 3, "paper": 1}
DEFAULT_BATCHES = {"tiny": 40, "small": 20, "demo": 20, "paper": 6}
P_SIDE = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", metavar="NAME", help="model config (default tiny)")
    parser.add_argument("--data", type=Path, default=None, help="prepared dataset (`imp prepare`); default: prepare "
                        "../shared/data/videos/LivePortrait/d18.mp4 at the config's resolution")
    parser.add_argument("--workers", type=int, nargs="+", default=None, metavar="N",
                        help="loader worker counts to measure (default: 0 and the training default for this machine)")
    parser.add_argument("--batches", type=int, default=None, help="timed loader batches per worker count "
                        f"(default {', '.join(f'{k} {v}' for k, v in DEFAULT_BATCHES.items())})")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps after an untimed first one, 0 = "
                        f"loader only (default {', '.join(f'{k} {v}' for k, v in DEFAULT_TRAIN_STEPS.items())})")
    parser.add_argument("--stage", choices=("bootstrap", "alternating"), default="alternating",
                        help="bootstrap: L_mpi batches, the colour branch trains; alternating (default): L_side on 20 %% of the "
                             "steps, the geometry branch trains")
    parser.add_argument("--frames", type=int, default=None,
                        help="clip length instead of the config's (for a machine that cannot hold a full `paper` step: "
                             "activation memory and time scale about linearly with it)")
    parser.add_argument("--res", type=int, default=None, help="resolution instead of the config's (same purpose as --frames)")
    parser.add_argument("--activation-checkpointing", choices=("auto", "on", "off"), default="auto",
                        help="for the training step (default auto: on for paper)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training step (default 1, as `imp train`)")
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda[:N] (default auto: cuda when available); on a GPU the loader's "
                        "batches are finished there (mesh conditions), as in training")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--step-child", default=None, help=argparse.SUPPRESS)  # internal: run the step in this process


def _config(name: str, frames: int | None, res: int | None):
    from model.net.config import get_config

    cfg = get_config(name)
    if frames is None and res is None:
        return cfg
    frames, res = frames or cfg.frames, res or cfg.res
    return dataclasses.replace(cfg, name=f"{name}-{res}px-{frames}f", frames=frames, res=res)


def _options(stage: str, steps: int = 1):
    from model.training.step import TrainOptions

    return TrainOptions(stage=stage, steps=steps, p_side=P_SIDE)


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


def measure_loader(cfg, data: Path, cache: Path, workers: int, batches: int, stage: str = "alternating",
                   device: str = "cpu") -> dict:
    """Samples/s of the batch stream of `stage` with `workers` processes, delivered on `device`
    (first batch excluded)."""
    import functools

    from model.data.loader import BatchLoader, SamplerSpec
    from model.training.step import chooses_side

    opts = _options(stage)
    spec = SamplerSpec(data, cfg, cache, None, (), opts.seed)
    side_of = functools.partial(chooses_side, opts)
    t0, sides = None, 0
    for step, batch in BatchLoader(spec, 0, 1, 0, batches + 1, side_of, device, workers):
        if t0 is None:
            t0 = time.perf_counter()  # the first batch includes starting the workers
            continue
        sides += batch.side
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"workers": workers, "samples_s": round(batches / seconds, 3), "batches": batches, "side_batches": sides}


def measure_step(cfg, data: Path, cache: Path, workers: int, steps: int, checkpointing: str, threads: int,
                 stage: str = "alternating", device: str = "cpu") -> dict:
    """The real loop for `steps` + 1 steps of `stage` from random weights; its figures without the
    first (peak RSS: of the whole process, from the second step on it includes Adam's moments)."""
    import resource

    import torch

    from model.net.checkpoint import save_checkpoint
    from model.net.unet import MPIUNet
    from model.training.loop import RunSettings, train
    from model.training.step import chooses_side

    torch.set_num_threads(threads)
    opts = _options(stage, steps + 1)
    with tempfile.TemporaryDirectory(prefix="imp-bench-data-") as tmp:
        init = None
        if stage == "alternating":  # stage 2 starts from a checkpoint: random weights will do for timing
            torch.manual_seed(0)
            init = save_checkpoint(Path(tmp) / "init.safetensors", MPIUNet(cfg), cfg, {"step": 0})
        stamps: list[float] = []
        r = train(cfg, opts, RunSettings(out=Path(tmp) / "run", data=data, init=init, progress=False, tensorboard=False,
                                         cache_dir=cache, checkpoint_every=10 ** 9, workers=workers, device=device,
                                         activation_checkpointing=checkpointing, on_step=lambda s: stamps.append(time.perf_counter())),
                  log=lambda msg: None)
    return {"stage": stage, "step_workers": workers, "step_samples_s": round(r.samples_per_second, 4),
            "step_s": round((stamps[-1] - stamps[0]) / max(1, len(stamps) - 1), 3), "step_data_wait_s": round(r.data_seconds_per_step, 3),
            "step_cpu_s": round(r.cpu_seconds_per_step, 2), "timed_steps": steps,
            "timed_side_steps": sum(chooses_side(opts, s) for s in range(1, steps + 1)),
            "activation_checkpointing": checkpointing, "step_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def _step_in_child(args: argparse.Namespace, data: Path, cache: Path, workers: int, steps: int) -> dict:
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "app.cli", "bench", "data", "--config", args.config, "--data", str(data), "--step-child", str(cache),
           "--workers", str(workers), "--train-steps", str(steps), "--activation-checkpointing", args.activation_checkpointing,
           "--threads", str(args.threads), "--stage", args.stage, "--device", args.device] + (["--frames", str(args.frames)] if args.frames else []) + \
        (["--res", str(args.res)] if args.res else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"training step of config {args.config!r} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    from model.data.loader import default_workers

    from model.runtime import resolve_device

    try:
        cfg = _config(args.config, args.frames, args.res)
        args.device = resolve_device(args.device)
    except (KeyError, ValueError) as exc:
        print(f"imp bench data: {exc}", file=sys.stderr)
        return 2
    steps = DEFAULT_TRAIN_STEPS.get(args.config, 2) if args.train_steps is None else args.train_steps
    if args.step_child is not None:
        print(json.dumps(measure_step(cfg, args.data, Path(args.step_child), args.workers[0], steps, args.activation_checkpointing,
                                      args.threads, args.stage, args.device)), flush=True)
        return 0
    import torch

    torch.set_num_threads(args.threads)  # in-process batches (0 workers) run on the training process's threads
    counts = args.workers if args.workers is not None else sorted({0, default_workers()})
    batches = args.batches or DEFAULT_BATCHES.get(args.config, 10)
    out = {"config": cfg.name, "device": args.device, "res": cfg.res, "frames": cfg.frames, "planes": cfg.planes, "stage": args.stage,
           "p_side": P_SIDE if args.stage == "alternating" else 0.0,
           "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="imp-bench-data-") as tmp:
        tmp = Path(tmp)
        try:
            data = _dataset(cfg, args.data, tmp)
        except FileNotFoundError as exc:
            print(f"imp bench data: {exc}", file=sys.stderr)
            return 2
        cache = tmp / "cache"
        from model.data.loader import SamplerSpec

        SamplerSpec(data, cfg, cache, None, (), 0).build().prepare_cache()  # steady state: conditions cached, as after the first epoch
        out["loader"] = [measure_loader(cfg, data, cache, w, batches, args.stage, args.device) for w in counts]
        if steps > 0:
            out.update(_step_in_child(args, data, cache, max(counts), steps))
    if args.json:
        print(json.dumps(out), flush=True)
        return 0
    stream = f"stage 2 (L_side on {int(P_SIDE * 100)} % of the steps)" if args.stage == "alternating" else "bootstrap (L_mpi)"
    print(f"{cfg.name}: {cfg.res}² x {cfg.frames} frames x {cfg.planes} planes, batch 1, {stream}, {args.device}, "
          f"{out['cores']} cores, load average {out['load_average'][0]}")
    for r in out["loader"]:
        print(f"  loader alone, {r['workers']} worker(s){' (in-process)' if r['workers'] == 0 else ''}: {r['samples_s']:.3f} samples/s "
              f"({r['batches']} batches, {r['side_batches']} L_side)")
    if steps > 0:
        print(f"  training step ({out['step_workers']} worker(s), activation checkpointing {out['activation_checkpointing']}): "
              f"{out['step_samples_s']:.4f} samples/s, {out['step_s']:.2f} s/step of which {out['step_data_wait_s']:.3f} s waiting "
              f"for data, peak RSS {out['step_peak_rss_gb']:.2f} GB ({out['timed_steps']} timed step(s), {out['timed_side_steps']} L_side)")
        best = max(r["samples_s"] for r in out["loader"])
        verdict = ("the training step limits" if best > 1.5 * out["step_samples_s"] else
                   "the loader limits: raise --workers, or give each training process more cores")
        print(f"  -> {verdict} (best loader {best / max(out['step_samples_s'], 1e-9):.1f}x the step rate)")
    return 0
