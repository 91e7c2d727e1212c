"""Comparing runs of the same benchmark: side-by-side tables with differences.

A number is compared only when both runs measured it under the same protocol. The protocol of
a metric is what the benchmark recorded with it (summary.csv's fid_* / clip_* columns other
than the values and their intervals, run.json spec.metrics and the FID reference statistics).
When a defining field differs (resize mode, feature extractor or its weights hash, library,
reference images, CLIP model, ...), the section shows a warning and the difference column says
why no difference is given. Library versions that differ are shown as a note: the numbers are
compared, but the reader is told.
"""
from __future__ import annotations

import json
import math

from .rundata import RunData, is_protocol_column, number
from .sections import heading, slug
from .tables import Column, Table, fixed, short_hash, signed, with_ci

# protocol fields whose difference makes two numbers incomparable
FID_VERSION_FIELDS = ("torchmetrics", "torch_fidelity", "pillow")
FID_IGNORED = ("weights_file", "weights_official")  # the hash says it; a file name is no protocol
CLIP_VERSION_FIELDS = ("open_clip",)
CLIP_IGNORED = ("pretrained_file",)


def fid_protocol(run: RunData) -> dict:
    """FID protocol of a run: summary.csv's fid_* columns over run.json, plus the reference."""
    proto = dict(run.spec.get("metrics", {}).get("fid") or {})
    if run.summary:
        proto.update({k[4:]: v for k, v in run.summary[0].items()
                      if k.startswith("fid_") and is_protocol_column(k)})
    ref = dict(run.spec.get("metrics", {}).get("reference") or {})
    recorded = (run.run.get("reference") or {})
    for k in ("split", "selection", "files_sha256", "n", "dataset"):
        if k in (recorded.get("protocol") or {}):
            ref[k] = recorded["protocol"][k]
    if "reference_n" in proto:
        ref["n"] = proto.pop("reference_n")
    proto.update({f"reference {k}": v for k, v in ref.items()})
    return {k: _canon(v) for k, v in proto.items() if k not in FID_IGNORED}


def clip_protocol(run: RunData) -> dict:
    proto = dict(run.spec.get("metrics", {}).get("clip") or {})
    if run.summary:
        proto.update({k[5:]: v for k, v in run.summary[0].items()
                      if k.startswith("clip_") and is_protocol_column(k)})
    if "score_def" in proto:
        proto["score"] = proto.pop("score_def")
    return {k: _canon(v) for k, v in proto.items() if k not in CLIP_IGNORED}


def _canon(value) -> str:
    """One text per value, whether it came from JSON or a CSV cell (True/'True', 64/'64')."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    s = str(value)
    try:
        x = float(s)
        return repr(int(x)) if x.is_integer() and "." not in s and "e" not in s else repr(x)
    except ValueError:
        return s


def protocol_diff(a: dict, b: dict, versions: tuple[str, ...]) -> tuple[list, list]:
    """(defining differences, version differences) as [(field, a, b)]."""
    defining, version = [], []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "(not recorded)"), b.get(k, "(not recorded)")
        if va != vb:
            (version if k in versions else defining).append((k, va, vb))
    return defining, version


def _diff_text(items) -> str:
    return "; ".join(f"{k}: {short_hash(va)} vs {short_hash(vb)}" for k, va, vb in items)


def _protocol_table(name: str, title: str, a: RunData, b: RunData, pa: dict, pb: dict,
                    versions: tuple[str, ...]) -> Table:
    rows = []
    for k in sorted(set(pa) | set(pb)):
        va, vb = pa.get(k, "(not recorded)"), pb.get(k, "(not recorded)")
        status = "same" if va == vb else ("version differs" if k in versions else "DIFFERS")
        rows.append({"field": k, "a": va, "b": vb, "status": status})
    cols = [Column("field", "protocol field"), Column("a", f"A: {a.name}", short_hash),
            Column("b", f"B: {b.name}", short_hash), Column("status", "")]
    return Table(name, title, cols, rows,
                 row_class=lambda r: {"DIFFERS": "warn", "version differs": "note"}.get(
                     r["status"], ""))


def _delta(va, vb, withheld: str | None):
    if withheld:
        return withheld
    x, y = number(va), number(vb)
    return y - x if math.isfinite(x) and math.isfinite(y) else ""


def _side_by_side(a: RunData, b: RunData, fid_reason: str | None,
                  clip_reason: str | None) -> Table:
    rows_a = {r["config_key"]: r for r in a.summary}
    rows_b = {r["config_key"]: r for r in b.summary}
    rows = []
    for key in list(dict.fromkeys(list(rows_a) + list(rows_b))):
        ra, rb = rows_a.get(key, {}), rows_b.get(key, {})
        rows.append({"config_key": key, "n_a": ra.get("n_images", ""), "n_b": rb.get("n_images", ""),
                     "fid_a": ra.get("fid", ""), "fid_b": rb.get("fid", ""),
                     "fid_delta": _delta(ra.get("fid"), rb.get("fid"), fid_reason),
                     "clip_a": ra.get("clip_score", ""), "clip_b": rb.get("clip_score", ""),
                     "clip_delta": _delta(ra.get("clip_score"), rb.get("clip_score"),
                                          clip_reason)})
    cols = [Column("config_key", "config"), Column("n_a", "n A", numeric=True),
            Column("n_b", "n B", numeric=True)]
    if a.has_fid or b.has_fid:
        cols += [Column("fid_a", "FID A", fixed(2), True), Column("fid_b", "FID B", fixed(2), True),
                 Column("fid_delta", "ΔFID (B − A)", signed(2), True)]
    cols += [Column("clip_a", "CLIP A (100·cos)", fixed(2), True),
             Column("clip_b", "CLIP B (100·cos)", fixed(2), True),
             Column("clip_delta", "ΔCLIP (B − A)", signed(2), True)]
    return Table(f"compare_summary_{slug(a.name)}_vs_{slug(b.name)}",
                 f"summary: A = {a.name} vs B = {b.name}", cols, rows,
                 "Configs are matched by config key; a config in one run only has blanks.",
                 row_class=lambda r: "warn" if isinstance(r["fid_delta"], str) and r["fid_delta"]
                 or isinstance(r["clip_delta"], str) and r["clip_delta"] else "")


def _categories_side_by_side(a: RunData, b: RunData, clip_reason: str | None) -> Table:
    ca = {(r["config_key"], r["category"]): r for r in a.categories}
    cb = {(r["config_key"], r["category"]): r for r in b.categories}
    rows = []
    for key in list(dict.fromkeys(list(ca) + list(cb))):
        ra, rb = ca.get(key, {}), cb.get(key, {})
        rows.append({"config_key": key[0], "category": key[1],
                     "n_a": ra.get("n_images", ""), "n_b": rb.get("n_images", ""),
                     "clip_a": ra.get("clip_score", ""), "clip_b": rb.get("clip_score", ""),
                     "ci_a": with_ci(ra.get("clip_score"), ra.get("ci_low"), ra.get("ci_high"))
                     if ra else "", "ci_b": with_ci(rb.get("clip_score"), rb.get("ci_low"),
                                                    rb.get("ci_high")) if rb else "",
                     "clip_delta": _delta(ra.get("clip_score"), rb.get("clip_score"),
                                          clip_reason)})
    cols = [Column("config_key", "config"), Column("category", "category"),
            Column("n_a", "n images A", numeric=True), Column("n_b", "n images B", numeric=True),
            Column("ci_a", "CLIP A [95% CI]", numeric=True),
            Column("ci_b", "CLIP B [95% CI]", numeric=True),
            Column("clip_delta", "ΔCLIP (B − A)", signed(2), True)]
    return Table(f"compare_categories_{slug(a.name)}_vs_{slug(b.name)}",
                 f"per category: A = {a.name} vs B = {b.name}", cols, rows,
                 "Overlapping CIs mean the difference may be noise.",
                 extra_csv=["clip_a", "clip_b"])


def compare_pair(a: RunData, b: RunData) -> list[dict]:
    """Blocks comparing run B with run A (same benchmark)."""
    blocks = [heading(f"A = {a.name} ({a.model_id}) vs B = {b.name} ({b.model_id})",
                      f"compare-{slug(a.name)}-{slug(b.name)}")]
    warnings, notes = [], []
    fid_reason = clip_reason = None
    pa_f, pb_f = fid_protocol(a), fid_protocol(b)
    if a.has_fid or b.has_fid:
        defining, versions = protocol_diff(pa_f, pb_f, FID_VERSION_FIELDS)
        if defining:
            fid_reason = "not compared: FID protocol differs"
            warnings.append(f"FID protocols differ ({_diff_text(defining)}): the FID values are "
                            "not comparable and no difference is given.")
        if versions:
            notes.append(f"FID library versions differ ({_diff_text(versions)}): compared, but "
                         "versions can shift FID.")
    pa_c, pb_c = clip_protocol(a), clip_protocol(b)
    defining, versions = protocol_diff(pa_c, pb_c, CLIP_VERSION_FIELDS)
    if defining:
        clip_reason = "not compared: CLIP protocol differs"
        warnings.append(f"CLIP score protocols differ ({_diff_text(defining)}): the CLIP scores "
                        "are not comparable and no difference is given.")
    if versions:
        notes.append(f"open_clip versions differ ({_diff_text(versions)}).")
    pr_a, pr_b = a.spec.get("prompts", {}), b.spec.get("prompts", {})
    if pr_a.get("sha256") != pr_b.get("sha256"):
        notes.append(f"The prompt sets differ ({pr_a.get('n')} vs {pr_b.get('n')} prompts, "
                     f"sha256 {short_hash(pr_a.get('sha256'))} vs {short_hash(pr_b.get('sha256'))}).")
    stages_a, stages_b = (r.spec.get("model", {}).get("num_stages") for r in (a, b))
    if stages_a != stages_b:
        notes.append(f"The runs sample different numbers of cascade stages ({stages_a or 'all'} vs "
                     f"{stages_b or 'all'}): their images differ in size, which the metric "
                     "networks resize, so the differences include the resolution.")
    if warnings:
        blocks.append({"kind": "warnings", "items": warnings})
    if notes:
        blocks.append({"kind": "notes", "items": notes})
    if a.summary or b.summary:
        blocks.append({"kind": "table", "table": _side_by_side(a, b, fid_reason, clip_reason)})
    if a.categories or b.categories:
        blocks.append({"kind": "table", "table": _categories_side_by_side(a, b, clip_reason)})
    name = f"compare_protocol_{slug(a.name)}_vs_{slug(b.name)}"
    proto_a = {**{f"FID {k}": v for k, v in pa_f.items()}, **{f"CLIP {k}": v for k, v in pa_c.items()}}
    proto_b = {**{f"FID {k}": v for k, v in pb_f.items()}, **{f"CLIP {k}": v for k, v in pb_c.items()}}
    versions = tuple(f"FID {k}" for k in FID_VERSION_FIELDS) + tuple(
        f"CLIP {k}" for k in CLIP_VERSION_FIELDS)
    blocks.append({"kind": "table", "table": _protocol_table(
        name, "metric protocols side by side", a, b, proto_a, proto_b, versions)})
    return blocks


def compare_section(runs: list[RunData]) -> dict | None:
    """Each run compared with the first run of the same benchmark."""
    by_benchmark: dict[str, list[RunData]] = {}
    for r in runs:
        by_benchmark.setdefault(r.benchmark, []).append(r)
    blocks = []
    for group in by_benchmark.values():
        for other in group[1:]:
            blocks += compare_pair(group[0], other)
    if not blocks:
        return None
    return {"id": "compare", "title": "Comparing runs", "blocks": blocks}

