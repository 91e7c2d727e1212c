"""Cost of FID and its uncertainty per config: `python -m bench.perf frechet ...`.

For each N in --n (d = --dims features), on one machine:

a) feature extraction: images/s of the suite's extractor (bench.perf_fid's "ours" route, in its
   own process, on --extract-n seeded PNGs with the stand-in InceptionV3 weights); the seconds
   for N images are extrapolated from it when --extract-n < N (the output says so);
b) FID seconds, the new fast route against the old ones, on the same statistics: `FIDMetric.compute`
   (float64 sums -> covariance -> bench.metrics.frechet with the reference's cached root), the
   resampler's `FrechetResampler(features, reference).fid()` (what bench.statistics runs, from
   the raw features), torchmetrics' `FrechetInceptionDistance.compute()` on the same states
   (torch.linalg.eigvals of S1 S2: the suite's previous route), numpy eigvals and scipy sqrtm;
c) the uncertainty of one config: `bench.statistics._fid_stats` as a run calls it (B bootstrap
   replicates, FID∞ at 15 sizes with a 50-replicate CI), split into the CI alone (setup + B plain
   replicates, estimated from the plain replicates' mean) and FID∞'s extra cost;
d) the stored features' size (float32 .npy, N x d, as bench.feature_store writes them);
e) uncertainty / extraction, measured and extrapolated to N = 30,000 (FID-30K) with a cost model:
   the d x d eigenvalue problems are fixed, the rest grows linearly in N.

Features for b)-d) are synthetic (seeded Gaussians whose covariance has eigenvalues ∝ k⁻² in a
random basis, a decaying spectrum like Inception features'); the reference statistics are the
exact covariance of that law at another scale. Times depend on the shapes, not the values,
except the non-symmetric eigensolvers' iteration counts. Images are one per prompt (COCO FID).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np

from .cli import fill_defaults

EXTRAPOLATE_TO = 30_000            # the paper's FID-30K
TARGET_SPEEDUP = 10.0              # old (torchmetrics) / new FID compute
TARGET_SHARE = 0.10                # uncertainty / extraction seconds of one config
OLD_ROUTES = ("torchmetrics", "eigvals", "sqrtm")

EPILOG = """examples:
  python -m bench.perf frechet --out runs/perf/frechet.json
  python -m bench.perf frechet --n 30000 --extract-n 200 --old-routes torchmetrics
  python -m bench.perf frechet --device cuda --n 2000,10000,30000
  python -m bench.perf frechet --quick                 # d = 64, N = 200: a smoke run
"""

FULL = dict(n="2000,10000", dims=2048, network_input=299, bootstrap=200, fid_inf_bootstrap=50,
            batch_size=50, num_workers=2, repeats=3)
QUICK = dict(n="200", dims=64, network_input=75, bootstrap=20, fid_inf_bootstrap=5, batch_size=8,
             num_workers=0, repeats=1, extract_n=8)


def add_frechet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", default=None, help=f"comma list of images per config (default: {FULL['n']})")
    p.add_argument("--dims", type=int, default=None, help=f"feature dims (default: {FULL['dims']})")
    p.add_argument("--device", default="cpu", help="where extraction and the FID linear algebra run")
    p.add_argument("--extract-n", type=int, default=None,
                   help="images whose extraction is timed; seconds for N are extrapolated "
                        "(default: min(N, 2000))")
    p.add_argument("--weights", default=None,
                   help="torch-fidelity InceptionV3 weights (default: the random stand-in of bench.perf fid)")
    p.add_argument("--network-input", type=int, default=None,
                   help=f"InceptionV3 input size (default: {FULL['network_input']}, the FID protocol)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"extraction batch (default: {FULL['batch_size']})")
    p.add_argument("--num-workers", type=int, default=None,
                   help=f"extraction DataLoader workers (default: {FULL['num_workers']})")
    p.add_argument("--bootstrap", type=int, default=None,
                   help=f"bootstrap replicates B of the FID CI (default: {FULL['bootstrap']})")
    p.add_argument("--fid-inf-points", type=int, default=15, help="subset sizes of FID∞")
    p.add_argument("--fid-inf-bootstrap", type=int, default=None,
                   help=f"replicates of FID∞'s CI (default: {FULL['fid_inf_bootstrap']})")
    p.add_argument("--old-routes", default=",".join(OLD_ROUTES),
                   help="comma list of old FID routes to time (torchmetrics, eigvals, sqrtm; none)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs of each fast route, best kept; old routes run once "
                        f"(default: {FULL['repeats']})")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the features, images, weights and draws")
    p.add_argument("--quick", action="store_true",
                   help="smoke sizes for the defaults: d 64, N 200, 8 images at 75 px, B 20")
    p.add_argument("--out", default="runs/perf/frechet.json", help="JSON results file")


# ----------------------------------------------------------------------------- inputs

def power_law_features(n: int, basis: np.ndarray, seed: int, *, scale: float = 1.0,
                       shift: float = 0.0) -> np.ndarray:
    """(n, d) float32 features, covariance eigenvalues scale² k⁻² in `basis`, mean `shift`."""
    d = len(basis)
    rng = np.random.default_rng([seed, n, d])
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 4096):  # bounded float64 temporaries
        g = rng.standard_normal((min(4096, n - start), d))
        out[start:start + len(g)] = (g * (scale / np.arange(1, d + 1))) @ basis.T + shift
    return out


def synthetic_reference(basis: np.ndarray, n: int):
    """The exact law of `power_law_features(scale=1)` as coco.reference.ReferenceStats (no root)."""
    from coco.reference import ReferenceStats

    d = len(basis)
    sigma = (basis / np.arange(1, d + 1) ** 2) @ basis.T
    return ReferenceStats(np.zeros(d), (sigma + sigma.T) / 2, n, {})


def random_basis(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng([seed, d]).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _best(fn, repeats: int) -> tuple[float, object]:
    """(best seconds, last value) of `repeats` calls."""
    best, value = math.inf, None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


# ----------------------------------------------------------------------------- a) extraction

def time_extraction(args, extract_n: int) -> dict:
    """images/s of the suite's extractor on `extract_n` PNGs (bench.perf_fid's "ours" worker)."""
    from . import perf_fid

    images = perf_fid.make_images(extract_n, args.seed)
    spec = SimpleNamespace(weights=args.weights, device=args.device, batch_size=args.batch_size,
                           num_workers=args.num_workers, repeats=1, compare=1, threads=args.threads,
                           network_input=args.network_input)
    with tempfile.TemporaryDirectory(prefix="perf_frechet_") as tmp:
        row, _ = perf_fid.run_tool("ours", images, spec, Path(tmp))
    row = perf_fid.summarize([row])
    return {"extract_n": row["n"], "seconds": row["seconds"], "images_per_s": row["images_per_s"],
            "cpu_s_per_image": row["cpu_s_per_image"], "setup_s": row["setup_s"],
            "num_workers": args.num_workers, "batch_size": args.batch_size,
            "network": f"torch-fidelity inception-v3-compat pool3 (2048), input {args.network_input}²",
            "route": row["route"]}


# ----------------------------------------------------------------------------- b) FID routes

def time_fid_routes(features: np.ndarray, reference, args, old_routes: list[str]) -> dict:
    """Seconds and value of each FID route on the same features and reference."""
    import torch

    from .metrics.fid import FIDMetric
    from .metrics.frechet import (ReferenceRoot, frechet_distance_eigvals,
                                  frechet_distance_sqrtm)
    from .metrics.resample import FrechetResampler

    d = features.shape[1]
    stub = SimpleNamespace(device=torch.device(args.device), dims=d, protocol={})
    metric = FIDMetric(stub, reference)
    t0 = time.perf_counter()
    for part in np.array_split(features, max(1, len(features) // 1000)):
        metric.update_features(torch.from_numpy(part))
    accumulate = time.perf_counter() - t0
    out = {"accumulate_sums": {"seconds": accumulate,
                               "note": "torchmetrics float64 sums, done during extraction in a run"}}
    s, v = _best(metric.compute, args.repeats)
    out["fast_metric"] = {"seconds": s, "value": float(v),
                          "route": "FIDMetric.compute: sums -> covariance -> R S R eigvalsh (root cached)"}
    root = ReferenceRoot.of(reference)
    s, v = _best(lambda: FrechetResampler(features, root, args.device).fid(), args.repeats)
    out["fast_resampler"] = {"seconds": s, "value": float(v),
                             "route": "FrechetResampler(features).fid(): from the raw features"}
    n = int(metric.fid.fake_features_num_samples)
    total = metric.fid.fake_features_sum.double().cpu().numpy()
    mu = total / n
    sigma = (metric.fid.fake_features_cov_sum.double().cpu().numpy() - n * np.outer(mu, mu)) / (n - 1)
    routes = {"torchmetrics": lambda: float(metric.fid.compute()),
              "eigvals": lambda: frechet_distance_eigvals(mu, sigma, reference.mu, reference.sigma),
              "sqrtm": lambda: frechet_distance_sqrtm(mu, sigma, reference.mu, reference.sigma)}
    notes = {"torchmetrics": "FrechetInceptionDistance.compute() on the same states "
                             "(torch.linalg.eigvals of S1 S2): the suite's previous route",
             "eigvals": "numpy eigvals of S1 S2", "sqrtm": "scipy.linalg.sqrtm of S1 S2"}
    for name in old_routes:
        print(f"  FID by the old route {name} ...", flush=True)
        s, v = _best(routes[name], 1)
        out[name] = {"seconds": s, "value": float(v), "route": notes[name]}
    return out


# ----------------------------------------------------------------------------- c) uncertainty

def time_uncertainty(features: np.ndarray, reference, args) -> dict:
    """bench.statistics._fid_stats on one config, with the resampler's calls timed."""
    from tqdm.auto import tqdm

    from . import statistics as stats_module
    from .metrics.frechet import ReferenceRoot
    from .metrics.resample import (FrechetResampler, PromptIndex, counts_of, draw_prompts,
                                   fid_inf_sizes)

    log = {"setup": 0.0, "point": [], "plain": [], "nested": []}

    class Timed(FrechetResampler):
        """The resampler with wall times of its calls (fid inside nested is not counted twice)."""

        def __init__(self, *a, **k):
            t0 = time.perf_counter()
            super().__init__(*a, **k)
            self._nesting = False
            log["setup"] += time.perf_counter() - t0

        def fid(self, weights=None):
            t0 = time.perf_counter()
            value = super().fid(weights)
            if not self._nesting:
                log["point" if weights is None else "plain"].append(time.perf_counter() - t0)
            return value

        def nested(self, *a, **k):
            t0, self._nesting = time.perf_counter(), True
            try:
                return super().nested(*a, **k)
            finally:
                self._nesting = False
                log["nested"].append(time.perf_counter() - t0)

    n = len(features)
    options = stats_module.StatsOptions(bootstrap=args.bootstrap, seed=args.seed,
                                        fid_inf_points=args.fid_inf_points,
                                        fid_inf_bootstrap=args.fid_inf_bootstrap, device=args.device)
    groups = PromptIndex(np.arange(n), n)  # one image per prompt
    draws = draw_prompts(n, options.bootstrap, options.seed)
    counts = counts_of(draws, n)
    root = ReferenceRoot.of(reference)
    with tqdm(total=options.bootstrap, desc=f"bootstrap N={n}", unit="rep", dynamic_ncols=True) as bar, \
            mock.patch.object(stats_module, "FrechetResampler", Timed):
        t0 = time.perf_counter()
        fs = stats_module._fid_stats(features, groups, root, draws, counts, options, bar)
        whole = time.perf_counter() - t0
    sizes = fid_inf_sizes(n, options.fid_inf_points)
    n_inf = min(options.fid_inf_bootstrap, options.bootstrap) if sizes else 0
    plain = float(np.mean(log["plain"])) if log["plain"] else math.nan
    ci_alone = log["setup"] + sum(log["point"]) + options.bootstrap * plain
    return {"seconds": whole, "ci_seconds": ci_alone, "fid_inf_seconds": whole - ci_alone,
            "ci_note": "CI alone = setup + point FID + B x mean plain replicate; FID∞ = the rest",
            "breakdown": {"setup_s": log["setup"], "point_s": sum(log["point"]),
                          "plain_replicates": len(log["plain"]), "plain_s_each": plain,
                          "nested_calls": len(log["nested"]),
                          "nested_s_each": float(np.mean(log["nested"])) if log["nested"] else math.nan},
            "bootstrap": options.bootstrap, "fid_inf_points": len(sizes), "fid_inf_bootstrap": n_inf,
            "eigen_problems": 1 + (options.bootstrap - n_inf) + n_inf * len(sizes) + len(sizes),
            "fid": fs["fid"], "fid_ci": list(fs["fid_ci"]), "fid_inf": fs["fid_inf"],
            "fid_inf_ci": list(fs["fid_inf_ci"])}


def eigvalsh_seconds(d: int, device: str, repeats: int = 3) -> float:
    """Best seconds of one d x d float64 torch eigvalsh (one bootstrap eigenvalue problem)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    m = (a @ a.T).to(device)
    return _best(lambda: float(torch.linalg.eigvalsh(m)[-1]), repeats)[0]


def extrapolate(row: dict, eig_s: float, images_per_s: float, target_n: int) -> dict:
    """Uncertainty and extraction seconds at `target_n` from a measured row with N >= d:
    eigen problems x eig_s is fixed, the rest of the measured time scales with N."""
    unc = row["uncertainty"]
    fixed = unc["eigen_problems"] * eig_s
    scaled = max(unc["seconds"] - fixed, 0.0) * target_n / row["n"]
    seconds = fixed + scaled
    extract = target_n / images_per_s
    return {"n": target_n, "from_n": row["n"], "uncertainty_seconds": seconds,
            "eigen_problem_s": eig_s, "eigen_problems": unc["eigen_problems"],
            "fixed_seconds": fixed, "linear_seconds": scaled, "extract_seconds": extract,
            "ratio": seconds / extract, "target": TARGET_SHARE, "met": seconds / extract < TARGET_SHARE}


def feature_file_bytes(features: np.ndarray) -> int:
    """Bytes of the .npy file bench.feature_store writes for these features (float32, header)."""
    with tempfile.TemporaryDirectory(prefix="perf_frechet_") as tmp:
        path = Path(tmp) / "features.npy"
        np.save(path, features.astype(np.float32, copy=False))
        return path.stat().st_size


# ----------------------------------------------------------------------------- command

def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 2:
        raise ValueError(f"{flag} takes a comma list of integers >= 2, got {text!r}")
    return values


def _routes(text: str) -> list[str]:
    routes = [r.strip() for r in text.split(",") if r.strip() and r.strip() != "none"]
    unknown = sorted(set(routes) - set(OLD_ROUTES))
    if unknown:
        raise ValueError(f"--old-routes: unknown {', '.join(unknown)} (choose from "
                         f"{', '.join(OLD_ROUTES)} or none)")
    return routes


def _versions() -> dict:
    out = {}
    for name in ("numpy", "scipy", "torch", "torchmetrics"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def cmd_frechet(args) -> int:
    """Time extraction, the FID routes and the uncertainty of one config; print, write JSON."""
    import torch

    from . import perf_fid

    fill_defaults(args, QUICK if args.quick else FULL)
    try:
        sizes = _ints(args.n, "--n")
        old_routes = _routes(args.old_routes)
        if args.dims < 2 or args.bootstrap < 1 or args.fid_inf_bootstrap < 0 or args.repeats < 1:
            raise ValueError("--dims >= 2, --bootstrap >= 1, --fid-inf-bootstrap >= 0 and "
                             "--repeats >= 1 are needed")
        if args.weights is not None and not Path(args.weights).is_file():
            raise ValueError(f"--weights {args.weights}: no such file")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here")
    except ValueError as e:
        print(f"bench.perf frechet: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    extract_n = args.extract_n or min(max(sizes), 2000)
    weights_note = "given file"
    if args.weights is None:
        args.weights = str(perf_fid.default_weights(args.seed))
        weights_note = ("random stand-in InceptionV3 (tests/fakes.make_inception_weights): the real "
                        "FID weights cannot be downloaded here; the cost is the same network's")

    print(f"a) extraction of {extract_n} images ...", flush=True)
    extraction = time_extraction(args, extract_n)
    extraction["weights_note"] = weights_note
    basis = random_basis(args.dims, args.seed)
    reference = synthetic_reference(basis, max(sizes))
    t0 = time.perf_counter()
    reference.with_root()
    root_seconds = time.perf_counter() - t0
    eig_s = eigvalsh_seconds(args.dims, args.device)

    rows = []
    for i, n in enumerate(sizes):
        print(f"N = {n}: features ...", flush=True)
        features = power_law_features(n, basis, args.seed + 1 + i, scale=1.1, shift=0.01)
        print(f"N = {n}: FID routes ...", flush=True)
        routes = time_fid_routes(features, reference, args, old_routes if i == 0 else [])
        print(f"N = {n}: uncertainty (B = {args.bootstrap}) ...", flush=True)
        uncertainty = time_uncertainty(features, reference, args)
        extract_s = n / extraction["images_per_s"]
        rows.append({"n": n, "dims": args.dims, "routes": routes, "uncertainty": uncertainty,
                     "feature_file_bytes": feature_file_bytes(features),
                     "extract_seconds": extract_s, "extract_extrapolated": n > extraction["extract_n"],
                     "ratio": uncertainty["seconds"] / extract_s,
                     "ci_ratio": uncertainty["ci_seconds"] / extract_s})
        del features

    first = rows[0]["routes"]
    speedups = {name: first[name]["seconds"] / first["fast_metric"]["seconds"]
                for name in old_routes}
    target = None
    if "torchmetrics" in speedups:
        target = {"route": "torchmetrics", "speedup": speedups["torchmetrics"],
                  "target": TARGET_SPEEDUP, "met": speedups["torchmetrics"] >= TARGET_SPEEDUP}
    big = [r for r in rows if r["n"] >= args.dims] or rows
    projection = extrapolate(max(big, key=lambda r: r["n"]), eig_s, extraction["images_per_s"],
                             EXTRAPOLATE_TO)
    result = {"benchmark": "frechet",
              "spec": {k: v for k, v in vars(args).items() if k != "func"},
              "machine": {**perf_fid.machine_info(args.device), "versions": _versions()},
              "extraction": extraction, "reference_root_seconds": root_seconds,
              "eigvalsh_seconds": eig_s, "rows": rows, "speedups": speedups,
              "speedup_target": target, "projection": projection, "share_target": TARGET_SHARE}
    out = Path(args.out)
    perf_fid._write_json(out, result)
    print_table(result)
    print(f"results: {out}")
    return 0


def print_table(result: dict) -> None:
    m, ex = result["machine"], result["extraction"]
    where = m.get("gpu") if m["device"].startswith("cuda") else m["cpu"]
    print(f"\nfrechet: d = {result['spec']['dims']}, on {m['device']} ({where}, {m['threads']} "
          f"threads); extraction {ex['images_per_s']:.2f} images/s over {ex['extract_n']} images "
          f"({ex['network']}; {ex['weights_note']})")
    first = result["rows"][0]
    print(f"\nFID of one config, N = {first['n']} (reference root once: "
          f"{result['reference_root_seconds']:.2f} s, cached with the statistics)")
    head = f"{'route':<16}{'seconds':>10}{'FID':>14}{'x fast':>9}"
    print(head + "\n" + "-" * len(head))
    fast = first["routes"]["fast_metric"]["seconds"]
    for name, r in first["routes"].items():
        if "value" not in r:
            continue
        print(f"{name:<16}{r['seconds']:>10.3f}{r['value']:>14.6f}{r['seconds'] / fast:>9.1f}")
    t = result["speedup_target"]
    if t:
        print(f"target: old ({t['route']}) / new >= {t['target']:.0f}x: {t['speedup']:.1f}x, "
              f"{'met' if t['met'] else 'NOT met'}")
    print("\nuncertainty of one config against its extraction")
    head = (f"{'N':>7}{'extract s':>11}{'CI s':>9}{'FID∞ s':>9}{'all s':>9}{'share':>8}"
            f"{'CI share':>10}{'features MB':>13}")
    print(head + "\n" + "-" * len(head))
    for r in result["rows"]:
        u = r["uncertainty"]
        mark = "*" if r["extract_extrapolated"] else " "
        print(f"{r['n']:>7}{r['extract_seconds']:>10.1f}{mark}{u['ci_seconds']:>9.1f}"
              f"{u['fid_inf_seconds']:>9.1f}{u['seconds']:>9.1f}{100 * r['ratio']:>7.1f}%"
              f"{100 * r['ci_ratio']:>9.1f}%{r['feature_file_bytes'] / 1e6:>13.1f}")
    p = result["projection"]
    print(f"{p['n']:>7}{p['extract_seconds']:>10.1f}*{'':>9}{'':>9}{p['uncertainty_seconds']:>9.1f}"
          f"{100 * p['ratio']:>7.1f}%   (projected from N = {p['from_n']}: {p['eigen_problems']} "
          f"eigenproblems x {p['eigen_problem_s']:.3f} s + {p['linear_seconds']:.1f} s linear in N)")
    print("* extraction seconds extrapolated from the measured images/s")
    print(f"target: uncertainty <= {100 * result['share_target']:.0f}% of extraction at N = "
          f"{p['n']}: {100 * p['ratio']:.1f}%, {'met' if p['met'] else 'NOT met'}")
