"""Throughput benchmarks: `python -m bench.perf sampling ...`.

`sampling` times text-conditioned base-stage sampling (DDIM, classifier-free guidance) of one
config and reports images/s, seconds per denoising step, model FLOPs per image (counted with
torch.utils.flop_counter on one guided denoiser call) and the achieved FLOP rate, as a share of
the accelerator's dense peak on CUDA or of a measured matmul peak on CPU. With `--peer
imagen-pytorch` the same work runs through lucidrains' imagen-pytorch U-Net of matching size:
same resolution, text embeddings, initial noise, steps, guidance weight and sampler loop, so the
ratio isolates the network and how each side batches guidance.

Weights are random (seeded) and redrawn where a layer is zero-initialised, so every layer does
real work and the bf16-vs-fp32 image comparison is not trivially exact. Throughput does not
depend on weight values.

A subcommand is one `add_*_args(parser)` and one `cmd_*(args) -> int`, listed in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from imagen_ref.configs import CONFIGS, build_unet, count_params, get_config
from imagen_ref.device import autocast, derive_seed, get_device, make_generators, randn_per_image
from imagen_ref.diffusion import Schedule
from imagen_ref.guidance import make_denoiser
from imagen_ref.samplers import sample_ddim, time_grid

from . import peers, perf_fid, perf_metrics, perf_networks, perf_uncertainty, perf_votes
from .cli import HelpFormatter

# Perf configs as overrides of `tiny-base` (text_dim 384, MiniLM-L6), used until configs.py
# registers them; a name in imagen_ref.configs.CONFIGS takes precedence.
PERF_CONFIGS = {
    # 15.4M params, 3.82 GFLOP per image per network call; peer: imagen-pytorch 15.0M, 3.83.
    "perf-base-32": dict(model_channels=64, channel_mult=(1, 2, 4), num_res_blocks=1,
                         attn_resolutions=(16, 8), head_dim=64, emb_dim=512, ctx_dim=256),
}

# Dense peak TFLOP/s by CUDA device-name substring (first match wins): bf16 tensor cores and
# fp32 without TF32, from the vendors' data sheets (SXM parts unless named).
GPU_PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),
    ("H200", {"bf16": 989.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
    ("A10", {"bf16": 125.0, "fp32": 31.2}),
)

# Speed-up targets over the peer at equal FLOPs, by (device type, our precision).
TARGETS = {("cpu", "fp32"): 1.0, ("cpu", "bf16"): 1.5, ("cuda", "bf16"): 2.0}


def resolve_config(name: str):
    """A U-Net config by name: imagen_ref's CONFIGS first, then PERF_CONFIGS."""
    if name in CONFIGS:
        return get_config(name)
    if name in PERF_CONFIGS:
        return get_config("tiny-base", **PERF_CONFIGS[name])
    raise KeyError(f"unknown --config {name!r}; choose one of {sorted(set(CONFIGS) | set(PERF_CONFIGS))}")


# ----------------------------------------------------------------------------- measurement helpers

def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """softmax(QKᵀ)V: 2·B·h·Lq·Lk·(d_qk + d_v); the CPU flash kernel has no built-in formula."""
    b, h, lq, d = q_shape
    return 2 * b * h * lq * k_shape[-2] * (d + v_shape[-1])


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul/conv/attention FLOPs (2 per multiply-add) of one call of `fn`."""
    mapping = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _sdpa_cpu_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def cpu_matmul_peak_gflops(precision: str, size: int = 512, budget_s: float = 1.0) -> float:
    """Best measured GFLOP/s of a square matmul on this CPU (its practical peak), within ~budget_s."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    start, best, runs = time.perf_counter(), math.inf, 0
    while runs < 3 or (runs < 20 and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0) if runs else best  # first run: warm-up
        runs += 1
    return 2 * size**3 / best / 1e9


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BF16 / AMX); else bf16 is emulated."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else False


def gpu_peak_gflops(device: torch.device, precision: str) -> float | None:
    """The dense peak of a known CUDA device in GFLOP/s, else None."""
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_TFLOPS:
        if key in name:
            return peaks[precision] * 1e3
    return None


def randomize_weights_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every weight matrix / kernel as N(0, 1/fan_in) (zero-initialised ones included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)
    return model


def random_text(batch: int, length: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in text embeddings (B, L, D) and masks (B, L); row lengths in [L/2, L], one row full."""
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, length, dim, generator=gen)
    lengths = torch.randint(max(1, length // 2), length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = torch.arange(length)[None] < lengths[:, None]
    return text * mask[..., None], mask


# ----------------------------------------------------------------------------- contenders

@dataclass
class Contender:
    """One network + precision to time; `make` builds its denoiser(z, t) -> x0."""

    name: str  # "ours" | a peer name
    precision: str  # "fp32" | "bf16"
    params: int  # parameter count
    cfg: str  # how it evaluates classifier-free guidance
    make: Callable[[], Callable]  # () -> denoiser
    flops_per_step: int = 0  # model FLOPs of one guided denoiser call on the whole batch

    @property
    def key(self) -> str:
        return f"{self.name}/{self.precision}"


def build_contenders(args, config, device, text, mask, schedule) -> list[Contender]:
    """Ours at fp32 (+ bf16 when asked) and the peer, all on the same inputs."""
    model = randomize_weights_(build_unet(config).eval(), derive_seed(args.seed, "weights")).to(device)
    precisions = ["fp32", "bf16"] if args.precision == "bf16" else ["fp32"]
    out = []
    for prec in precisions:
        def make(prec=prec):
            return make_denoiser(model, schedule, text, mask, guidance=args.guidance,
                                 thresholding=args.thresholding, prediction=config.prediction,
                                 autocast=lambda: autocast(device, prec))
        out.append(Contender("ours", prec, count_params(config),
                             "one forward of 2B (cond + null text batched)", make))
    if args.peer == "imagen-pytorch":
        unet = peers.build_imagen_pytorch_unet(args.config, text_dim=config.text_dim,
                                               text_len=args.text_len)
        unet = randomize_weights_(unet.eval(), derive_seed(args.seed, "peer-weights")).to(device)
        prec = args.peer_precision

        def make_peer():
            return peers.imagen_pytorch_denoiser(unet, schedule, text, mask, guidance=args.guidance,
                                                 thresholding=args.thresholding,
                                                 autocast=lambda: autocast(device, prec))
        out.append(Contender("imagen-pytorch", prec, sum(p.numel() for p in unet.parameters()),
                             "two forwards of B (forward_with_cond_scale)", make_peer))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_once(denoiser, args, config, device, schedule, steps: int, bar=None) -> torch.Tensor:
    """One DDIM run of the whole batch from the per-image seeds; returns x0 in [-1, 1] on the CPU."""
    gens = make_generators([derive_seed(args.seed, "image", i) for i in range(args.batch_size)], device)
    shape = (args.batch_size, config.out_channels, config.image_size, config.image_size)
    z = randn_per_image(shape, gens, device)
    x0 = sample_ddim(denoiser, z, time_grid(steps), schedule, generators=gens,
                     callback=None if bar is None else (lambda *_: bar.update(1)))
    return x0.float().clamp(-1, 1).cpu()


def time_contenders(contenders, args, config, device, schedule) -> tuple[dict, dict]:
    """Warm up each contender, then time `repeats` rounds, interleaved so load drift hits all alike.

    Returns: {key: [seconds per run]}, {key: (x0 of one denoiser call at t = 0.5, final images
    of the first timed run)}.
    """
    denoisers = {c.key: c.make() for c in contenders}
    gen = torch.Generator().manual_seed(derive_seed(args.seed, "flops"))
    z = torch.randn(args.batch_size, config.out_channels, config.image_size, config.image_size,
                    generator=gen).to(device)
    t = torch.full((args.batch_size,), 0.5, device=device)
    one_call = {}
    for c in contenders:
        c.flops_per_step = count_flops(lambda: one_call.setdefault(c.key, denoisers[c.key](z, t)))
        if args.warmup_steps:
            sample_once(denoisers[c.key], args, config, device, schedule, args.warmup_steps)
    seconds = {c.key: [] for c in contenders}
    images = {}
    bar = tqdm(total=len(contenders) * args.repeats * args.steps, desc="sampling", unit="step")
    for _ in range(args.repeats):
        for c in contenders:
            _sync(device)
            t0 = time.perf_counter()
            x0 = sample_once(denoisers[c.key], args, config, device, schedule, args.steps, bar)
            _sync(device)
            seconds[c.key].append(time.perf_counter() - t0)
            images.setdefault(c.key, (one_call[c.key].float().clamp(-1, 1).cpu(), x0))
    bar.close()
    return seconds, images


# ----------------------------------------------------------------------------- results

def peak_gflops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak GFLOP/s, where it comes from) for utilisation figures."""
    if device.type == "cuda":
        return gpu_peak_gflops(device, precision), "vendor dense peak"
    return cpu_matmul_peak_gflops(precision), "measured 512^3 matmul"


def row_result(c: Contender, secs: list[float], args, peaks: dict) -> dict:
    """One contender's numbers (best run; median and spread alongside)."""
    best, median = min(secs), statistics.median(secs)
    per_image_step = c.flops_per_step / args.batch_size
    gflops = c.flops_per_step * args.steps / best / 1e9
    peak, source = peaks[c.precision]
    return {
        "name": c.name, "precision": c.precision, "params": c.params, "cfg": c.cfg,
        "flops_per_image_step": per_image_step, "flops_per_image": per_image_step * args.steps,
        "seconds": secs, "best_s": best, "median_s": median, "spread": (max(secs) - best) / best,
        "images_per_s": args.batch_size / best, "images_per_s_median": args.batch_size / median,
        "s_per_step": best / args.steps, "gflops_per_s": gflops,
        "peak_gflops": peak, "peak_source": source,
        "utilisation": None if not peak else gflops / peak,
    }


def image_agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Max / mean absolute difference and PSNR (data range 2) of two image batches in [-1, 1]."""
    diff = (a.double() - b.double()).abs()
    mse = diff.pow(2).mean().item()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
            "psnr_db": math.inf if mse == 0 else 10 * math.log10(4.0 / mse)}


def comparisons(rows: list[dict], device: torch.device) -> list[dict]:
    """Each of our rows against each peer row: images/s ratio and ratio at equal FLOPs."""
    out = []
    for peer in (r for r in rows if r["name"] != "ours"):
        for ours in (r for r in rows if r["name"] == "ours"):
            at_equal_flops = ours["gflops_per_s"] / peer["gflops_per_s"]
            target = TARGETS.get((device.type, ours["precision"]))
            out.append({
                "ours": f"ours/{ours['precision']}", "peer": f"{peer['name']}/{peer['precision']}",
                "images_per_s_ratio": ours["images_per_s"] / peer["images_per_s"],
                "at_equal_flops_ratio": at_equal_flops,
                "params_ratio": ours["params"] / peer["params"],
                "target": target, "meets_target": None if target is None else at_equal_flops >= target,
            })
    return out


def caveats(result: dict) -> list[str]:
    """Warnings a reader of the numbers needs."""
    notes = []
    precisions = {r["precision"] for r in result["rows"]}
    if result["machine"].get("cpu_native_bf16") is False and "bf16" in precisions:
        notes.append("this CPU has no native bf16 (AVX512-BF16 / AMX): oneDNN emulates bf16, "
                     "so bf16 runs far slower than fp32 here")
    for c in result["comparisons"]:
        if abs(c["params_ratio"] - 1) > 0.10:
            notes.append(f"{c['ours']} has {c['params_ratio']:.2f}x the parameters of {c['peer']} "
                         "(more than 10% apart)")
    return notes


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu_native_bf16"] = cpu_has_native_bf16()
    return info


def print_table(result: dict) -> None:
    """The human-readable summary."""
    spec, machine = result["spec"], result["machine"]
    print(f"\nsampling {spec['config']}: batch {spec['batch_size']}, {spec['image_size']}px, "
          f"{spec['steps']} DDIM steps, guidance {spec['guidance']} on "
          f"{machine.get('gpu') or machine['cpu']} ({machine['threads']} threads)")
    head = f"{'model':<22}{'params':>8}{'GFLOP/img':>11}{'img/s':>8}{'(med.)':>9}{'s/step':>8}" \
           f"{'spread':>8}{'GFLOP/s':>9}{'util':>7}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        util = "-" if r["utilisation"] is None else f"{100 * r['utilisation']:.0f}%"
        print(f"{r['name'] + '/' + r['precision']:<22}{r['params'] / 1e6:>7.2f}M"
              f"{r['flops_per_image'] / 1e9:>11.1f}{r['images_per_s']:>8.3f}"
              f"{r['images_per_s_median']:>9.3f}{r['s_per_step']:>8.3f}{100 * r['spread']:>7.0f}%"
              f"{r['gflops_per_s']:>9.1f}{util:>7}")
    peaks = {r["precision"]: r["peak_gflops"] for r in result["rows"] if r["peak_gflops"]}
    source = result["rows"][0]["peak_source"]
    print(f"util: share of the {source} peak (" + ", ".join(f"{k} {v:.0f} GFLOP/s"
          for k, v in peaks.items()) + f"); spread: (slowest - fastest) / fastest over "
          f"{result['spec']['repeats']} runs; best run shown, median in brackets")
    for c in result["comparisons"]:
        verdict = "" if c["target"] is None else \
            f" (target >= {c['target']:.1f}x: {'met' if c['meets_target'] else 'NOT met'})"
        print(f"{c['ours']} vs {c['peer']}: {c['images_per_s_ratio']:.2f}x images/s, "
              f"{c['at_equal_flops_ratio']:.2f}x at equal FLOPs{verdict}")
    for note in result["notes"]:
        print(f"note: {note}")
    agree = result.get("bf16_vs_fp32")
    for what, a in (agree or {}).items():
        print(f"bf16 vs fp32, {what.replace('_', ' ')} (same seeds): max |diff| {a['max_abs']:.3g}, "
              f"mean |diff| {a['mean_abs']:.3g}, PSNR {a['psnr_db']:.1f} dB")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- sampling subcommand

def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="perf-base-32", help="base U-Net config name")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--steps", type=int, default=50, help="DDIM denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance weight w")
    p.add_argument("--thresholding", default="static", help="none | static | dynamic:P[:CAP]")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: also run bf16 autocast and compare its images with fp32's")
    p.add_argument("--peer", choices=("none",) + peers.PEERS, default="none",
                   help="time a matched external implementation beside ours")
    p.add_argument("--peer-precision", choices=("fp32", "bf16"), default="fp32",
                   help="precision of the peer's run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per model")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run")
    p.add_argument("--text-len", type=int, default=32, help="text tokens per caption")
    p.add_argument("--seed", type=int, default=0, help="base seed (weights, text, noise)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N; not given: CUDA when available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; not given: torch's choice")
    p.add_argument("--out", default="runs/perf/sampling.json", help="JSON results file")


def _check_sampling_args(args):
    """Stop early on user errors; returns (config, None) or (None, message)."""
    for flag in ("batch_size", "steps", "repeats", "text_len"):
        if getattr(args, flag) < 1:
            return None, f"--{flag.replace('_', '-')} must be >= 1"
    try:
        config = resolve_config(args.config)
    except KeyError as e:
        return None, e.args[0]
    if config.lowres_size is not None:
        return None, f"--config {args.config!r} is a super-resolution stage; choose a base config"
    if args.peer == "imagen-pytorch":
        if args.config not in peers.IMAGEN_PYTORCH_UNETS:
            return None, (f"no imagen-pytorch peer is defined for --config {args.config!r}; "
                          f"use one of {sorted(peers.IMAGEN_PYTORCH_UNETS)}")
        try:
            peers.load_imagen_pytorch()
        except peers.PeerNotInstalledError as e:
            return None, str(e)
    return config, None


def cmd_sampling(args) -> int:
    """Time sampling of ours (and the peer), print the table, write the JSON."""
    config, error = _check_sampling_args(args)
    if error:
        print(f"bench.perf sampling: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    schedule = Schedule("cosine")
    text, mask = random_text(args.batch_size, args.text_len, config.text_dim,
                             derive_seed(args.seed, "text"))
    text, mask = text.to(device), mask.to(device)
    with torch.inference_mode():
        contenders = build_contenders(args, config, device, text, mask, schedule)
        # Peaks measured just before timing, when the machine is in the state the timing sees.
        peaks = {c.precision: peak_gflops(device, c.precision) for c in contenders}
        seconds, images = time_contenders(contenders, args, config, device, schedule)
    rows = [row_result(c, seconds[c.key], args, peaks) for c in contenders]
    result = {
        "benchmark": "sampling",
        "spec": {**{k: v for k, v in vars(args).items() if k != "func"},
                 "image_size": config.image_size, "sampler": "ddim", "eta": 0.0,
                 "schedule": schedule.name, "text": "random N(0,1) embeddings, seeded",
                 "image_seeds": "derive_seed(seed, 'image', i) for image i",
                 "weights": "random N(0, 1/fan_in), seeded"},
        "config": dataclasses.asdict(config),
        "peer_config": (peers.IMAGEN_PYTORCH_UNETS[args.config] | {"version": peers.imagen_pytorch_version()}
                        if args.peer == "imagen-pytorch" else None),
        "machine": machine_info(device),
        "rows": rows,
        "comparisons": comparisons(rows, device),
        "bf16_vs_fp32": ({what: image_agreement(bf, fp) for what, bf, fp in zip(
            ("one_step_x0", "final_images"), images["ours/bf16"], images["ours/fp32"])}
            if "ours/bf16" in images else None),
    }
    result["notes"] = caveats(result)
    out = Path(args.out)
    _write_json(out, result)
    print_table(result)
    print(f"results: {out}")
    return 0


# ----------------------------------------------------------------------------- CLI

SUBCOMMANDS = {
    "sampling": (add_sampling_args, cmd_sampling, "images/s and s/step of text-to-image sampling"),
    "fid": (perf_fid.add_fid_args, perf_fid.cmd_fid,
            "FID feature extraction images/s and peak memory, beside clean-fid and torch-fidelity"),
    "votes": (perf_votes.add_votes_args, perf_votes.cmd_votes,
              "rating-app vote latency (median, p99) with concurrent simulated raters"),
    "frechet": (perf_uncertainty.add_frechet_args, perf_uncertainty.cmd_frechet,
                "FID seconds (fast exact route vs the old ones) and the cost of its uncertainty"),
    "metrics": (perf_metrics.add_metrics_args, perf_metrics.cmd_metrics,
                "CMMD and PRDC seconds and peak memory, bootstrap replicates timed apart"),
    "networks": (perf_networks.add_networks_args, perf_networks.cmd_networks,
                 "per-image feature time of each feature network (inception, clip, dinov2)"),
}

EPILOG = """examples:
  python -m bench.perf sampling
  python -m bench.perf sampling --peer imagen-pytorch --repeats 5
  python -m bench.perf sampling --precision bf16 --out runs/perf/sampling-bf16.json
  python -m bench.perf sampling --config tiny-base --batch-size 4 --steps 10 --repeats 1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf", description="Throughput benchmarks of the reference cascade.",
        formatter_class=HelpFormatter, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_args, func, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                           formatter_class=HelpFormatter)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
