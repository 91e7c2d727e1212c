"""Train one stage of the cascade (base or super-resolution) into a checkpoint directory.

Each run adds (or replaces) one stage of DIR/cascade.json: its EMA weights in
DIR/<key>.safetensors and, for --resume, DIR/<key>.train.safetensors. The recipe follows the
paper (§4.1, App. F): squared error on eps at t ~ U(0, 1), text dropped for 10% of examples,
per-example noise-augmentation levels for SR stages, Adam(W) at 1e-4 with linear warmup;
EMA decay 0.9999 and gradient clipping at 1.0 are common reproduction settings (the paper
states neither). Data-parallel under torchrun (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .data import CaptionedImages, DataError, Preprocess, ShardedSampler, find_records
from .device import autocast, derive_seed, get_device
from .diffusion import Schedule, training_loss
from .ema import EMA
from .text_encoder import DEFAULT_TEXT_ENCODER, FrozenTextEncoder, TextEncoderNotFoundError

EPILOG = """examples:
  # a tiny base model on a folder of image + .txt caption pairs (CPU, minutes)
  python -m imagen_ref.train --stage base --config tiny-base --data my_pairs --out runs/tiny \\
      --steps 2000 --lr 1e-3 --warmup-steps 100 --ema-decay 0.999
  # its super-resolution stage, written into the same checkpoint directory
  python -m imagen_ref.train --stage sr --config tiny-sr --data my_pairs --out runs/tiny \\
      --steps 2000 --lr 1e-3 --warmup-steps 100 --ema-decay 0.999
  # continue that run to 4000 steps with the same optimizer state
  python -m imagen_ref.train --stage sr --config tiny-sr --data my_pairs --out runs/tiny \\
      --steps 4000 --lr 1e-3 --warmup-steps 100 --ema-decay 0.999 --resume
  # on a preemptible machine: rerun the same line after each interruption; it stops after one
  # hour of training in all
  python -m imagen_ref.train --stage base --config tiny-base --data my_pairs --out runs/tiny \\
      --steps 40000 --save-every 200 --resume --max-total-minutes 60
  # the paper's 64x64 base model on COCO 2014, 8 GPUs, bf16, resumable
  torchrun --nproc-per-node 8 -m imagen_ref.train --stage base --config imagen-base-64 \\
      --data coco2014 --out runs/imagen --batch-size 64 --precision bf16 \\
      --optimizer adafactor --text-encoder google/t5-v1_1-xxl --resume
"""


class UsageError(Exception):
    """A bad command line or input the user can fix (exit code 2)."""


@dataclass
class TrainArgs:
    """Everything a training run needs; the command line maps onto it one to one."""

    stage: str = "base"                 # "base" or "sr"
    config: str = "tiny-base"           # a name from imagen_ref.configs.CONFIGS
    data: str = ""                      # COCO root or folder of image + .txt pairs
    out: str = ""                       # checkpoint directory (shared by all stages)
    steps: int = 1000                   # total optimizer steps (a resumed run continues to it)
    max_minutes: float = 0.0            # stop (and save) after this much training time; 0: no limit
    max_total_minutes: float = 0.0      # the same over the stage's runs (this and the resumed ones)
    batch_size: int = 16                # images per optimizer step per process, per micro-batch
    lr: float = 1e-4                    # peak learning rate (paper: 1e-4)
    warmup_steps: int = 10000           # linear warmup from 0 (paper: 10k)
    lr_decay_fraction: float = 0.0      # decay linearly to 0 over this last part of the run (0: none)
    weight_decay: float = 0.0           # decoupled weight decay (paper SR models: 0)
    optimizer: str = "adamw"            # "adamw" (b1 .9, b2 .999, eps 1e-8) or "adafactor"
    ema_decay: float = 0.9999           # EMA decay of the saved weights
    grad_clip: float = 1.0              # max global gradient norm (0 disables)
    grad_accum: int = 1                 # micro-batches per optimizer step
    precision: str = "fp32"             # "fp32" or "bf16" autocast
    save_every: int = 1000              # steps between checkpoints (0: only at the end)
    resume: bool = False                # continue from DIR/<key>.train.safetensors if present
    init_from: str | None = None        # start from the raw weights of INIT/<key>.train.safetensors
    image_size: int | None = None       # base configs: train at this size instead (attention scaled)
    text_encoder: str = DEFAULT_TEXT_ENCODER  # name, hub id or local directory
    max_length: int = 128               # text tokens
    embedding_cache: str | None = None  # caption-embedding cache; None: default_cache_dir()
    cond_drop_prob: float = 0.1         # fraction of examples trained without text (CFG)
    max_aug_level: float = 1.0          # SR stages: aug levels drawn from U(0, this) (paper: 1)
    high_noise_fraction: float = 0.0    # examples whose log-SNR is drawn from the high-noise band (paper: 0)
    high_noise_max_log_snr: float = -2.0  # top of that band (its bottom: the schedule's log_snr_min)
    seed: int = 0                       # base seed (init, data order, noise)
    device: str | None = None           # "cpu", "cuda", "cuda:1"; default: CUDA if present
    num_workers: int = 0                # DataLoader worker processes
    log_every: int = 10                 # steps between log lines and progress-bar updates
    progress: bool = True               # show the progress bar (rank 0)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag maps to a TrainArgs field."""
    d = TrainArgs()
    p = argparse.ArgumentParser(prog="python -m imagen_ref.train", description=__doc__.split("\n")[0],
                                epilog=EPILOG, formatter_class=_Formatter)
    a = p.add_argument
    a("--stage", choices=("base", "sr"), required=True, help="which kind of stage to train")
    a("--config", required=True, help="U-Net config name (imagen_ref.configs.CONFIGS)")
    a("--data", required=True, help="COCO root (annotations/ + train2014/) or image+.txt folder")
    a("--out", required=True, help="checkpoint directory; the stage is added to its cascade.json")
    a("--steps", type=int, default=d.steps, help="total optimizer steps")
    a("--max-minutes", type=float, default=d.max_minutes,
      help="time budget of this run: stop at the first log step past it and save (0: no limit)")
    a("--max-total-minutes", type=float, default=d.max_total_minutes,
      help="time budget of the stage: like --max-minutes, but counting the training time of the "
           "runs --resume continues, up to their last save (a stage interrupted and resumed "
           "trains as long as one uninterrupted run; 0: no limit)")
    a("--batch-size", type=int, default=d.batch_size, help="images per micro-batch per process")
    a("--lr", type=float, default=d.lr, help="peak learning rate")
    a("--warmup-steps", type=int, default=d.warmup_steps, help="linear warmup steps")
    a("--lr-decay-fraction", type=float, default=d.lr_decay_fraction, metavar="F",
      help="decay the learning rate linearly to 0 over the last F of the run, its progress being "
           "the larger of step / --steps and training time / the time budget (--max-minutes, "
           "--max-total-minutes), so a time-bounded run anneals before it stops (0: constant)")
    a("--weight-decay", type=float, default=d.weight_decay, help="decoupled weight decay")
    a("--optimizer", choices=("adamw", "adafactor"), default=d.optimizer, help="optimizer")
    a("--ema-decay", type=float, default=d.ema_decay, help="EMA decay of the saved weights")
    a("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: off)")
    a("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    a("--precision", choices=("fp32", "bf16"), default=d.precision, help="autocast precision")
    a("--save-every", type=int, default=d.save_every, help="steps between checkpoints (0: end only)")
    a("--resume", action="store_true", help="continue from DIR/<stage>.train.safetensors")
    a("--init-from", default=d.init_from, metavar="DIR",
      help="start from the raw weights of another run's checkpoint directory (same --config; "
           "fresh optimizer, step 0); a state that --resume finds wins")
    a("--image-size", type=int, default=d.image_size, metavar="N",
      help="base configs: train at N x N instead of the config's size, attention resolutions "
           "scaled along (e.g. a cheap low-resolution start for --init-from)")
    a("--text-encoder", default=d.text_encoder, help="text encoder: short name, hub id or directory")
    a("--max-length", type=int, default=d.max_length, help="text tokens")
    a("--embedding-cache", default=d.embedding_cache,
      help="caption-embedding cache directory (default: $IMAGEN_REF_CACHE/embeddings or "
           "~/.cache/imagen_ref/embeddings)")
    a("--cond-drop-prob", type=float, default=d.cond_drop_prob, help="text dropout for CFG")
    a("--max-aug-level", type=float, default=d.max_aug_level,
      help="SR stages: noise-augmentation levels are drawn from U(0, this) (paper: 1)")
    a("--high-noise-fraction", type=float, default=d.high_noise_fraction,
      help="fraction of examples whose log-SNR is drawn uniformly from [the schedule's minimum, "
           "--high-noise-max-log-snr] instead of t ~ U(0, 1) (paper: 0)")
    a("--high-noise-max-log-snr", type=float, default=d.high_noise_max_log_snr,
      help="top of the high-noise log-SNR band")
    a("--seed", type=int, default=d.seed, help="base seed")
    a("--device", default=d.device, help="cpu | cuda | cuda:N (default: CUDA if available)")
    a("--num-workers", type=int, default=d.num_workers, help="DataLoader workers")
    a("--log-every", type=int, default=d.log_every, help="steps between log records")
    a("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
      help="hide the progress bar")
    return p


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# ---------------------------------------------------------------------------------------------
# setup


@dataclass
class Dist:
    """This process's place in the (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized: bool = False  # whether we called init_process_group (and must destroy it)


def setup_distributed(device_name: str | None) -> Dist:
    """Join the torchrun job if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=get_device(device_name))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = get_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    initialized = not dist.is_initialized()
    if initialized:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device, initialized)


def resolve_config(args: TrainArgs):
    """The U-Net config named by --config, checked against --stage."""
    from .configs import CONFIGS, at_resolution, get_config

    if args.config not in CONFIGS:
        raise UsageError(f"unknown config {args.config!r}; choose one of {sorted(CONFIGS)}")
    config = get_config(args.config)
    is_sr = getattr(config, "lowres_size", None) is not None
    if is_sr != (args.stage == "sr"):
        kind = "super-resolution" if is_sr else "base"
        raise UsageError(f"--config {args.config} is a {kind} model but --stage is "
                         f"{args.stage}; use --stage {'sr' if is_sr else 'base'} or another config")
    if args.image_size is not None and args.image_size != config.image_size:
        try:
            config = at_resolution(config, args.image_size)
        except ValueError as e:
            raise UsageError(f"--image-size {args.image_size}: {e}") from None
    return config


def check_args(args: TrainArgs) -> None:
    """Reject impossible numbers before any work."""
    for name in ("steps", "batch_size", "grad_accum", "max_length", "log_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= args.cond_drop_prob <= 1.0:
        raise UsageError("--cond-drop-prob must be in [0, 1]")
    if not 0.0 < args.max_aug_level <= 1.0:
        raise UsageError("--max-aug-level must be in (0, 1]")
    if not 0.0 <= args.high_noise_fraction <= 1.0:
        raise UsageError("--high-noise-fraction must be in [0, 1]")
    if not 0.0 <= args.lr_decay_fraction <= 1.0:
        raise UsageError("--lr-decay-fraction must be in [0, 1]")
    for name in ("max_minutes", "max_total_minutes"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 (0: no limit)")
    if not 0.0 <= args.ema_decay < 1.0:
        raise UsageError("--ema-decay must be in [0, 1)")
    if not args.out:
        raise UsageError("--out is required")


def schedules_for(config) -> tuple[Schedule, Schedule | None]:
    """(diffusion schedule, noise-augmentation schedule) of a stage.

    A config field `schedule` wins; otherwise the paper's choice: cosine for the base and
    64->256 models, linear for 256->1024 (§1.5 of the notes, App. F). Noise augmentation always
    uses the cosine process, so an aug level means the same corruption for every SR stage.
    """
    name = getattr(config, "schedule", None) or ("linear" if config.image_size > 256 else "cosine")
    if isinstance(name, dict):
        schedule = Schedule(**name)
    else:
        schedule = Schedule(name)
    aug = Schedule("cosine") if getattr(config, "lowres_size", None) is not None else None
    return schedule, aug


def default_cache_dir() -> Path:
    """Where caption embeddings are cached when --embedding-cache is not given: a per-user
    directory shared by every run and stage, so no caption is ever encoded twice."""
    root = os.environ.get("IMAGEN_REF_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagen_ref"
    return Path(root) / "embeddings"


def make_text_encoder(args: TrainArgs, device: torch.device):
    """The frozen encoder with its on-disk embedding cache, and its cascade.json record."""
    name = args.text_encoder
    try:
        encoder = FrozenTextEncoder(name, max_length=args.max_length, device=device,
                                    cache_dir=args.embedding_cache or default_cache_dir())
    except (TextEncoderNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    meta = {"name_or_path": name, "encoder_id": encoder.encoder_id,
            "max_length": args.max_length, "dim": encoder.dim}
    return encoder, meta


def make_optimizer(args: TrainArgs, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (paper: Adam b1 .9, b2 .999, eps 1e-8) or Adafactor (paper: the base model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=args.weight_decay)


def lr_at(args: TrainArgs, step: int, progress: float = 0.0) -> float:
    """Linear warmup to --lr over --warmup-steps, then constant; with --lr-decay-fraction F,
    linear decay to 0 once the run's `progress` (0..1, at least step / --steps) passes 1 - F."""
    lr = args.lr
    if args.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / args.warmup_steps)
    if args.lr_decay_fraction > 0:
        progress = max(progress, step / args.steps)
        lr *= min(1.0, max(0.0, (1.0 - progress) / args.lr_decay_fraction))
    return lr


def time_progress(args: TrainArgs, seconds: float, prior_seconds: float) -> float:
    """The share of the time budget spent: this run's `seconds` against --max-minutes and the
    stage's (with `prior_seconds` of the runs it resumes) against --max-total-minutes; 0 with
    neither."""
    shares = [0.0]
    if args.max_minutes > 0:
        shares.append(seconds / (60.0 * args.max_minutes))
    if args.max_total_minutes > 0:
        shares.append((prior_seconds + seconds) / (60.0 * args.max_total_minutes))
    return max(shares)


def build_model(config, seed: int):
    """The U-Net initialised from `seed` without touching the caller's global RNG."""
    from .configs import build_unet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return build_unet(config)


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """Live state of one training run."""

    args: TrainArgs
    d: Dist
    config: object
    key: str                       # stage key in cascade.json
    model: torch.nn.Module         # raw weights
    net: torch.nn.Module           # what is called: `model` or its DDP wrapper
    ema: EMA
    opt: torch.optim.Optimizer
    gen: torch.Generator           # noise, t, text dropout and aug levels of training_loss
    encoder: object                # FrozenTextEncoder
    te_meta: dict                  # its cascade.json record
    schedule: Schedule
    aug_schedule: Schedule | None
    data_info: dict
    step: int = 0
    start_step: int = 0
    last_loss: float | None = None
    prior_seconds: float = 0.0     # training time of the runs this one resumes
    progress: float = 0.0          # time_progress() at the last log step (rank 0's, on all ranks)
    t0: float | None = None        # perf_counter() when this run's training loop began

    def train_seconds(self) -> float:
        """The stage's training time so far, over this run and the runs it resumes."""
        now = 0.0 if self.t0 is None else time.perf_counter() - self.t0
        return self.prior_seconds + now


def train_step(run: Run, batches) -> torch.Tensor:
    """One optimizer step over --grad-accum micro-batches; returns the mean loss (detached)."""
    args, dev = run.args, run.d.device
    for group in run.opt.param_groups:
        group["lr"] = lr_at(args, run.step, run.progress)
    total = torch.zeros((), device=dev)
    for micro in range(args.grad_accum):
        batch = next(batches)
        x0 = batch["image"].to(dev, non_blocking=True)
        lowres = batch["lowres"].to(dev, non_blocking=True) if "lowres" in batch else None
        text, mask = run.encoder.encode(list(batch["caption"]))
        text, mask = text.to(dev, torch.float32), mask.to(dev, torch.bool)
        last = micro == args.grad_accum - 1
        ddp_accumulating = run.net is not run.model and not last  # all-reduce on the last only
        with run.net.no_sync() if ddp_accumulating else contextlib.nullcontext():
            with autocast(dev, args.precision):
                loss = training_loss(run.net, x0, text, mask, run.schedule, generator=run.gen,
                                     cond_drop_prob=args.cond_drop_prob, lowres=lowres,
                                     aug_schedule=run.aug_schedule,
                                     prediction=getattr(run.config, "prediction", "eps"),
                                     max_aug_level=args.max_aug_level,
                                     high_noise_fraction=args.high_noise_fraction,
                                     high_noise_max_log_snr=args.high_noise_max_log_snr)
            (loss / args.grad_accum).backward()
        total += loss.detach()
    if args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), args.grad_clip)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.ema.update(run.model, run.step)
    run.step += 1
    return total / args.grad_accum


def images_per_step(run: Run) -> int:
    """Images in one optimizer step over all ranks."""
    return run.args.batch_size * run.args.grad_accum * run.d.world_size


def training_meta(run: Run) -> dict:
    """The stage's "training" record in cascade.json."""
    a = run.args
    return {"step": run.step, "images_seen": run.step * images_per_step(run),
            "ema_decay": a.ema_decay, "config_name": a.config, "optimizer": a.optimizer,
            "lr": a.lr, "warmup_steps": a.warmup_steps, "lr_decay_fraction": a.lr_decay_fraction,
            "weight_decay": a.weight_decay,
            "grad_clip": a.grad_clip, "batch_size": a.batch_size, "grad_accum": a.grad_accum,
            "world_size": run.d.world_size, "precision": a.precision,
            "cond_drop_prob": a.cond_drop_prob, "max_aug_level": a.max_aug_level,
            "high_noise_fraction": a.high_noise_fraction,
            "high_noise_max_log_snr": a.high_noise_max_log_snr, "seed": a.seed, "data": run.data_info,
            "last_loss": run.last_loss, "max_minutes": a.max_minutes,
            "max_total_minutes": a.max_total_minutes, "train_seconds": round(run.train_seconds(), 1)}


def gather_rng(run: Run) -> dict[str, torch.Tensor]:
    """Every rank's training-noise generator state, keyed by rank (collective under DDP)."""
    state = run.gen.get_state()
    if run.d.world_size == 1:
        return {"loss_rank0": state}
    states = [None] * run.d.world_size
    dist.all_gather_object(states, state)
    return {f"loss_rank{r}": s for r, s in enumerate(states)}


def save_checkpoint(run: Run) -> None:
    """Rank 0 writes the training state and the EMA stage; all ranks wait for it."""
    rng = gather_rng(run)
    if run.d.rank == 0:
        a = run.args
        meta = {"step": run.step, "samples_per_rank": run.step * a.batch_size * a.grad_accum,
                "world_size": run.d.world_size, "batch_size": a.batch_size,
                "grad_accum": a.grad_accum, "seed": a.seed, "config_name": a.config,
                "config": _jsonable(dataclasses.asdict(run.config)), "args": dataclasses.asdict(a),
                "init_from": run.data_info.get("init_from"), "train_seconds": run.train_seconds()}
        ckpt.save_train_state(a.out, run.key, model=run.model, ema_model=run.ema.model,
                              optimizer=run.opt, meta=meta, rng=rng)
        ckpt.save_stage(a.out, run.key, run.ema.model, schedule=run.schedule,
                        aug_schedule=run.aug_schedule, text_encoder_meta=run.te_meta,
                        training_meta=training_meta(run))
    if run.d.world_size > 1:
        dist.barrier()


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def resume(run: Run) -> int:
    """Load DIR/<key>.train.safetensors if --resume and it exists; returns this rank's data
    position (samples already consumed)."""
    a, d = run.args, run.d
    path = ckpt.train_state_path(a.out, run.key)
    if not a.resume or not path.is_file():
        if a.resume and d.rank == 0:
            print(f"note: {path} not found; starting {run.key} from step 0", file=sys.stderr)
        return 0
    header = ckpt.load_train_state(a.out, run.key, model=run.model, ema_model=run.ema.model,
                                   optimizer=run.opt)
    if header["config"] != _jsonable(dataclasses.asdict(run.config)):
        raise UsageError(f"{path} was trained with config {header.get('config_name')!r}, which "
                         f"differs from --config {a.config}; resume with the same --config")
    run.step = run.start_step = int(header["step"])
    run.prior_seconds = float(header.get("train_seconds", 0.0))
    if header.get("init_from"):  # the weights this run started from, before the interruption
        run.data_info["init_from"] = header["init_from"]
    same_layout = (header["world_size"], header["batch_size"], header["grad_accum"]) == \
        (d.world_size, a.batch_size, a.grad_accum)
    state = header["rng"].get(f"loss_rank{d.rank}")
    if same_layout and state is not None:
        run.gen.set_state(state)
        return int(header["samples_per_rank"])
    if d.rank == 0:
        print("note: batch size, accumulation or world size changed since the saved state; "
              "training continues but is not identical to an uninterrupted run", file=sys.stderr)
    run.gen.manual_seed(derive_seed(a.seed, "loss", d.rank, run.step))
    return run.step * a.batch_size * a.grad_accum


def start_from(args: TrainArgs, key: str, config, model: torch.nn.Module) -> dict:
    """Load --init-from's raw weights into `model`; returns the record of where it started.

    The saved model must be this config, or this config at another resolution
    (`configs.at_resolution`), whose position tables are then resampled to this one's grids.
    """
    from .configs import at_resolution, config_from_dict
    from .unet import resize_position_tables

    header, state = ckpt.read_raw_weights(args.init_from, key)
    try:
        saved = config_from_dict(header["config"])
        same = saved == config or (saved.image_size != config.image_size
                                   and at_resolution(saved, config.image_size) == config)
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        raise UsageError(f"--init-from {args.init_from}: its stage {key} was trained with config "
                         f"{header.get('config_name')!r}, which is not --config {args.config} "
                         "at this or another resolution")
    if saved.image_size != config.image_size:
        state = resize_position_tables(state, model)
    ckpt.check_state_dict(model, state, ckpt.train_state_path(args.init_from, key), "raw weights",
                          ("match the model built from --config", "start from a run of the same config"))
    model.load_state_dict(state, strict=True)
    return {"step": int(header["step"]), "config_name": header.get("config_name"),
            "image_size": saved.image_size,
            "images_seen": int(header["step"]) * int(header["batch_size"])
            * int(header["grad_accum"]) * int(header["world_size"])}


def prepare(args: TrainArgs, config, d: Dist) -> tuple[Run, object]:
    """Check inputs, build everything, resume; returns the run and its batch iterator."""
    records, layout = find_records(args.data)  # fail on bad data before loading any model
    key = ckpt.stage_key(config)
    encoder, te_meta = make_text_encoder(args, d.device)
    if te_meta["dim"] != config.text_dim:
        raise UsageError(f"text encoder {te_meta['name_or_path']} gives {te_meta['dim']}-d "
                         f"embeddings but --config {args.config} expects text_dim "
                         f"{config.text_dim}; pick a matching --text-encoder or config")
    ckpt.check_compatible(args.out, key, te_meta)
    model = build_model(config, args.seed)
    init = None
    if args.init_from and not (args.resume and ckpt.train_state_path(args.out, key).is_file()):
        init = start_from(args, key, config, model)
    model = model.to(d.device).train()
    net = model
    if d.world_size > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    gen = torch.Generator(device=d.device).manual_seed(derive_seed(args.seed, "loss", d.rank))
    schedule, aug_schedule = schedules_for(config)
    if args.high_noise_fraction > 0 and not args.high_noise_max_log_snr > schedule.log_snr_min:
        raise UsageError(f"--high-noise-max-log-snr {args.high_noise_max_log_snr:g} must be above "
                         f"the schedule's minimum log-SNR {schedule.log_snr_min:g}")
    pp = Preprocess(config.image_size, getattr(config, "lowres_size", None))
    info = {"layout": layout, "images": len(records), "preprocess": pp.describe()}
    if init is not None:
        info["init_from"] = init
    run = Run(args, d, config, key, model, net, EMA(model, args.ema_decay),
              make_optimizer(args, model), gen, encoder, te_meta, schedule, aug_schedule, info)
    start = resume(run)
    dataset = CaptionedImages(records, pp, seed=args.seed)
    sampler = ShardedSampler(len(dataset), seed=args.seed, rank=d.rank,
                             world_size=d.world_size, start=start)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
        pin_memory=d.device.type == "cuda", persistent_workers=args.num_workers > 0)
    return run, iter(loader)


def log_record(run: Run, losses: list[float], seconds: float, images: int) -> dict:
    """One line of DIR/<key>.log.jsonl (loss averaged over ranks and recent steps)."""
    loss = torch.tensor(sum(losses) / max(1, len(losses)), device=run.d.device)
    if run.d.world_size > 1:
        dist.all_reduce(loss)
        loss /= run.d.world_size
    run.last_loss = float(loss)
    return {"step": run.step, "loss": run.last_loss, "lr": run.opt.param_groups[0]["lr"],
            "images_per_s": images / max(seconds, 1e-9), "seconds": seconds}


def out_of_time(run: Run, seconds: float) -> bool:
    """Whether --max-minutes (this run's `seconds`) or --max-total-minutes (the stage's training
    time) has passed; every rank gets rank 0's answer (they stop together), and rank 0's
    time_progress() for the learning rate (they step alike)."""
    a = run.args
    late = ((a.max_minutes > 0 and seconds > 60.0 * a.max_minutes)
            or (a.max_total_minutes > 0 and run.prior_seconds + seconds > 60.0 * a.max_total_minutes))
    progress = time_progress(a, seconds, run.prior_seconds)
    if run.d.world_size > 1:
        flags = torch.tensor([float(late), progress], device=run.d.device, dtype=torch.float64)
        dist.broadcast(flags, src=0)
        late, progress = bool(flags[0]), float(flags[1])
    run.progress = progress
    return late


def fit(run: Run, batches) -> list[float]:
    """Train to --steps with logging and periodic checkpoints; returns this rank's losses."""
    a, d = run.args, run.d
    main_rank = d.rank == 0
    bar = tqdm(total=a.steps, initial=run.step, desc=f"train {run.key}", unit="step",
               disable=not (main_rank and a.progress), dynamic_ncols=True)
    log_path = Path(a.out) / f"{run.key}.log.jsonl"
    losses, pending = [], []
    t0 = run.t0 = time.perf_counter()
    if out_of_time(run, 0.0):
        if main_rank:
            print(f"note: --max-total-minutes {a.max_total_minutes:g} was spent before this run "
                  f"(step {run.step}); nothing to train", file=sys.stderr)
        bar.close()
        return losses
    while run.step < a.steps:
        pending.append(train_step(run, batches))
        bar.update(1)
        if run.step % a.log_every == 0 or run.step == a.steps:
            recent = torch.stack(pending).tolist()
            losses += recent
            pending = []
            rec = log_record(run, recent, time.perf_counter() - t0,
                             (run.step - run.start_step) * images_per_step(run))
            bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['images_per_s']:.1f}")
            if main_rank:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if out_of_time(run, rec["seconds"]):
                if main_rank:
                    which = (f"--max-minutes {a.max_minutes:g}" if a.max_minutes > 0 and
                             rec["seconds"] > 60.0 * a.max_minutes else
                             f"--max-total-minutes {a.max_total_minutes:g}")
                    print(f"note: {which} reached at step {run.step} of {a.steps}; saving",
                          file=sys.stderr)
                break
        if a.save_every and run.step % a.save_every == 0 and run.step < a.steps:
            save_checkpoint(run)
    bar.close()
    save_checkpoint(run)
    return losses


def _as_train_args(args) -> TrainArgs:
    if isinstance(args, TrainArgs):
        return dataclasses.replace(args)
    names = {f.name for f in dataclasses.fields(TrainArgs)}
    return TrainArgs(**{k: v for k, v in vars(args).items() if k in names})


def train(args) -> dict:
    """Train one stage as the command line would (in-process; under torchrun, data-parallel).

    Args:
        args: a TrainArgs or an argparse.Namespace from `build_parser()`.
    Returns: {"losses": per-step losses of this rank, "step", "start_step", "key",
        "checkpoint": DIR, "rank", "seconds", "images_per_s" (this run), "train_seconds" (the
        stage's training time over this run and the runs it resumed)}.
    """
    args = _as_train_args(args)
    check_args(args)
    config = resolve_config(args)
    d = setup_distributed(args.device)
    t0 = time.perf_counter()
    try:
        run, batches = prepare(args, config, d)
        losses = fit(run, batches)
    finally:
        if d.initialized:
            dist.destroy_process_group()
    seconds = time.perf_counter() - t0
    return {"losses": losses, "step": run.step, "start_step": run.start_step, "key": run.key,
            "checkpoint": str(Path(args.out)), "rank": d.rank, "seconds": seconds,
            "images_per_s": (run.step - run.start_step) * images_per_step(run) / seconds,
            "train_seconds": run.train_seconds()}


def _one_line(err: Exception) -> str:
    """The message of a user error, also when it was re-raised from a DataLoader worker."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code (2 for user errors)."""
    args = build_parser().parse_args(argv)
    try:
        result = train(args)
    except (UsageError, DataError, ckpt.CheckpointError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    if result["rank"] == 0:
        print(f"checkpoint: {result['checkpoint']} (stage {result['key']}, step "
              f"{result['step']}; {result['images_per_s']:.1f} images/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
