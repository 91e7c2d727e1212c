"""Per-image cost of each feature network: `python -m bench.perf networks ...`.

Each network is the real architecture with random weights written to a temporary file or
folder (the real weights cannot be downloaded here; the cost is the same network's) and loaded
through the registry as a user's would be (`bench.metrics.networks.load`):

- inception: torch-fidelity's InceptionV3 (the stand-in of `python -m bench.perf fid`), 299²;
- clip: open_clip ViT-L-14-336 (CMMD's network), built without weights and saved as a state dict;
- dinov2: transformers Dinov2Model with DINOv2 ViT-L/14's configuration (1024 wide, 24 layers,
  16 heads, patch 14), saved with save_pretrained, run at 224².

Images are seeded 256² RGB noise; the timed pass is the network call on a batch after one warm-up
batch, reported as seconds per image (the best of --repeats passes).

A subcommand is one `add_networks_args(parser)` and one `cmd_networks(args) -> int`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

NETWORKS = ("inception", "clip", "dinov2")
EPILOG = """examples:
  python -m bench.perf networks --out runs/perf/networks.json
  python -m bench.perf networks --networks dinov2 --device cuda --batch-size 64
"""


def add_networks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--networks", default=",".join(NETWORKS), help="comma list of " + ", ".join(NETWORKS))
    p.add_argument("--batch-size", type=int, default=8, help="images per network call")
    p.add_argument("--repeats", type=int, default=2, help="timed batches, best kept")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file of the results")


def _stand_in(name: str, folder: Path, seed: int) -> str:
    """A random real-architecture weights source for `name`, written under `folder`."""
    torch.manual_seed(seed)
    if name == "inception":
        from .perf_fid import default_weights

        return str(default_weights(seed))
    if name == "clip":
        import open_clip

        model = open_clip.create_model("ViT-L-14-336", pretrained=None)
        path = folder / "vit-l-14-336-random.pt"
        torch.save(model.state_dict(), path)
        return f"ViT-L-14-336@{path}"
    if name == "dinov2":
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              mlp_ratio=4, patch_size=14, image_size=518)
        Dinov2Model(config).save_pretrained(folder / "dinov2-large-random")
        return str(folder / "dinov2-large-random")
    raise ValueError(f"unknown network {name!r} (known: {', '.join(NETWORKS)})")


def time_network(name: str, source: str, *, device: str, batch_size: int, repeats: int,
                 seed: int) -> dict:
    from . import perf
    from .metrics import networks

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (batch_size, 3, 256, 256), dtype=np.uint8))
    t0 = time.perf_counter()
    net = networks.load(name, source, device=device)
    load_s = time.perf_counter() - t0
    dev = torch.device(device)
    net(images)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        perf._sync(dev)
        t0 = time.perf_counter()
        feats = net(images)
        perf._sync(dev)
        best = min(best, time.perf_counter() - t0)
    return {"network": name, "dims": int(net.dims), "input": int(net.resolution),
            "protocol_input": net.protocol.get("network_input", net.protocol.get("image_size")),
            "load_s": round(load_s, 3), "batch_size": batch_size,
            "s_per_image": best / batch_size, "images_per_s": batch_size / best,
            "features_vary": bool(float(feats.float().std(dim=0).max()) > 0)}


def cmd_networks(args) -> int:
    from . import perf

    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown or args.batch_size < 1 or args.repeats < 1:
        print(f"error: unknown network {unknown[0]!r}" if unknown else
              "error: --batch-size and --repeats must be at least 1", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imagen-bench-networks-") as tmp:
        for name in names:
            print(f"{name}: writing random weights of the real architecture ...", flush=True)
            source = _stand_in(name, Path(tmp), args.seed)
            rows.append(time_network(name, source, device=args.device, batch_size=args.batch_size,
                                     repeats=args.repeats, seed=args.seed))
    result = {"benchmark": "networks", "machine": perf.machine_info(torch.device(args.device)),
              "rows": rows,
              "weights_note": "random weights of the real architectures (the real files cannot be "
                              "downloaded here); the cost is the same network's"}
    print(f"\nper-image feature time on {result['machine'].get('gpu') or result['machine']['cpu']} "
          f"({result['machine']['threads']} threads)")
    print(f"{'network':<10} {'dims':>5} {'input':>6} {'s/image':>9} {'images/s':>9}")
    for r in rows:
        print(f"{r['network']:<10} {r['dims']:>5} {r['protocol_input'] or r['input']:>6} "
              f"{r['s_per_image']:>9.4f} {r['images_per_s']:>9.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"results: {args.out}")
    return 0
