"""`python -m imagen_ref info`: inspect the named U-Net configs."""
from __future__ import annotations

import argparse
import dataclasses
import json

EPILOG = """examples:
  python -m imagen_ref info --config imagen-base-64 --json
  python -m imagen_ref info            # every named config, one line each
"""


def info(args) -> int:
    from .configs import CONFIGS, count_params, get_config

    names = [args.config] if args.config else sorted(CONFIGS)
    if args.config and args.config not in CONFIGS:
        print(f"error: unknown config {args.config!r}; choose one of {sorted(CONFIGS)}")
        return 2
    rows = []
    for name in names:
        cfg = get_config(name)
        rows.append({"config": name, "params": count_params(cfg), "kind": cfg.kind,
                     "image_size": cfg.image_size, "lowres_size": cfg.lowres_size,
                     "text_dim": cfg.text_dim, "fields": dataclasses.asdict(cfg)})
    if args.json:
        print(json.dumps(rows[0] if args.config else rows, indent=2))
    else:
        for r in rows:
            lr = f"{r['lowres_size']}->" if r["lowres_size"] else ""
            print(f"{r['config']:<16} {r['kind']:<15} {lr}{r['image_size']:<6} {r['params'] / 1e6:10.1f}M params")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m imagen_ref", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("info", help="parameter counts (meta device) of the named configs",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pi.add_argument("--config", default=None, help="a named config (default: all)")
    pi.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv)
    return info(args)


if __name__ == "__main__":
    raise SystemExit(main())
