"""The headline: results first, before any section.

Per run, the best config by each metric with its 95% interval (summary.csv of a COCO run; the
overall CLIP score of a DrawBench run; the calibration world's oracle accuracy, the truth the
metrics are checked against). Where two or more runs of one benchmark are given, a leaderboard:
one row per run, one column per metric (the run's best config), each run against the first
with a two-sided z-test on the two intervals (independent runs, normal approximation:
se = CI width / (2 · 1.96)); it is withheld where the metric's protocol differs.
"""
from __future__ import annotations

import math

from .calibration import FILES, is_calibration_run, load_checks
from .compare import CLIP_VERSION_FIELDS, FID_VERSION_FIELDS, clip_protocol, fid_protocol, \
    protocol_diff
from .rundata import MetricColumn, RunData, metric_columns, number
from .sections import P_SIGNIFICANT, slug
from .tables import Column, Table, compact_key, percent, signed, with_ci

Z95 = 1.959963984540054
LEADERBOARD_METRICS = 4   # metric columns per leaderboard table beside the run: fits 1280 px


def _digits(values: list[float]) -> int:
    finite = [abs(v) for v in values if math.isfinite(v)]
    return 3 if finite and max(finite) < 10 else 2


def _ranked(rows: list[dict], metric: MetricColumn) -> list[dict]:
    finite = [r for r in rows if math.isfinite(number(r.get(metric.key)))]
    return sorted(finite, key=lambda r: number(r[metric.key]) * (1 if metric.lower else -1))


def _entry(run: RunData, metric: MetricColumn, rows: list[dict], digits: int) -> dict | None:
    """The best row of `rows` by `metric` as a headline row (raw values and display text)."""
    ranked = _ranked(rows, metric)
    if not ranked:
        return None
    best = ranked[0]
    lo, hi = best.get(f"{metric.key}_ci_low", ""), best.get(f"{metric.key}_ci_high", "")
    entry = {"run": run.name, "metric": metric.key, "metric_label": metric.label,
             "config_key": best["config_key"], "value": best[metric.key], "ci_low": lo,
             "ci_high": hi, "shown": with_ci(best[metric.key], lo, hi, digits),
             "next_key": "", "next_value": "", "next_shown": "", "n_configs": len(ranked)}
    if len(ranked) > 1:
        nxt = ranked[1]
        shown = with_ci(nxt[metric.key], nxt.get(f"{metric.key}_ci_low"),
                        nxt.get(f"{metric.key}_ci_high"), digits)
        entry.update(next_key=nxt["config_key"], next_value=nxt[metric.key],
                     next_shown=f"{compact_key(nxt['config_key'])}: {shown}")
    return entry


def _oracle_metric(run: RunData) -> tuple[MetricColumn, list[dict]] | None:
    """The calibration world's oracle 'all right' accuracy per config, as summary-like rows."""
    if not (run.root / "metrics" / FILES["oracle"][0]).is_file():
        return None
    rows = [{"config_key": r["config_key"], "oracle": r["accuracy"], "oracle_ci_low": r["ci_lo"],
             "oracle_ci_high": r["ci_hi"]}
            for r in load_checks(run).get("oracle", []) if r["skill"] == "all_right"
            and number(r["n"]) > 0]
    return (MetricColumn("oracle", "oracle accuracy, all right (the truth)", False, True), rows) \
        if rows else None


def best_entries(run: RunData) -> list[dict]:
    """Headline rows of one run: its best config by each metric."""
    out = []
    for m in metric_columns(run.summary):
        e = _entry(run, m, run.summary, _digits([number(r.get(m.key)) for r in run.summary]))
        if e:
            out.append(e)
    overall = [r for r in run.categories if r["category"] == "overall"]
    if overall and not any(e["metric"] == "clip_score" for e in out):
        rows = [{**r, "clip_score_ci_low": r["ci_low"], "clip_score_ci_high": r["ci_high"]}
                for r in overall]
        e = _entry(run, MetricColumn("clip_score", "CLIP score, all categories", False, True),
                   rows, 2)
        if e:
            out.append(e)
    oracle = _oracle_metric(run) if is_calibration_run(run) else None
    if oracle:
        e = _entry(run, oracle[0], oracle[1], 3)
        if e:
            for k in ("shown", "next_shown"):
                e[k] = e[k] and _as_percent(e, k)
            out.insert(0, e)
    return out


def _as_percent(e: dict, key: str) -> str:
    if key == "shown":
        return percent(e["value"], e["ci_low"], e["ci_high"])
    return f"{compact_key(e['next_key'])}: {percent(e['next_value'])}"


def best_table(runs: list[RunData]) -> Table | None:
    rows = [e for run in runs for e in best_entries(run)]
    if not rows:
        return None
    cols = ([Column("run", "run")] if len(runs) > 1 else []) + [
        Column("metric_label", "metric"), Column("config_key", "best config", key_col=True),
        Column("value", "value [95% CI]", numeric=True, cell=lambda r: r["shown"]),
        Column("next_key", "runner-up [95% CI]", cell=lambda r: r["next_shown"] or "–")]
    note = ("The best sampling config of each run by each metric (↓ lower / ↑ higher is better) "
            "with its 95% CI; the runner-up shows whether the lead is within the noise. "
            "Config: guidance weight w · thresholding · steps; full keys in the CSV.")
    return Table("headline_best", "Best config per metric", cols, rows, note,
                 extra_csv=["metric", "ci_low", "ci_high", "next_value", "n_configs"])


# ---------------------------------------------------------------------------------------------
# leaderboard


def _se(entry: dict) -> float:
    lo, hi = number(entry.get("ci_low")), number(entry.get("ci_high"))
    return (hi - lo) / (2 * Z95) if math.isfinite(lo) and math.isfinite(hi) else math.nan


def z_test(a: dict, b: dict) -> tuple[float, float]:
    """(b - a, two-sided p) of two independent estimates with 95% intervals."""
    delta = number(b["value"]) - number(a["value"])
    se = math.hypot(_se(a), _se(b))
    if not math.isfinite(se) or se <= 0:
        return delta, math.nan
    return delta, math.erfc(abs(delta) / se / math.sqrt(2))


def _withheld(first: RunData, run: RunData, metric: str) -> bool:
    """Whether the metric's protocol differs between the runs (then no test is made)."""
    if metric == "clip_score":
        return bool(protocol_diff(clip_protocol(first), clip_protocol(run), CLIP_VERSION_FIELDS)[0])
    if metric in ("fid", "fid_inf", "kid"):
        return bool(protocol_diff(fid_protocol(first), fid_protocol(run), FID_VERSION_FIELDS)[0])
    extra_a = (first.spec.get("metrics", {}) or {}).get("extra") or {}
    extra_b = (run.spec.get("metrics", {}) or {}).get("extra") or {}
    return extra_a != extra_b and any(
        {k: v for k, v in (extra_a.get(label) or {}).items() if k not in FID_VERSION_FIELDS} !=
        {k: v for k, v in (extra_b.get(label) or {}).items() if k not in FID_VERSION_FIELDS}
        for label in set(extra_a) | set(extra_b))


def leaderboard_tables(group: list[RunData]) -> list[Table]:
    """One row per run of one benchmark; each metric's best config, each run against the first."""
    first = group[0]
    entries = {r.name: {e["metric"]: e for e in best_entries(r)} for r in group}
    metrics = list(dict.fromkeys(m for r in group for m in entries[r.name]))
    labels = {m: next(entries[r.name][m]["metric_label"] for r in group if m in entries[r.name])
              for m in metrics}
    rows = []
    for run in group:
        row = {"run": run.name, "model_id": run.model_id}
        for m in metrics:
            e = entries[run.name].get(m)
            base = entries[first.name].get(m)
            row.update({f"{m}": e["value"] if e else "", f"{m}_ci_low": e["ci_low"] if e else "",
                        f"{m}_ci_high": e["ci_high"] if e else "",
                        f"{m}_config_key": e["config_key"] if e else "",
                        f"{m}_delta": "", f"{m}_p": ""})
            if e and base and run is not first:
                if _withheld(first, run, m):
                    row[f"{m}_delta"] = "not compared: protocol differs"
                else:
                    row[f"{m}_delta"], row[f"{m}_p"] = z_test(base, e)
        rows.append(row)
    lower = {m: next(e["metric_label"].endswith("↓") for r in group
                     for k, e in entries[r.name].items() if k == m) for m in metrics}

    def cell(m: str):
        def show(r: dict) -> str:
            e = entries[r["run"]].get(m)
            if e is None:
                return "–"
            text = f"{e['shown']}\n{compact_key(e['config_key'])}"
            delta, p = r[f"{m}_delta"], number(r[f"{m}_p"])
            if r["run"] == first.name:
                return text + "\nreference"
            if isinstance(delta, str):
                return text + ("\n" + delta if delta else "")
            better = (delta < 0) == lower[m]
            verdict = ("n.s." if not math.isfinite(p) or p >= P_SIGNIFICANT
                       else "better" if better else "worse")
            return text + f"\nΔ {signed(3 if abs(delta) < 1 else 2)(delta)}, p={p:.2g} {verdict}"
        return show

    tables = []
    for i in range(0, len(metrics), LEADERBOARD_METRICS):
        part = metrics[i:i + LEADERBOARD_METRICS]
        n = i // LEADERBOARD_METRICS + 1 if len(metrics) > LEADERBOARD_METRICS else None
        cols = [Column("run", "run (model)", key_col=True,
                       cell=lambda r: f"{r['run']}\n{r['model_id']}")]
        cols += [Column(m, f"{labels[m]} [95% CI]", numeric=True, cell=cell(m)) for m in part]
        tables.append(Table(
            f"leaderboard_{slug(first.benchmark)}" + (f"_{n}" if n else ""),
            f"Leaderboard, {first.benchmark}: each run's best config per metric"
            + (f" ({n})" if n else ""), cols, rows,
            f"Each cell: the run's best config by the metric with its 95% CI. Runs against the "
            f"first ({first.name}): Δ = run − first, two-sided z-test on the two intervals "
            "(independent runs, normal approximation); n.s.: p ≥ 0.05. No test where the "
            "metric's protocol differs.",
            extra_csv=["model_id"] + [f"{m}_{k}" for m in part for k in (
                "ci_low", "ci_high", "config_key", "delta", "p")]))
    return tables


def headline_section(runs: list[RunData]) -> dict | None:
    """The headline block: leaderboards of several runs of one benchmark, the best configs of
    the other runs; None when no run has results yet."""
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        if r.summary or r.categories:
            groups.setdefault(r.benchmark, []).append(r)
    blocks, single = [], []
    for group in groups.values():
        if len(group) > 1:
            blocks += [{"kind": "table", "table": t} for t in leaderboard_tables(group)]
        else:
            single += group
    best = best_table(single)
    if best is not None:
        blocks.insert(0, {"kind": "table", "table": best})
    if not blocks:
        return None
    return {"id": "headline", "title": "Headline results", "blocks": blocks}
