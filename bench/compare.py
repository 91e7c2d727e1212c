"""Model A against model B: paired differences of FID and CLIP score between two runs.

    python -m bench.compare RUN_A[:CONFIG] RUN_B[:CONFIG] [--out DIR] [--unpaired]

Two runs made with the same prompts and the same per-image seeds (same prompt list, base seed
and images per prompt) are compared paired, like the configs of one run: every bootstrap
replicate draws the same prompts on both sides (bench/metrics/resample.py), from the stored
per-image features and cosines of each run (nothing is run through a network). Δ = A - B, with
its 95% interval and a two-sided bootstrap p-value. Runs whose prompts or seeds differ are refused
with one message; `--unpaired` then resamples each side independently, and says so in the output
(`paired` = false). FID needs both runs scored by the same feature network against the same
reference statistics; otherwise only CLIP score is compared, and the output says why.

Without a CONFIG, every config key the two runs share is compared; `RUN:CONFIG` names one.
Results: a table on the terminal and, with --out, DIR/comparisons.csv.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .cli import HelpFormatter

EPILOG = """examples:
  # one config of model A against the same config of model B (same prompts and seeds)
  python -m bench.compare runs/coco_a:w3-dyn0.995-aug0-ddim64 runs/coco_b:w3-dyn0.995-aug0-ddim64

  # every config the two runs share, written to a folder
  python -m bench.compare runs/drawbench_a runs/drawbench_b --out runs/a_vs_b

  # runs made with other prompts or seeds: independent resampling (wider intervals)
  python -m bench.compare runs/coco_a runs/external --unpaired
"""

FIELDS = ["run_a", "config_a", "run_b", "config_b", "n_prompts_a", "n_prompts_b", "delta_fid",
          "delta_fid_ci_low", "delta_fid_ci_high", "delta_fid_p", "delta_clip",
          "delta_clip_ci_low", "delta_clip_ci_high", "delta_clip_p", "paired",
          "bootstrap_samples", "bootstrap_seed"]


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("a", metavar="RUN_A[:CONFIG]", help="run directory (A), optionally :config_key")
    p.add_argument("b", metavar="RUN_B[:CONFIG]", help="run directory (B), optionally :config_key")
    p.add_argument("--out", default=None, metavar="DIR", help="write DIR/comparisons.csv")
    p.add_argument("--unpaired", action="store_true",
                   help="runs with other prompts or seeds: resample each side independently")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B", help="bootstrap replicates")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--device", default="cpu", help="where the FID linear algebra runs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


@dataclass
class Side:
    """One run and the configs of it being compared."""

    path: str
    run: object            # RunDir
    record: dict           # metrics/statistics.json
    configs: list[dict]    # grid records of the requested configs (or every config)
    named: bool            # a :CONFIG was given

    @property
    def prompts(self) -> list[dict]:
        return self.run.read_prompts()


def open_side(text: str) -> Side:
    """RUN or RUN:CONFIG, resolved against the run's recorded grid."""
    from .rescore import UserError as RescoreError, recorded_statistics
    from .runs import RunDir

    path, key = text, None
    if not Path(text, "run.json").is_file() and ":" in text:
        path, key = text.rsplit(":", 1)
    run = RunDir(path)
    if not run.run_json.is_file():
        raise UserError(f"{path}: not a run directory (no run.json)")
    try:
        record = recorded_statistics(run)
    except RescoreError as e:
        raise UserError(str(e)) from None
    configs = record["configs"]
    if key is not None:
        configs = [c for c in configs if c["config_key"] == key]
        if not configs:
            keys = ", ".join(c["config_key"] for c in record["configs"])
            raise UserError(f"{path}: no config {key} (configs: {keys})")
    return Side(path, run, record, configs, key is not None)


def pairs_of(a: Side, b: Side) -> list[tuple[dict, dict]]:
    """Which config of A goes with which of B."""
    if a.named or b.named:
        if len(a.configs) == 1 and len(b.configs) == 1:
            return [(a.configs[0], b.configs[0])]
        named = a.configs[0] if a.named else b.configs[0]
        other = b if a.named else a
        match = [c for c in other.configs if c["config_key"] == named["config_key"]]
        if not match:
            raise UserError(f"{other.path} has no config {named['config_key']}: name one as "
                            f"{other.path}:CONFIG")
        return [(named, match[0])] if a.named else [(match[0], named)]
    keys_b = {c["config_key"]: c for c in b.configs}
    shared = [(c, keys_b[c["config_key"]]) for c in a.configs if c["config_key"] in keys_b]
    if not shared:
        raise UserError(f"{a.path} and {b.path} share no config key: name them as RUN_A:CONFIG "
                        "RUN_B:CONFIG")
    return shared


def pairing_problems(a: Side, b: Side) -> list[str]:
    """Why the two runs cannot be compared paired ([] when they can)."""
    problems = []
    pa = {p["prompt_id"]: p["text"] for p in a.prompts}
    pb = {p["prompt_id"]: p["text"] for p in b.prompts}
    if list(pa) != list(pb) or pa != pb:
        differ = len(set(pa.items()) ^ set(pb.items()))
        problems.append(f"their prompts differ ({len(pa)} vs {len(pb)} prompts, {differ} "
                        "id/text entries not in both)")
        return problems
    seeds_a = {(r["prompt_id"], int(r["k"])): int(r["seed"]) for r in a.run.read_samples().values()}
    seeds_b = {(r["prompt_id"], int(r["k"])): int(r["seed"]) for r in b.run.read_samples().values()}
    if seeds_a != seeds_b:
        n = sum(1 for k in set(seeds_a) | set(seeds_b) if seeds_a.get(k) != seeds_b.get(k))
        problems.append(f"their per-image seeds differ ({n} images)")
    return problems


def fid_problem(a: Side, b: Side) -> str | None:
    """Why FID cannot be compared between the runs (None when it can)."""
    import numpy as np

    from .statistics import load_reference

    name_a, name_b = a.record.get("feature_name"), b.record.get("feature_name")
    if not name_a or not name_b:
        return "a run has no FID features (a DrawBench run scores CLIP only)"
    if name_a != name_b:
        return f"the runs' FID networks differ ({name_a} vs {name_b})"
    ra, rb = load_reference(a.run), load_reference(b.run)
    if ra.protocol != rb.protocol or not np.array_equal(ra.mu, rb.mu):
        return "the runs' FID reference statistics differ (another protocol or image set)"
    return None


def shared_extra(a: Side, b: Side) -> tuple[list, dict, dict]:
    """The other metrics (bench.metrics.suite) both runs computed against the same reference:
    (specs, A's references, B's references)."""
    import numpy as np

    from .metrics.suite import MetricPlan
    from .statistics import load_extra_references

    plans = [MetricPlan.from_record(s.record["plan"]) if "plan" in s.record else None for s in (a, b)]
    if None in plans:
        return [], {}, {}
    labels_b = {spec.label for spec in plans[1].extra}
    specs = [spec for spec in plans[0].extra if spec.label in labels_b]
    refs_a, refs_b = load_extra_references(a.run, specs), load_extra_references(b.run, specs)

    def same(x, y) -> bool:
        return x.protocol == y.protocol and np.array_equal(x.mu, y.mu)

    specs = [spec for spec in specs if same(refs_a[spec.network], refs_b[spec.network])]
    return specs, refs_a, refs_b


def compare(a: Side, b: Side, *, paired: bool, replicates: int, seed: int, device: str,
            progress: bool = True) -> tuple[list[dict], str | None]:
    """comparisons.csv rows (Δ = A - B) and the reason FID was left out, if it was."""
    from tqdm.auto import tqdm

    from .statistics import (Draws, StatsOptions, comparison_row, config_stats, load_reference,
                             reference_root)

    why_no_fid = fid_problem(a, b)
    feature = None if why_no_fid else a.record["feature_name"]
    reference = load_reference(a.run) if feature else None
    root = reference_root(reference)
    options = StatsOptions(bootstrap=replicates, seed=seed, fid_inf_points=0, device=device)
    pairs = pairs_of(a, b)
    from .metrics.suite import KINDS

    extra, refs_a, refs_b = shared_extra(a, b)
    columns = [spec.column(q) for spec in extra for q in KINDS[spec.kind].quantities
               if KINDS[spec.kind].has_interval(q)]
    caches = ({}, {})   # each side's reference terms, shared by its configs
    bar = tqdm(total=2 * len(pairs) * replicates if feature else 0, desc="bootstrap", unit="rep",
               disable=not progress or not feature)
    rows = []
    for ca, cb in pairs:
        stats = []
        for i, (side, config) in enumerate(((a, ca), (b, cb))):
            prompts = [p["prompt_id"] for p in side.prompts]
            order = {p: j for j, p in enumerate(prompts)}
            draws = Draws.make(len(prompts), replicates, seed if paired else seed + 1000003 * i)
            stats.append(config_stats(side.run, config, order, draws, root, reference, feature,
                                      options, bar, extra, (refs_a, refs_b)[i], caches[i]))
        row = comparison_row(stats[0], stats[1], fid=feature is not None, paired=paired,
                             options=options, extra_columns=columns)
        rows.append({"run_a": a.path, "config_a": ca["config_key"], "run_b": b.path,
                     "config_b": cb["config_key"], "n_prompts_a": stats[0].row["n_prompts"],
                     "n_prompts_b": stats[1].row["n_prompts"], **row})
    bar.close()
    return rows, why_no_fid


def _cell(row: dict, name: str) -> str:
    value = row.get(f"delta_{name}", "")
    if value == "":
        return "-"
    p = float(row[f"delta_{name}_p"]) if row[f"delta_{name}_p"] != "" else math.nan
    ci = (f" [{float(row[f'delta_{name}_ci_low']):.3g}, {float(row[f'delta_{name}_ci_high']):.3g}]"
          if row[f"delta_{name}_ci_low"] != "" else "")
    mark = "" if not math.isfinite(p) else ("" if p < 0.05 else " n.s.")
    return f"{float(value):+.3g}{ci} p={p:.3g}{mark}" if math.isfinite(p) else f"{float(value):+.3g}"


def print_table(rows: list[dict]) -> None:
    width = max(len(f"{r['config_a']} vs {r['config_b']}") for r in rows)
    print(f"{'A vs B':<{width}}  {'ΔFID (A - B) [95% CI]':<36}  ΔCLIP (A - B) [95% CI]")
    for r in rows:
        name = f"{r['config_a']} vs {r['config_b']}"
        print(f"{name:<{width}}  {_cell(r, 'fid'):<36}  {_cell(r, 'clip')}")


def main(argv=None) -> int:
    from .runs import atomic_write_text, csv_text

    args = build_parser().parse_args(argv)
    try:
        if args.bootstrap < 0:
            raise UserError("--bootstrap must be 0 or more")
        a, b = open_side(args.a), open_side(args.b)
        problems = pairing_problems(a, b)
        if problems and not args.unpaired:
            raise UserError(f"{a.path} and {b.path} cannot be compared paired: "
                            f"{'; '.join(problems)}; pass --unpaired to resample each side "
                            "independently")
        rows, why_no_fid = compare(a, b, paired=not problems, replicates=args.bootstrap,
                                   seed=args.bootstrap_seed, device=args.device,
                                   progress=not args.no_progress)
    except (UserError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if problems:
        print(f"unpaired comparison (independent resampling): {'; '.join(problems)}")
    if why_no_fid:
        print(f"FID not compared: {why_no_fid}")
    print_table(rows)
    if args.out:
        path = Path(args.out) / "comparisons.csv"
        extra = [k for k in (rows[0] if rows else {}) if k not in FIELDS]
        atomic_write_text(path, csv_text(rows, FIELDS[:-3] + extra + FIELDS[-3:]))
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
