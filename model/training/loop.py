"""The training loop around model/training/step.py (and model/training/distill.py for the distill
stage): a run folder, checkpoints that survive anything,
bit-exact resume, DistributedDataParallel, TensorBoard logs and a progress bar.

Run folder (RUN = --out):

    RUN/<stage>/step-<step>.safetensors  weights + config + training state (step, options, variant) +
                                     the optimizer's moments and the RNG state (model/net/checkpoint.py);
                                     the last `keep_last` kept, plus the one the run resumed from
    RUN/<stage>/latest.safetensors   the newest of them (a hard link; model/training/checkpoint_files.py)
    RUN/<stage>/config.json          the model config, the training options and the run settings, readable
    RUN/tb/<stage>/                  TensorBoard: losses per step, sample renders (front, side)
    RUN/cache/                       per-video mesh conditions (model/data/pairs.py)

Never lose work: a checkpoint is written to a temporary file, fsynced, and renamed into place with
its folder fsynced (`save_checkpoint`), every `checkpoint_every` steps, at the end, and when SIGINT /
SIGTERM arrive (the loop finishes the current step, saves and returns). A SIGKILL or a power cut
at any moment loses at most the steps since the last save (tests/test_kill_resume.py). Resume is
bit-exact because every random draw of step k (batch, branch, t, noise, condition dropout, pseudo
ground truth) comes from generators seeded by (seed, step, rank), and the weights and Adam moments
are restored exactly.

Data: batches come from model/data/loader.py, built ahead by DataLoader worker processes
(`workers`; 0 = in this process), L_side conditions rasterised on the GPU when training on one.
Memory and speed on a GPU: activation checkpointing (`activation_checkpointing`, on for `paper`),
bf16 autocast (TrainOptions.amp), TF32, torch.compile, deterministic kernels
(model/training/activation_checkpointing.py, model/training/cuda.py).

Distributed: started by `torchrun`, each process trains on its own batches (rank in the seed) and
DDP averages the gradients; the branch (L_mpi / L_side) is drawn without the rank, so all
replicas run the same graph. Only rank 0 writes checkpoints and logs. gloo on CPU, nccl on CUDA.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from model.geometry import camera, mpi
from model.net.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.net.config import ModelConfig
from model.atomic_write import link_atomic, write_json_atomic
from model.diffusion.process import make_schedule
from model.data.loader import BatchLoader, SamplerSpec, default_workers
from model.data.pairs import PairSampler, TrainBatch
from model.geometry.portrait_warp import warp_composite
from model.training import activation_checkpointing, checkpoint_files, cuda
from model.training.distill import distill_step, student_config, student_weights
from model.training.step import StepOutput, TrainOptions, chooses_side, set_stage, step_seed, training_step
from model.net.precision import Autocast
from model.net.unet import MPIUNet
from model.net.variant import VariantModel

CHECKPOINT = checkpoint_files.LATEST


class TrainError(RuntimeError):
    """A run that cannot start: missing bootstrap checkpoint, resume mismatch, existing run, ..."""


@dataclass
class RunSettings:
    """How the loop runs (not what it computes): where, how often it saves and logs."""

    out: Path
    data: Path
    resume: bool = False
    auto_resume: bool = False  # resume when the stage has a checkpoint, else start (job scripts, requeues, torchrun restarts)
    init: Path | None = None  # alternating stage: start from this checkpoint (default RUN/bootstrap/latest)
    checkpoint_every: int = 500
    log_every: int = 1
    image_every: int = 100
    device: str = "cpu"
    progress: bool = True
    tensorboard: bool = True
    stop_after: int | None = None  # stop (and save) after this many steps of this invocation: tests
    cache_dir: Path | None = None  # mesh conditions cache (default RUN/cache); runs on the same data may share it
    workers: int | None = None  # DataLoader worker processes per training process (None: loader.default_workers; 0: in-process)
    prefetch: int = 2  # batches each worker builds ahead
    keep_last: int = 3  # step checkpoints kept (plus the one resumed from)
    activation_checkpointing: str = "auto"  # "auto" (on for paper), "on", "off"
    tf32: bool = False  # CUDA: TF32 matmuls / convolutions
    compile: bool = False  # torch.compile the training model
    deterministic: bool = False  # CUDA: deterministic kernels where torch has them (model/training/cuda.py)
    on_step: Callable[[int], None] | None = None  # called after every optimizer step with the step count (tests, benches)


@dataclass
class TrainResult:
    step: int
    checkpoint: Path
    interrupted: bool
    losses: list[float] = field(default_factory=list)
    samples_per_second: float = 0.0  # wall clock, first step excluded
    data_seconds_per_step: float = 0.0  # of that, waiting for the batch (the loader limits when this is large)
    cpu_seconds_per_step: float = 0.0  # process CPU time (all threads), first step excluded: less noisy on a shared machine
    weights_digest: str = ""
    last_terms: dict[str, float] = field(default_factory=dict)  # the last step's loss terms


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        owns = True
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def weights_digest(net: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in name order (replicas / runs compare equal iff bit-equal)."""
    h = hashlib.sha256()
    for name, p in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def optimizer_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> dict[str, Tensor]:
    """The optimizer's per-parameter state as flat named tensors (for the checkpoint's extras)."""
    out = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            out[f"optim/{i}/{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], extra: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, v in extra.items():
        if key.startswith("optim/"):
            _, i, k = key.split("/", 2)
            state.setdefault(int(i), {})[k] = v
    if state and max(state) >= len(params):
        raise CheckpointError("the checkpoint's optimizer state has more parameters than this stage trains")
    sd = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


class StopFlag:
    """Set by SIGINT / SIGTERM (main thread only); the loop checks it between steps. A second
    signal interrupts at once."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # asked twice: stop now (the last checkpoint on disk is intact)
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def set(self) -> bool:
        return self.signal is not None


def _any_rank(flag: bool, dist_info: Distributed, device: torch.device) -> bool:
    if dist_info.world <= 1:
        return flag
    import torch.distributed as dist

    v = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(v, op=dist.ReduceOp.MAX)
    return bool(v.item() > 0)


def _initial_weights(net: MPIUNet, cfg: ModelConfig, opts: TrainOptions, settings: RunSettings, log: Callable[[str], None],
                     teacher: MPIUNet | None = None) -> None:
    if opts.stage == "distill":  # the student starts as the teacher (its guidance inputs weighted 0)
        net.load_state_dict(student_weights(teacher.state_dict(), net))
        log(f"distill: the student starts from the teacher {opts.teacher}")
        return
    if opts.stage != "alternating":
        if settings.init is not None:  # warm start: every parameter the checkpoint has with the same shape
            ckpt = load_checkpoint(settings.init, expected=cfg)
            own = net.state_dict()
            taken = {k: v for k, v in ckpt.weights.items() if k in own and own[k].shape == v.shape}
            net.load_state_dict(taken, strict=False)
            fresh = sorted(k for k in own if k not in taken)
            log(f"{opts.stage}: starting from {settings.init} ({len(taken)} of {len(own)} tensors; new: "
                f"{', '.join(fresh[:6]) or 'none'}{' ...' if len(fresh) > 6 else ''})")
        return
    src = settings.init or settings.out / "bootstrap" / CHECKPOINT
    if not Path(src).is_file():
        raise TrainError(f"stage 'alternating' starts from a bootstrapped model, but {src} does not exist: run "
                         f"`imp train --stage bootstrap --out {settings.out}` first, or pass --init CHECKPOINT")
    ckpt = load_checkpoint(src, expected=cfg)
    net.load_state_dict(ckpt.weights)
    log(f"alternating stage: starting from {src} (step {ckpt.state.get('step')} of stage {ckpt.state.get('stage')!r})")


def _log_images(writer, step: int, batch: TrainBatch, out: StepOutput) -> None:
    """Frame 0 of sample 0: real target | rendering in the target camera | a side view (15 deg
    orbit of the MPI camera about the head joint) | the MPI's disparity in the side view, and with
    the identity condition a second row: the reference frame | the condition over the background |
    its confidence | its alpha."""
    pred = out.pred
    K = batch.K[:1]
    T_head = batch_T_mpi_from_head(batch)[:1]
    T_side = camera.orbit(T_head, 0.26) @ camera.invert_pose(T_head)  # side camera from MPI camera
    depths = batch.depths[:1, 0]
    r = mpi.render(pred.frontal[:1, 0], pred.residual[:1, 0], pred.alpha[:1, 0], depths, K, K, T_side, batch.background[:1])
    disp = r.disparity[0]
    disp = (disp - disp.min()) / (disp.max() - disp.min()).clamp_min(1e-6) * 2 - 1
    rows = [[batch.target[0, 0], out.rendering[0, 0], r.rgb[0], disp.expand(3, -1, -1)]]
    if batch.identity is not None:
        ident = batch.identity[0, :1]
        rows.append([batch.portrait[0, :3], warp_composite(ident, batch.background[:1])[0],
                     ident[0, 4:5].expand(3, -1, -1) * 2 - 1, ident[0, 3:4].expand(3, -1, -1) * 2 - 1])
    grid = torch.cat([torch.cat([tile.clamp(-1, 1) for tile in row], -1) for row in rows], -2) * 0.5 + 0.5
    writer.add_image("samples/target_front_side_disparity", grid.cpu(), step)


def batch_T_mpi_from_head(batch: TrainBatch) -> Tensor:
    """(B, 4, 4): the MPI camera's head pose for frame 0 of each clip."""
    return batch.T_mpi_from_head[:, 0]


def train(cfg: ModelConfig, opts: TrainOptions, settings: RunSettings, log: Callable[[str], None] = print) -> TrainResult:
    """Train one stage (see the module docstring); returns where it stopped."""
    settings.out = Path(settings.out)
    dist_info = init_distributed(settings.device)
    device = torch.device(settings.device if not settings.device.startswith("cuda") or dist_info.world == 1
                          else f"cuda:{dist_info.local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    say = log if dist_info.main else (lambda msg: None)
    stage_dir = settings.out / opts.stage
    ckpt_path = stage_dir / CHECKPOINT

    if settings.keep_last < 1:
        raise TrainError(f"--keep-last must be at least 1, got {settings.keep_last}")
    teacher_net, teacher = _teacher(opts, cfg, device) if opts.stage == "distill" else (None, None)
    for line in cuda.configure(device, settings.tf32, settings.deterministic):
        say(line)
    torch.manual_seed(opts.seed)  # the same fresh weights on every replica and every run
    net = MPIUNet(cfg)
    start_step, extra = 0, {}
    resumed_from: Path | None = None
    resume = settings.resume or (settings.auto_resume and (ckpt_path.exists() or bool(checkpoint_files.step_files(stage_dir))))
    if resume:
        found = checkpoint_files.newest_readable(stage_dir, cfg, warn=say)
        if found is None:
            raise TrainError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        resumed_from, ckpt = found
        saved = ckpt.state.get("options", {})
        now = opts.to_dict()
        differ = [k for k in now if k != "steps" and saved.get(k) != now[k]]
        if differ:
            raise TrainError(f"--resume: options {differ} differ from the run in {ckpt_path} "
                             f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)}); a resumed run must use the same ones")
        net.load_state_dict(ckpt.weights)
        start_step, extra = int(ckpt.state["step"]), ckpt.extra
        if int(ckpt.state.get("world_size", 1)) != dist_info.world:
            say(f"warning: the run was saved with {ckpt.state.get('world_size')} process(es), resuming with {dist_info.world}: "
                "it continues, but not bit-exactly as the original set-up would have (each rank draws its own batches)")
        say(f"resuming {opts.stage} at step {start_step} from {resumed_from}")
    else:
        if ckpt_path.exists() or checkpoint_files.step_files(stage_dir):
            raise TrainError(f"{ckpt_path} exists: continue that run with --resume, or choose another --out")
        _initial_weights(net, cfg, opts, settings, say, teacher_net)

    named = set_stage(net, opts.stage)
    params = [p for _, p in named]
    recompute = activation_checkpointing.wanted(settings.activation_checkpointing, cfg)
    if recompute:
        say(f"activation checkpointing on ({activation_checkpointing.enable(net)} layers, the rendering and the losses "
            "recompute in the backward pass)")
    vmodel = VariantModel(net, opts.variant).to(device)
    opt = torch.optim.Adam(params, lr=opts.lr)
    if extra:
        load_optimizer_tensors(opt, params, {k: v.to(device) for k, v in extra.items()})
        if "rng/torch" in extra:
            torch.set_rng_state(extra["rng/torch"])
    model = vmodel
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(vmodel, device_ids=[device.index] if device.type == "cuda" else None)
    model = cuda.compiled(model, settings.compile)

    lpips = None
    if opts.lpips:
        from model.training.lpips import load_lpips

        lpips = load_lpips(opts.lpips).to(device).eval()
        for p in lpips.parameters():
            p.requires_grad_(False)
    else:
        say("LPIPS term off (no --lpips PATH given): training with the other supp. A losses only")

    sampler = PairSampler(settings.data, cfg, settings.cache_dir or settings.out / "cache", list(opts.videos) if opts.videos else None,
                          list(opts.exclude), opts.seed, progress=settings.progress and dist_info.main)
    say(f"{opts.stage}: {len(sampler.sources)} videos ({', '.join(sampler.video_ids[:6])}{' ...' if len(sampler.sources) > 6 else ''}), "
        f"config {cfg.name}, {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters, "
        f"batch {opts.batch} x {dist_info.world} process(es), variant {opts.variant}")
    if sampler.too_short:
        say(f"left out {len(sampler.too_short)} video(s) shorter than one {cfg.frames}-frame clip: {', '.join(sampler.too_short)}")
    schedule = make_schedule(cfg.diffusion)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    workers = default_workers(local_world) if settings.workers is None else settings.workers
    spec = SamplerSpec(Path(settings.data), cfg, Path(sampler.cache_dir) if sampler.cache_dir else None, opts.videos,
                       tuple(opts.exclude), opts.seed)
    loader = BatchLoader(spec, dist_info.rank, opts.batch, start_step, opts.steps, functools.partial(chooses_side, opts), device,
                         workers, settings.prefetch, sampler=sampler)
    say(f"data: {workers} loader worker process(es)" + (" (batches built in this process)" if workers == 0 else "") +
        (", L_side conditions rasterised on the GPU" if device.type == "cuda" else ""))

    stop = StopFlag().__enter__()  # from here on a signal means "save and stop", not "die"
    try:
        return _loop(cfg, opts, settings, dist_info, device, net, vmodel, model, opt, params, sampler, loader, schedule, lpips,
                     start_step, resumed_from, recompute, stop, say, teacher)
    finally:
        stop.__exit__()


def _teacher(opts: TrainOptions, cfg: ModelConfig, device: torch.device) -> tuple[MPIUNet, torch.nn.Module]:
    """(the teacher's network, the frozen teacher as distillation calls it) of a distill run,
    checked against the student's config."""
    from model.net.checkpoint import load_model
    from model.net.config import config_differences
    from model.net.variant import VariantModel, variant_of_state

    if not Path(opts.teacher).is_file():
        raise TrainError(f"--teacher {opts.teacher}: no such checkpoint file")
    try:
        net, ckpt = load_model(opts.teacher, device=device)
        expected = student_config(net.cfg)
    except (CheckpointError, ValueError) as exc:
        raise TrainError(f"--teacher {opts.teacher}: {exc}") from None
    differ = config_differences(expected, cfg)
    if differ:
        raise TrainError(f"--teacher {opts.teacher}: the student's config must be the teacher's with guidance inputs; "
                         f"differs in {'; '.join(differ)}")
    variant = variant_of_state(ckpt.state)
    if variant.alpha_source != "network":
        raise TrainError(f"--teacher {opts.teacher} is a bootstrap-stage model (mesh alphas): distil a model after stage 2")
    teacher = VariantModel(net, variant).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return net, Autocast(teacher, device.type) if opts.amp else teacher


def _loop(cfg, opts, settings, dist_info, device, net, vmodel, model, opt, params, sampler, loader, schedule, lpips,
          start_step, resumed_from, recompute, stop, say, teacher=None) -> TrainResult:
    stage_dir = settings.out / opts.stage
    ckpt_path = stage_dir / CHECKPOINT
    writer = None
    if dist_info.main and settings.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(settings.out / "tb" / opts.stage))
    protect: set[Path] = set()
    if dist_info.main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_files.remove_temporaries(stage_dir)
        run_settings = {k: v for k, v in dataclasses.asdict(settings).items() if k in (
            "checkpoint_every", "workers", "prefetch", "keep_last", "activation_checkpointing", "tf32", "compile", "deterministic",
            "device")}
        write_json_atomic(stage_dir / "config.json", {"model": cfg.to_dict(), "options": opts.to_dict(),
                                                      "variant": opts.variant.to_dict(), "world_size": dist_info.world,
                                                      "settings": run_settings})
        if resumed_from is not None:
            # the checkpoint resumed from stays until the user deletes it, whatever --keep-last says
            resumed_step = checkpoint_files.step_path(stage_dir, start_step)
            if not resumed_step.exists():  # a run from before step files: give it one
                link_atomic(resumed_from, resumed_step)
            protect.add(resumed_step)

    def save(step: int) -> None:
        if not dist_info.main:
            return
        extra_out = optimizer_tensors(opt, params)
        extra_out["rng/torch"] = torch.get_rng_state()
        state = {"step": step, "stage": opts.stage, "options": opts.to_dict(), "variant": opts.variant.to_dict(),
                 "world_size": dist_info.world, "data": str(settings.data), "videos": sampler.video_ids}
        checkpoint_files.save(stage_dir, step, lambda path: save_checkpoint(path, net, cfg, state, extra_out), settings.keep_last,
                              protect)

    from tqdm import tqdm

    losses: list[float] = []
    step = start_step
    interrupted = False
    t_start, steps_timed, cpu_timed, data_timed = None, 0, 0.0, 0.0
    last_saved = start_step
    bar = tqdm(total=opts.steps, initial=start_step, desc=f"train {opts.stage}", disable=not (settings.progress and dist_info.main),
               dynamic_ncols=True)
    batches = iter(loader)
    try:
        while step < opts.steps:
            t0 = time.perf_counter()  # throughput counts data, pseudo ground truth, forward, backward, update
            c0 = time.process_time()
            side = chooses_side(opts, step)
            _, batch = next(batches)
            t_data = time.perf_counter() - t0
            generator = torch.Generator().manual_seed(step_seed(opts.seed, step, dist_info.rank, 1))
            if teacher is not None:
                out = distill_step(Autocast(model, device.type) if opts.amp else model, teacher, batch, schedule, cfg, generator)
            else:
                out = training_step(model, vmodel, batch, schedule, opts, generator, cfg.diffusion.drop_first_frame,
                                    cfg.diffusion.drop_portrait, lpips, recompute=recompute)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if opts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
            opt.step()
            step += 1
            if step > start_step + 1:  # the first step includes one-off costs (caches, allocations, starting workers)
                t_start = t_start or 0.0
                t_start += time.perf_counter() - t0
                cpu_timed += time.process_time() - c0
                data_timed += t_data
                steps_timed += 1
            if settings.on_step is not None:
                settings.on_step(step)
            losses.append(out.terms["total"])
            sps = opts.batch * dist_info.world * steps_timed / t_start if steps_timed else 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{out.terms['total']:.4f}", branch="side" if side else "mpi", samples_s=f"{sps:.2f}")
            if writer is not None and step % settings.log_every == 0:
                for k, v in out.terms.items():
                    writer.add_scalar(f"loss_{'side' if side else 'mpi'}/{k}", v, step)
                writer.add_scalar("speed/samples_per_s", sps, step)
                writer.add_scalar("speed/data_wait_s", t_data, step)
            if writer is not None and settings.image_every and step % settings.image_every == 0:
                _log_images(writer, step, batch, out)
            stop_now = stop.set or (settings.stop_after is not None and step - start_step >= settings.stop_after)
            stop_now = _any_rank(stop_now, dist_info, device)
            if step % settings.checkpoint_every == 0 or step == opts.steps or stop_now:
                save(step)
                last_saved = step
            if stop_now:
                interrupted = stop.set
                if stop.set:
                    say(f"stopped by signal {stop.signal} at step {step}; checkpoint saved to {ckpt_path} "
                        f"(continue with --resume)")
                break
    finally:
        batches.close()  # stops the loader's workers now, also when a step fails
    if last_saved != step:
        save(step)
    bar.close()
    if writer is not None:
        writer.close()
    sps = opts.batch * dist_info.world * steps_timed / t_start if steps_timed else 0.0
    digest = weights_digest(net)
    if dist_info.owns_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(step, ckpt_path, interrupted, losses, sps, data_timed / steps_timed if steps_timed else 0.0,
                       cpu_timed / steps_timed if steps_timed else 0.0, digest, dict(out.terms) if losses else {})
