"""Cost of CMMD and PRDC on stored features: `python -m bench.perf metrics ...`.

For each N in --n (images per side, generated and reference alike), on one machine:

- CMMD (bench.metrics.cmmd, d = --cmmd-dims, CLIP ViT-L/14's 768 by default): the reference
  term (`CMMD(reference)`, once per reference and shared by every config), one value
  (`CMMD.value`), and B bootstrap replicates (`CMMD.replicates`, one blocked pass over X);
- PRDC (bench.metrics.prdc, d = --prdc-dims, DINOv2 ViT-L/14's 1024 by default): the reference
  radii (`PRDC(reference)`), one evaluation (`PRDC.compute`: fake radii, the real-fake pass and
  its sparse incidences), and B replicates from that incidence (`PRDC.replicates`).

Features are seeded Gaussians scaled to unit length (the generated side shifted slightly); times
depend on the shapes only. Weights are bench.metrics.resample's prompt draws, one image per
prompt. Each (metric, N) runs in a fresh process, so its memory figures are its own:

- tracemalloc peak per stage: numpy allocations (inputs, float64 copies, weights, incidences);
  torch's CPU allocator is invisible to it;
- RSS growth: getrusage ru_maxrss after each stage minus its value once the features exist,
  i.e. the process's high-water mark reached so far (torch tiles included);
- CUDA: torch.cuda.max_memory_allocated per stage, on a CUDA --device.

For scale, each row also gives what one dense N x N float64 matrix would take.

A subcommand is one `add_metrics_args(parser)` and one `cmd_metrics(args) -> int`.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .cli import fill_defaults

METRICS = ("cmmd", "prdc")
MIB = 2.0 ** 20

EPILOG = """examples:
  python -m bench.perf metrics --out runs/perf/metrics.json
  python -m bench.perf metrics --n 30000 --metrics cmmd --device cuda
  python -m bench.perf metrics --quick                 # d = 32, N = 300, B = 10: a smoke run
"""

FULL = dict(n="2000,10000", cmmd_dims=768, prdc_dims=1024, bootstrap=200)
QUICK = dict(n="300", cmmd_dims=32, prdc_dims=32, bootstrap=10)


def add_metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", default=None,
                   help=f"comma list of images per side (default: {FULL['n']})")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma list of cmmd, prdc")
    p.add_argument("--cmmd-dims", type=int, default=None,
                   help=f"CMMD embedding dims (default: {FULL['cmmd_dims']}, CLIP ViT-L/14)")
    p.add_argument("--prdc-dims", type=int, default=None,
                   help=f"PRDC feature dims (default: {FULL['prdc_dims']}, DINOv2 ViT-L/14)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help=f"bootstrap replicates B (default: {FULL['bootstrap']})")
    p.add_argument("--block", type=int, default=2048, help="tile rows and columns of both metrics")
    p.add_argument("--device", default="cpu", help="where the tiles are computed (cpu, cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each stage, best kept")
    p.add_argument("--seed", type=int, default=0, help="seed of the features and the draws")
    p.add_argument("--in-process", action="store_true",
                   help="run every case in this process (no fresh process per case: RSS growth "
                        "then misses what earlier cases already reached)")
    p.add_argument("--quick", action="store_true",
                   help="smoke sizes for the defaults: d 32, N 300, B 10")
    p.add_argument("--out", default="runs/perf/metrics.json", help="JSON results file")


# ----------------------------------------------------------------------------- one case

def unit_features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(n, d) float32 rows of unit length: seeded N(shift, 1) directions."""
    g = np.random.default_rng([seed, n, d]).standard_normal((n, d), dtype=np.float32) + shift
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Stages:
    """Seconds (best of `repeats`) and memory of the successive stages of one case."""

    def __init__(self, device, repeats: int):
        import torch

        self.torch, self.device, self.repeats = torch, device, repeats
        self.rss0 = _rss_mib()
        self.out: dict[str, dict] = {}

    def run(self, name: str, fn):
        torch, cuda = self.torch, self.device.type == "cuda"
        best, value = float("inf"), None
        tracemalloc.reset_peak()
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(self.repeats):
            if cuda:
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            value = fn()
            if cuda:
                torch.cuda.synchronize(self.device)
            best = min(best, time.perf_counter() - t0)
        self.out[name] = {"seconds": best,
                          "tracemalloc_peak_mib": tracemalloc.get_traced_memory()[1] / MIB,
                          "rss_growth_mib": _rss_mib() - self.rss0,
                          "cuda_peak_mib": (torch.cuda.max_memory_allocated(self.device) / MIB
                                            if cuda else None)}
        return value


def measure_case(spec: dict) -> dict:
    """Time and measure one metric at one N (meant for a fresh process)."""
    import torch

    from .metrics.cmmd import CMMD
    from .metrics.prdc import PRDC
    from .metrics.resample import counts_of, draw_prompts

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    n, d, b, seed = spec["n"], spec["dims"], spec["bootstrap"], spec["seed"]
    reference = unit_features(n, d, seed)
    generated = unit_features(n, d, seed + 1, shift=0.02)
    weights = counts_of(draw_prompts(n, b, seed), n)                     # (B, n)
    tracemalloc.start()
    stages = _Stages(device, spec["repeats"])
    row = {"metric": spec["metric"], "n": n, "dims": d, "bootstrap": b, "block": spec["block"],
           "dense_matrix_mib": n * n * 8 / MIB, "rss_start_mib": stages.rss0}
    if spec["metric"] == "cmmd":
        metric = stages.run("setup", lambda: CMMD(reference, block=spec["block"], device=device))
        row["value"] = stages.run("value", lambda: metric.value(generated))
        reps = stages.run("replicates", lambda: metric.replicates(generated, weights))
        row["replicate_sd"] = float(np.std(reps, ddof=1)) if b > 1 else None
    else:
        metric = stages.run("setup", lambda: PRDC(reference, block=spec["block"], device=device))
        inc = stages.run("incidence", lambda: metric.incidence(generated))
        row["value"] = stages.run("value", lambda: metric.compute(inc))
        reps = stages.run("replicates", lambda: metric.replicates(inc, weights))
        row["incidence_nnz"] = {"covers": int(inc.covers.nnz), "covered_by": int(inc.covered_by.nnz)}
        row["replicate_sd"] = {k: float(np.std(v, ddof=1)) for k, v in reps.items()} if b > 1 else None
    tracemalloc.stop()
    row["stages"] = stages.out
    row["peak_rss_mib"] = _rss_mib()
    return row


def run_case(spec: dict, in_process: bool) -> dict:
    """`measure_case` in a fresh (spawned) process, or here."""
    if in_process:
        return measure_case(spec)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_case, spec).result()


# ----------------------------------------------------------------------------- command

def _ints(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--n {text!r}: expected a comma list of whole numbers") from None
    if not values or min(values) < 10:
        raise ValueError(f"--n {text!r}: every N must be >= 10")
    return values


def cmd_metrics(args) -> int:
    """Time CMMD and PRDC at each N; print the table, write the JSON."""
    import torch

    from .perf_fid import _write_json, machine_info

    fill_defaults(args, QUICK if args.quick else FULL)
    try:
        sizes = _ints(args.n)
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        bad = [m for m in metrics if m not in METRICS]
        if bad or not metrics:
            raise ValueError(f"--metrics {args.metrics!r}: choose from {', '.join(METRICS)}")
        if min(args.cmmd_dims, args.prdc_dims, args.bootstrap, args.block, args.repeats) < 1:
            raise ValueError("--cmmd-dims, --prdc-dims, --bootstrap, --block and --repeats must "
                             "be >= 1")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here")
    except ValueError as e:
        print(f"bench.perf metrics: {e}", file=sys.stderr)
        return 2
    rows = []
    for metric in metrics:
        for n in sizes:
            dims = args.cmmd_dims if metric == "cmmd" else args.prdc_dims
            print(f"{metric}: N = {n}, d = {dims}, B = {args.bootstrap} ...", flush=True)
            spec = {"metric": metric, "n": n, "dims": dims, "bootstrap": args.bootstrap,
                    "block": args.block, "device": args.device, "threads": args.threads,
                    "repeats": args.repeats, "seed": args.seed}
            rows.append(run_case(spec, args.in_process))
    result = {"benchmark": "metrics",
              "spec": {k: v for k, v in vars(args).items() if k != "func"},
              "machine": machine_info(args.device),
              "features": "seeded N(0, 1) (generated: N(0.02, 1)) rows scaled to unit length",
              "weights": "bench.metrics.resample.draw_prompts, one image per prompt",
              "rows": rows}
    out = Path(args.out)
    _write_json(out, result)
    print_table(result)
    print(f"results: {out}")
    return 0


def print_table(result: dict) -> None:
    m = result["machine"]
    where = m.get("gpu") if m["device"].startswith("cuda") else m["cpu"]
    print(f"\nmetrics on {m['device']} ({where}, {m['threads']} threads), block "
          f"{result['spec']['block']}; seconds best of {result['spec']['repeats']}")
    head = (f"{'metric':<7}{'N':>7}{'d':>6}{'setup s':>9}{'value s':>9}{'B':>5}{'reps s':>9}"
            f"{'numpy MiB':>11}{'RSS+ MiB':>10}{'CUDA MiB':>10}{'NxN MiB':>9}")
    print(head + "\n" + "-" * len(head))
    for r in result["rows"]:
        st = r["stages"]
        value_s = st["value"]["seconds"] + st.get("incidence", {"seconds": 0.0})["seconds"]
        numpy_peak = max(s["tracemalloc_peak_mib"] for s in st.values())
        cuda = [s["cuda_peak_mib"] for s in st.values() if s["cuda_peak_mib"] is not None]
        print(f"{r['metric']:<7}{r['n']:>7}{r['dims']:>6}{st['setup']['seconds']:>9.2f}"
              f"{value_s:>9.2f}{r['bootstrap']:>5}{st['replicates']['seconds']:>9.2f}"
              f"{numpy_peak:>11.1f}{max(s['rss_growth_mib'] for s in st.values()):>10.1f}"
              f"{(f'{max(cuda):.1f}' if cuda else '-'):>10}{r['dense_matrix_mib']:>9.1f}")
    print("setup: the reference term / radii (once per reference); value: one config (PRDC: "
          "incidence + compute); reps: B replicates (CMMD: a pass over X; PRDC: from the "
          "incidence); numpy MiB: tracemalloc peak; RSS+: peak RSS growth over the features")
