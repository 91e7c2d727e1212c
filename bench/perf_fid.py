"""FID feature-extraction throughput: `python -m bench.perf_fid ...` (later `python -m bench.perf fid`).

Times the extraction of InceptionV3 2048-d pool features of every image in a folder by

- ours: `bench.metrics.fid.load_fid_extractor` streamed through `coco.reference.folder_stats`
  (float64 sums, so memory does not grow with N);
- clean-fid (`--peers clean-fid`): `cleanfid.fid.get_folder_features` in its "clean" mode (PIL
  bicubic resize to 299², float 0-255 input) with `model=` a callable around torch-fidelity's
  InceptionV3 built from the same weights file;
- torch-fidelity (`--peers torch-fidelity`): its own folder route, `create_feature_extractor(...,
  feature_extractor_weights_path=...)` + `extract_featuresdict_from_input_id` (what
  `calculate_metrics` runs on a cache miss), features extracted once.

All three run the same network code (torch-fidelity's `inception-v3-compat`) and weights file on
the same device. Each tool runs in its own subprocess, so the peak RSS (getrusage ru_maxrss) and,
on CUDA, torch.cuda.max_memory_allocated are per tool. Features of the first `--compare` images and
the mean feature over all images are compared between tools: ours vs torch-fidelity take the same
path (uint8 256² -> TF1-bilinear 299²) and should agree to ~1e-4; clean-fid resizes with PIL bicubic
first, so its difference is reported, not asserted.

Default weights: a random torch-fidelity InceptionV3 state dict with calibrated BatchNorm
(tests/fakes.make_inception_weights), because the real file cannot be downloaded here.
Throughput does not depend on weight values; feature agreement is checked on these weights.

A subcommand is one `add_fid_args(parser)` and one `cmd_fid(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import importlib.metadata as md
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("ours", "clean-fid", "torch-fidelity")
PEER_MODULES = {"clean-fid": "cleanfid", "torch-fidelity": "torch_fidelity"}
PEER_INSTALL = {"clean-fid": "pip install clean-fid (or pip install -e \".[peers]\")",
                "torch-fidelity": "pip install torch-fidelity"}
TARGET = 1.0  # ours / the faster peer, images/s
MATCH_TOL = 1e-4  # ours vs torch-fidelity, max |feature difference|
RESOLUTION = 256


def cache_root() -> Path:
    """$IMAGEN_BENCH_CACHE/perf_fid, else ~/.cache/imagen_bench/perf_fid."""
    root = os.environ.get("IMAGEN_BENCH_CACHE") or Path.home() / ".cache" / "imagen_bench"
    return Path(root) / "perf_fid"


# ----------------------------------------------------------------------------- inputs

def make_images(n: int, seed: int = 0, root: Path | None = None) -> Path:
    """A folder of `n` seeded random-content 256² RGB PNGs (smooth noise + grain); reused when
    complete (a `.complete` marker is written last)."""
    from PIL import Image

    folder = (root or cache_root()) / f"images-{n}-seed{seed}-{RESOLUTION}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"{i:06d}.png"
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, i])
        low = rng.integers(0, 256, (int(rng.integers(4, 33)),) * 2 + (3,), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC),
                         dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        tmp = path.with_name(path.stem + ".tmp.png")
        Image.fromarray(img).save(tmp)
        tmp.replace(path)
    marker.write_text(f"{n}\n")
    return folder


def default_weights(seed: int = 0) -> Path:
    """The stand-in InceptionV3 weights file (random, BatchNorm calibrated), made once."""
    path = cache_root() / f"fake-inception-v3-compat-seed{seed}.pth"
    if path.is_file():
        return path
    # by file: an unrelated installed `tests` package may shadow the repo's tests/ folder
    spec = importlib.util.spec_from_file_location("_imagen_bench_test_fakes", REPO / "tests" / "fakes.py")
    if spec is None or not Path(spec.origin).is_file():
        raise FileNotFoundError(f"{REPO / 'tests' / 'fakes.py'} is needed for the stand-in weights; "
                                "pass --weights PATH")
    fakes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakes)
    make_inception_weights = fakes.make_inception_weights

    tmp = path.with_name(path.name + ".tmp")
    make_inception_weights(tmp, seed=seed)
    tmp.replace(path)
    return path


def missing_peers(requested: list[str]) -> list[str]:
    """The requested peers that cannot be imported."""
    missing = []
    for peer in requested:
        try:
            importlib.import_module(PEER_MODULES[peer])
        except ImportError:
            missing.append(peer)
    return missing


# ----------------------------------------------------------------------------- worker (one tool per process)

def _peak(device) -> dict:
    import torch

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_rss_mib": rss_kib / 1024,
            "cuda_peak_mib": (torch.cuda.max_memory_allocated(device) / 2**20
                              if device.type == "cuda" else None)}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers are
    joined at the end of each pass). Unlike wall time, it barely moves when other processes
    share the cores, so it is the fairer comparison on a busy machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_ours(spec: dict, device):
    from bench.metrics.fid import load_fid_extractor
    from coco.reference import folder_stats, list_images

    t0 = time.perf_counter()
    extractor = load_fid_extractor(spec["weights"], device=device,
                                   network_input=spec.get("network_input") or 299)
    setup = time.perf_counter() - t0
    files = list_images(spec["images"])
    k = spec["compare"]

    class Capture:  # the extractor, keeping the first k features (O(k), not O(N))
        resolution, dims, device = extractor.resolution, extractor.dims, extractor.device

        def __init__(self):
            self.first = []

        def __call__(self, images):
            feats = extractor(images)
            have = sum(len(f) for f in self.first)
            if have < k:
                self.first.append(feats[:k - have].float().cpu())
            return feats

    def once():
        cap = Capture()
        stats = folder_stats(files, cap, {}, batch_size=spec["batch_size"],
                             num_workers=spec["num_workers"], progress=False)
        first = np.concatenate([f.numpy() for f in cap.first]) if cap.first else np.zeros((0, 2048))
        return first, np.asarray(stats.mu, np.float64), stats.n

    info = {"version": md.version("torch-fidelity"), "num_workers": spec["num_workers"],
            "route": "bench.metrics.fid.load_fid_extractor + coco.reference.folder_stats",
            "resize": "uint8 256 -> TF1-bilinear 299 (in network)"}
    return setup, once, info


def _run_clean_fid(spec: dict, device):
    import torch
    from cleanfid import fid as cfid
    from torch_fidelity.utils import create_feature_extractor

    t0 = time.perf_counter()
    net = create_feature_extractor("inception-v3-compat", ["2048"], cuda=False, verbose=False,
                                   feature_extractor_weights_path=spec["weights"]).to(device)

    def model(x):  # clean-fid passes float 0-255 (B, 3, 299, 299); the network asserts uint8
        return net(x.round().clamp_(0, 255).to(torch.uint8))[0]

    setup = time.perf_counter() - t0

    def once():
        feats = cfid.get_folder_features(spec["images"], model=model, num_workers=spec["num_workers"],
                                         batch_size=spec["batch_size"], device=device, mode="clean",
                                         verbose=False)
        return feats[:spec["compare"]], feats.astype(np.float64).mean(0), len(feats)

    info = {"version": md.version("clean-fid"), "num_workers": spec["num_workers"],
            "route": "cleanfid.fid.get_folder_features(mode='clean', model=torch-fidelity InceptionV3)",
            "resize": "PIL bicubic 256 -> 299 (float), rounded to uint8 in the wrapper"}
    return setup, once, info


def _run_torch_fidelity(spec: dict, device):
    import multiprocessing

    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

    cuda = device.type == "cuda"
    if cuda and device.index is not None:
        import torch
        torch.cuda.set_device(device)
    t0 = time.perf_counter()
    net = create_feature_extractor("inception-v3-compat", ["2048"], cuda=cuda, verbose=False,
                                   feature_extractor_weights_path=spec["weights"])
    setup = time.perf_counter() - t0
    kw = dict(input1=spec["images"], batch_size=spec["batch_size"], cuda=cuda, verbose=False,
              save_cpu_ram=spec["num_workers"] == 0, samples_find_ext="png,jpg,jpeg", cache=False)

    def once():
        feats = extract_featuresdict_from_input_id(1, net, **kw)["2048"].numpy()
        return feats[:spec["compare"]], feats.astype(np.float64).mean(0), len(feats)

    workers = 0 if kw["save_cpu_ram"] else min(4, 2 * multiprocessing.cpu_count())
    info = {"version": md.version("torch-fidelity"), "num_workers": workers,
            "num_workers_note": "fixed by torch-fidelity: min(4, 2 * cpu_count), 0 with save_cpu_ram",
            "route": "torch_fidelity.utils.create_feature_extractor + extract_featuresdict_from_input_id",
            "resize": "uint8 256 -> TF1-bilinear 299 (in network)"}
    return setup, once, info


RUNNERS = {"ours": _run_ours, "clean-fid": _run_clean_fid, "torch-fidelity": _run_torch_fidelity}


def worker(spec_path: str) -> int:
    """One tool's timed passes; writes its result JSON and its compared features (.npz)."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    with torch.inference_mode(False):
        setup, once, info = RUNNERS[spec["tool"]](spec, device)
        seconds, cpu_seconds = [], []
        for _ in range(spec["repeats"]):
            _sync(device)
            c0, t0 = _cpu_seconds(), time.perf_counter()
            first, mu, n = once()
            _sync(device)
            seconds.append(time.perf_counter() - t0)
            cpu_seconds.append(_cpu_seconds() - c0)
    np.savez(spec["features_out"], first=np.asarray(first, np.float32), mu=mu)
    result = {"tool": spec["tool"], "n": int(n), "setup_s": setup, "seconds_all": seconds,
              "cpu_seconds_all": cpu_seconds,
              **info, **_peak(device)}
    Path(spec["result_out"]).write_text(json.dumps(result))
    return 0


def run_tool(tool: str, images: Path, args, workdir: Path) -> tuple[dict, dict]:
    """Run `tool` in its own subprocess: (result row, {'first', 'mu'} features)."""
    spec = {"tool": tool, "images": str(images), "weights": str(args.weights), "device": args.device,
            "batch_size": args.batch_size, "num_workers": args.num_workers, "repeats": args.repeats,
            "compare": args.compare, "threads": args.threads,
            "network_input": args.network_input if tool == "ours" else None,
            "features_out": str(workdir / f"{tool}.npz"), "result_out": str(workdir / f"{tool}.json")}
    spec_path = workdir / f"{tool}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    print(f"  {tool}: extracting features of {images} ...", flush=True)
    proc = subprocess.run([sys.executable, "-m", "bench.perf_fid", "_worker", str(spec_path)],
                          cwd=REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the {tool} worker failed (exit {proc.returncode})")
    row = json.loads(Path(spec["result_out"]).read_text())
    data = np.load(spec["features_out"])
    return row, {"first": data["first"], "mu": data["mu"]}


def summarize(runs: list[dict]) -> dict:
    """One tool's row from its runs (one subprocess per round): best and median wall time over
    every pass, CPU seconds per image, the largest peak memory."""
    row = dict(runs[0])
    secs = [s for r in runs for s in r["seconds_all"]]
    cpu = [c for r in runs for c in r["cpu_seconds_all"]]
    n = row["n"]
    row.update(seconds_all=secs, cpu_seconds_all=cpu, rounds=len(runs), seconds=min(secs),
               images_per_s=n / min(secs), images_per_s_median=n / statistics.median(secs),
               spread=(max(secs) - min(secs)) / min(secs), cpu_s_per_image=min(cpu) / n,
               setup_s=min(r["setup_s"] for r in runs),
               peak_rss_mib=max(r["peak_rss_mib"] for r in runs),
               cuda_peak_mib=(None if row["cuda_peak_mib"] is None
                              else max(r["cuda_peak_mib"] for r in runs)))
    return row


def rotated(tools: list[str], round_index: int) -> list[str]:
    """Round r runs the tools starting from the r-th, so no tool always goes first (or last)
    while the machine warms up or other work comes and goes."""
    k = round_index % len(tools)
    return tools[k:] + tools[:k]


# ----------------------------------------------------------------------------- report

def machine_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    except OSError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def agreement(a: dict, b: dict) -> dict:
    """Feature differences between two tools (first-k features and the mean over all images)."""
    k = min(len(a["first"]), len(b["first"]))
    d = np.abs(a["first"][:k].astype(np.float64) - b["first"][:k])
    scale = float(np.abs(b["first"][:k]).mean()) if k else 0.0
    return {"compared_images": k, "max_abs": float(d.max()) if k else None,
            "mean_abs": float(d.mean()) if k else None, "mean_abs_feature": scale,
            "mu_max_abs": float(np.abs(a["mu"] - b["mu"]).max())}


def print_table(result: dict) -> None:
    m = result["machine"]
    where = m.get("gpu") if m["device"].startswith("cuda") else m["cpu"]
    print(f"\nfid features: {result['spec']['n_images']} images {RESOLUTION}², batch "
          f"{result['spec']['batch_size']}, on {m['device']} ({where}, {m['threads']} threads); "
          f"weights {result['spec']['weights_note']}; network {result['spec']['network']}")
    head = f"{'tool':<16}{'version':>9}{'workers':>8}{'img/s':>8}{'(med.)':>8}{'s':>8}{'spread':>8}" \
           f"{'CPU s/img':>10}{'setup s':>8}{'RSS MiB':>9}{'CUDA MiB':>9}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        cuda = "-" if r["cuda_peak_mib"] is None else f"{r['cuda_peak_mib']:.0f}"
        print(f"{r['tool']:<16}{r['version']:>9}{r['num_workers']:>8}{r['images_per_s']:>8.2f}"
              f"{r['images_per_s_median']:>8.2f}{r['seconds']:>8.1f}{100 * r['spread']:>7.0f}%"
              f"{r['cpu_s_per_image']:>10.3f}{r['setup_s']:>8.1f}{r['peak_rss_mib']:>9.0f}{cuda:>9}")
    for c in result["comparisons"]:
        print(f"ours vs {c['peer']}: {c['images_per_s_ratio']:.2f}x images/s, "
              f"{c['cpu_per_image_ratio']:.2f}x fewer CPU seconds per image, "
              f"{c['peak_rss_ratio']:.2f}x peak RSS")
    t = result["target"]
    if t:
        print(f"target ours >= {t['target']:.1f}x the faster peer ({t['peer']}): {t['ratio']:.2f}x, "
              f"{'met' if t['met'] else 'NOT met'}")
    for peer, a in result["agreement"].items():
        print(f"features ours vs {peer} (first {a['compared_images']} images): max |diff| "
              f"{a['max_abs']:.3g}, mean |diff| {a['mean_abs']:.3g} (mean |feature| "
              f"{a['mean_abs_feature']:.3g}); mean-feature max |diff| {a['mu_max_abs']:.3g}"
              + (f"; within {MATCH_TOL:g}: {a['within_tol']}" if "within_tol" in a else ""))
    mem = result.get("memory_scaling")
    if mem:
        print("peak memory of ours by N: " + ", ".join(
            f"N={r['n']}: {r['peak_rss_mib']:.0f} MiB RSS"
            + ("" if r["cuda_peak_mib"] is None else f", {r['cuda_peak_mib']:.0f} MiB CUDA") for r in mem["rows"])
            + f" (growth {mem['rss_growth_mib']:+.0f} MiB)")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ----------------------------------------------------------------------------- fid subcommand

def _peer_list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip() and p.strip() != "none"]
    bad = [p for p in names if p not in PEER_MODULES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {bad}; choose from {sorted(PEER_MODULES)}")
    return list(dict.fromkeys(names))


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()] if text else []


def add_fid_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", default=None, help="folder of images to extract features of")
    src.add_argument("--make", type=int, default=2000,
                     help="else: write N seeded random-content 256² PNGs into the cache (reused)")
    p.add_argument("--seed", type=int, default=0, help="seed of --make images and the default weights")
    p.add_argument("--weights", default=None,
                   help="torch-fidelity InceptionV3 weights (default: a random stand-in, BatchNorm calibrated)")
    p.add_argument("--batch-size", type=int, default=50, help="images per batch (every tool)")
    p.add_argument("--num-workers", type=int, default=2,
                   help="DataLoader workers (ours, clean-fid; torch-fidelity fixes its own)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per tool (default: torch's)")
    p.add_argument("--peers", type=_peer_list, default=[],
                   help="comma list of clean-fid,torch-fidelity (default: none)")
    p.add_argument("--repeats", type=int, default=1, help="timed passes over the folder per tool and round")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds of one fresh process per tool, in rotated order (best and median over all)")
    p.add_argument("--compare", type=int, default=64, help="images whose features are compared")
    p.add_argument("--memory-sizes", type=_sizes, default=[],
                   help="comma list of N (e.g. 2000,10000): peak memory of ours on --make N folders")
    p.add_argument("--network-input", type=int, default=299,
                   help="ours' InceptionV3 input size: 299 is the FID protocol; a smaller one (>= 75) "
                        "only makes --memory-sizes runs cheaper and cannot be combined with --peers")
    p.add_argument("--out", default="runs/perf/fid.json", help="JSON results file")


def cmd_fid(args) -> int:
    """Time ours (and the peers) on one folder, print the table, write the JSON."""
    import torch

    for flag in ("batch_size", "repeats", "rounds"):
        if getattr(args, flag) < 1:
            print(f"bench.perf fid: --{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.num_workers < 0 or (args.make is not None and args.make < 2 and not args.images):
        print("bench.perf fid: --num-workers must be >= 0 and --make >= 2", file=sys.stderr)
        return 2
    if args.network_input != 299 and (args.peers or args.network_input < 75):
        print("bench.perf fid: --network-input other than 299 is for memory runs of ours alone "
              "(>= 75, without --peers)", file=sys.stderr)
        return 2
    missing = missing_peers(args.peers)
    if missing:
        print("bench.perf fid: requested peer(s) not installed: " + "; ".join(
            f"{p} ({PEER_INSTALL[p]})" for p in missing) + "; or drop them from --peers", file=sys.stderr)
        return 2
    if args.images and not Path(args.images).is_dir():
        print(f"bench.perf fid: --images {args.images}: no such folder", file=sys.stderr)
        return 2
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights_note = "given file"
    if args.weights is None:
        args.weights = str(default_weights(args.seed))
        weights_note = ("random stand-in InceptionV3 (tests/fakes.make_inception_weights, BatchNorm "
                        "calibrated): the real FID weights cannot be downloaded here")
    images = Path(args.images) if args.images else make_images(args.make, args.seed)

    tools = ["ours"] + args.peers
    runs, feats = {t: [] for t in tools}, {}
    with tempfile.TemporaryDirectory(prefix="perf_fid_") as tmp:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for tool in rotated(tools, r):
                sub = Path(tmp) / f"round{r}"
                sub.mkdir(exist_ok=True)
                row, feats[tool] = run_tool(tool, images, args, sub)
                runs[tool].append(row)
        rows = [summarize(runs[t]) for t in tools]
        mem_rows = []
        if args.memory_sizes:
            saved = args.repeats, args.compare
            args.repeats, args.compare = 1, 1
            for n in args.memory_sizes:
                folder = make_images(n, args.seed)
                sub = Path(tmp) / f"mem-{n}"
                sub.mkdir()
                r, _ = run_tool("ours", folder, args, sub)
                r = summarize([r])
                mem_rows.append({"n": r["n"], "peak_rss_mib": r["peak_rss_mib"],
                                 "cuda_peak_mib": r["cuda_peak_mib"], "images_per_s": r["images_per_s"]})
            args.repeats, args.compare = saved

    ours = rows[0]
    comparisons = [{"peer": r["tool"], "images_per_s_ratio": ours["images_per_s"] / r["images_per_s"],
                    "cpu_per_image_ratio": r["cpu_s_per_image"] / ours["cpu_s_per_image"],
                    "peak_rss_ratio": ours["peak_rss_mib"] / r["peak_rss_mib"]} for r in rows[1:]]
    target = None
    if comparisons:
        fastest = max(rows[1:], key=lambda r: r["images_per_s"])
        ratio = ours["images_per_s"] / fastest["images_per_s"]
        target = {"peer": fastest["tool"], "target": TARGET, "ratio": ratio, "met": ratio >= TARGET}
    agree = {}
    for peer in args.peers:
        a = agreement(feats["ours"], feats[peer])
        if peer == "torch-fidelity":
            a["within_tol"] = a["max_abs"] is not None and a["max_abs"] <= MATCH_TOL
        agree[peer] = a
    result = {
        "benchmark": "fid",
        "spec": {**{k: v for k, v in vars(args).items() if k != "func"}, "images": str(images),
                 "n_images": ours["n"], "resolution": RESOLUTION, "feature": "pool3 (2048)",
                 "network": f"torch-fidelity inception-v3-compat, input {args.network_input}²",
                 "weights_note": weights_note},
        "machine": machine_info(args.device),
        "rows": rows,
        "comparisons": comparisons,
        "target": target,
        "agreement": agree,
        "memory_scaling": ({"rows": mem_rows,
                            "rss_growth_mib": mem_rows[-1]["peak_rss_mib"] - mem_rows[0]["peak_rss_mib"]}
                           if mem_rows else None),
    }
    out = Path(args.out)
    _write_json(out, result)
    print_table(result)
    print(f"results: {out}")
    return 0


# ----------------------------------------------------------------------------- CLI (until bench.perf registers it)

EPILOG = """examples:
  python -m bench.perf_fid --make 2000 --peers clean-fid,torch-fidelity
  python -m bench.perf_fid --images DIR --weights pt_inception-2015-12-05.pth --device cuda
  python -m bench.perf_fid --make 500 --memory-sizes 500,2000
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.perf_fid",
                                description="FID feature extraction images/s, ours vs clean-fid / torch-fidelity",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, epilog=EPILOG)
    add_fid_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker(argv[1])
    return cmd_fid(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
