"""`imp bench model`: speed and memory of the denoiser on this machine.

For each config: seconds per DDIM step (with the configured classifier-free guidance, i.e. up to
three network evaluations), seconds per generated frame of a long video (steps x s/step over the
frames - 1 new frames each chained clip adds), and peak resident memory. Every config runs in its
own subprocess so that its peak RSS is its own. Random weights: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from model.runtime import add_device_argument

DEFAULT_CONFIGS = ["tiny", "small", "demo", "paper"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", help=f"config name (repeatable; default: {', '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per config")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps of a full sample (default: the config's)")
    parser.add_argument("--timed-steps", type=int, default=None, help="steps actually timed (default 3, paper 1)")
    parser.add_argument("--guidance", choices=["paper", "none"], default="paper",
                        help="paper: portrait 1.5 + first-frame schedule with a first frame given (3 evaluations "
                             "per step); none: one evaluation per step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    add_device_argument(parser, "where the denoiser runs (fp16 autocast on a GPU, as generation)")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)


def measure(name: str, steps: int | None, timed_steps: int | None, guidance: str, threads: int, device: str = "cpu") -> dict:
    """Build `name`, time `timed_steps` guided DDIM steps at batch 1 on `device`, return the figures."""
    import resource
    import time

    import torch

    from model.net.config import get_config
    from model.diffusion.process import Conditions, make_schedule
    from model.diffusion.sampler import DDIMScheduler, Guidance, guided_prediction
    from model.net.precision import for_inference
    from model.net.unet import MPIUNet, count_parameters, format_parameter_counts

    torch.set_num_threads(threads)
    cfg = get_config(name)
    steps = steps or cfg.diffusion.sample_steps
    timed = timed_steps or (1 if cfg.res >= 256 else 3)
    torch.manual_seed(0)
    net = MPIUNet(cfg).eval().to(device)
    model = for_inference(net, device)
    B, T, R, D, Cc = 1, cfg.frames, cfg.res, cfg.planes, cfg.coord_channels
    cond = Conditions(coords=torch.rand(B, T, Cc, R, R) * 2 - 1, mesh_alpha=torch.rand(B, T, D, R, R),
                      portrait=torch.rand(B, 3 + Cc, R, R) * 2 - 1, first_frame=torch.rand(B, 3, R, R) * 2 - 1,
                      first_frame_flag=torch.ones(B), background=torch.rand(B, 3, R, R) * 2 - 1,
                      identity=torch.rand(B, T, cfg.identity_channels, R, R) if cfg.identity_warp else None).to(device)
    g = Guidance.paper(T, cfg.diffusion.portrait_guidance, cfg.diffusion.first_frame_guidance) if guidance == "paper" else Guidance.none(T)
    sched = DDIMScheduler(make_schedule(cfg.diffusion), cfg.diffusion.eta)
    sched.set_timesteps(steps)
    x = torch.randn(B, T, 3, R, R, generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    calls = 0

    def count_calls(*_):
        nonlocal calls
        calls += 1
    net.register_forward_hook(count_calls)
    ts = sched.timesteps.tolist()
    with torch.no_grad():
        if cfg.res < 256:  # warm-up (allocator, oneDNN kernels); too slow to afford at paper size
            guided_prediction(model, x, torch.full((B,), ts[0], device=device), cond, g)
        calls = 0
        sync()
        start = time.perf_counter()
        for t in ts[:timed]:
            _, x0 = guided_prediction(model, x, torch.full((B,), t, device=device), cond, g)
            x = sched.step(x0, t, x)
        sync()
        elapsed = time.perf_counter() - start
    s_per_step = elapsed / min(timed, len(ts))
    return {
        "config": name, "device": device, "params": count_parameters(net)["total"], "res": R, "frames": T, "planes": D,
        "s_per_step": round(s_per_step, 4), "s_per_frame": round(s_per_step * steps / max(T - 1, 1), 4),
        "s_per_frame_per_step": round(s_per_step / T, 5),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
        "steps": steps, "timed_steps": min(timed, len(ts)), "evals_per_step": calls / min(timed, len(ts)),
        "guidance": guidance, "threads": threads, "params_by_part": format_parameter_counts(count_parameters(net)),
    }


def _run_child(name: str, args: argparse.Namespace) -> dict:
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "app.cli", "bench", "model", "--in-process", "--json", "--config", name,
           "--guidance", args.guidance, "--threads", str(args.threads), "--device", args.device]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.timed_steps:
        cmd += ["--timed-steps", str(args.timed_steps)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark of config {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    from model.net.config import CONFIGS

    names = args.config or DEFAULT_CONFIGS
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"imp bench model: unknown config(s) {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    from model.runtime import resolve_device

    try:
        args.device = resolve_device(args.device)
    except ValueError as exc:
        print(f"imp bench model: {exc}", file=sys.stderr)
        return 2
    if args.in_process:
        for name in names:
            print(json.dumps(measure(name, args.steps, args.timed_steps, args.guidance, args.threads, args.device)), flush=True)
        return 0
    if not args.json:
        print(f"{'config':8} {'params':>9} {'res':>5} {'frames':>6} {'planes':>6} {'evals/step':>10} "
              f"{'s/step':>9} {'s/frame/step':>12} {'s/frame':>9} {'peak RSS':>9}", flush=True)
    for name in names:
        r = _run_child(name, args)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['config']:8} {r['params'] / 1e6:8.2f}M {r['res']:5d} {r['frames']:6d} {r['planes']:6d} "
                  f"{r['evals_per_step']:10.1f} {r['s_per_step']:9.3f} {r['s_per_frame_per_step']:12.4f} {r['s_per_frame']:9.3f} "
                  f"{r['peak_rss_gb']:7.2f}GB", flush=True)
            print(f"         parameters: {r['params_by_part']}", flush=True)
    if not args.json:
        print(f"({args.device}, batch 1, {args.threads} threads, guidance {args.guidance}; s/frame/step = s/step / frames (all guidance branches); "
              "s/frame = steps x s/step / (frames - 1), clips chained; "
              "timings are noisy on a shared CPU)")
    return 0
