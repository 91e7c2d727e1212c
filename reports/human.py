"""The human-evaluation section, from the analysis files of rater.analyze.

`--ratings` is either a votes database (rater.analyze.run_analysis writes the analysis files
into a folder next to the report) or a folder of analysis files written earlier:

    preferences.csv   question_id, category ('all' = overall), system_a, system_b, n_votes,
                      n_raters, p_a, p_a_lo, p_a_hi, p_indifferent(_lo, _hi), p_b(_lo, _hi)
    bradley_terry.csv question_id, system, strength, ci_lo, ci_hi, rank, n_comparisons
    agreement.csv     question_id, alpha, level, n_raters, n_items
    pareto_human.csv  thresholding, guidance, system, reference_system, fidelity_pref,
                      fidelity_lo, fidelity_hi, alignment_pref, alignment_lo, alignment_hi, n
    raters.csv        rater_id, n_votes, n_controls, control_accuracy, excluded
    power.csv         question_id, power, mdp, statement, ... (rater.plan.study_power: the power
                      of the study that was run)
    summary.json      n_votes, n_raters, n_excluded_raters, control_threshold, n_boot, seed,
                      ci_method, app_versions
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import ReportInputError
from .figures import human_pareto_figure, preference_figure
from .rundata import read_table
from .sections import heading, slug
from .tables import Column, Table, fixed, kv_table, percent, with_ci

P_FIELDS = ("p_a", "p_a_lo", "p_a_hi", "p_indifferent", "p_indifferent_lo", "p_indifferent_hi",
            "p_b", "p_b_lo", "p_b_hi")
FILES = {
    "preferences": (("question_id", "category", "system_a", "system_b", "n_votes", "n_raters")
                    + P_FIELDS, ("n_votes", "n_raters") + P_FIELDS),
    "bradley_terry": (("question_id", "system", "strength", "ci_lo", "ci_hi", "rank",
                       "n_comparisons"), ("strength", "ci_lo", "ci_hi", "rank", "n_comparisons")),
    "agreement": (("question_id", "alpha", "level", "n_raters", "n_items"),
                  ("alpha", "n_raters", "n_items")),
    "pareto_human": (("thresholding", "guidance", "system", "reference_system", "fidelity_pref",
                      "fidelity_lo", "fidelity_hi", "alignment_pref", "alignment_lo",
                      "alignment_hi", "n"),
                     ("fidelity_pref", "fidelity_lo", "fidelity_hi", "alignment_pref",
                      "alignment_lo", "alignment_hi", "n")),
    "raters": (("rater_id", "n_votes", "n_controls", "control_accuracy", "excluded"),
               ("n_votes", "n_controls", "control_accuracy")),
    "power": (("question_id", "power", "mdp", "statement"), ("power", "mdp")),
}
REQUIRED = ("preferences",)


@dataclass
class HumanData:
    folder: Path
    summary: dict
    tables: dict[str, list[dict]] = field(default_factory=dict)


def read_analysis(folder: Path) -> HumanData:
    """Read an analysis folder; ReportInputError names a missing or malformed file."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise ReportInputError(f"{summary_path} is missing: {folder} is not an analysis folder of "
                               "rater.analyze (pass the votes database or that folder to --ratings)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{summary_path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    data = HumanData(folder, summary if isinstance(summary, dict) else {})
    for name, (required, numbers) in FILES.items():
        path = folder / f"{name}.csv"
        if path.is_file():
            data.tables[name] = read_table(path, required, numbers)
        elif name in REQUIRED:
            raise ReportInputError(f"{path} is missing; rerun the analysis (rater.analyze)")
    return data


def load_ratings(ratings: str, out_dir: Path, *, n_boot: int, seed: int) -> HumanData:
    """Analysis files of `ratings` (a folder of them, or a votes database analysed into
    `out_dir` by rater.analyze.run_analysis)."""
    path = Path(ratings)
    if "://" not in ratings and path.is_dir():
        return read_analysis(path)
    if "://" not in ratings and not path.is_file():
        raise ReportInputError(f"{ratings}: no such votes database or analysis folder")
    try:
        from rater.analyze import UserError, run_analysis
    except ImportError as e:
        raise ReportInputError(f"{ratings}: analysing a votes database needs rater.analyze "
                               f"({e}); pass an analysis folder instead") from None
    url = ratings if "://" in ratings else f"sqlite:///{path.resolve()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        run_analysis(url, out_dir, n_boot=n_boot, seed=seed)
    except UserError as e:
        raise ReportInputError(f"{ratings}: {e}") from None
    return read_analysis(out_dir)


def _yes(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def human_section(data: HumanData) -> dict:
    s, t = data.summary, data.tables
    blocks = []
    raters = t.get("raters", [])
    n_excluded = s.get("n_excluded_raters", sum(_yes(r["excluded"]) for r in raters))
    items = [("votes", s.get("n_votes")), ("raters", s.get("n_raters")),
             ("raters excluded", f"{n_excluded} (control-question accuracy below "
                                 f"{s.get('control_threshold')})"),
             ("confidence intervals", f"{s.get('ci_method')}, {s.get('n_boot')} bootstrap "
                                      f"resamples, seed {s.get('seed')}"),
             ("rating app", s.get("app_versions")),
             ("analysis folder", data.folder.name)]
    blocks.append({"kind": "table", "table": kv_table("human_summary", "votes and raters", items)})
    prefs = t.get("preferences", [])
    questions = list(dict.fromkeys(r["question_id"] for r in prefs))
    for q in questions:
        rows = [r for r in prefs if r["question_id"] == q]
        rows.sort(key=lambda r: (r["category"] != "all",))  # overall first, then file order
        blocks.append(heading(f"question: {q}", f"human-{slug(q)}"))
        power = [r["statement"] for r in t.get("power", []) if r["question_id"] == q]
        if power:
            blocks.append({"kind": "notes", "items": [f"Power of this study: {p}." for p in power]})
        blocks.append({"kind": "figure", "figure": preference_figure(
            rows, fig_id=f"fig-preferences-{slug(q)}", title=f"{q}: A / indifferent / B")})
        blocks.append({"kind": "table", "table": _preferences_table(q, rows)})
        bt = [r for r in t.get("bradley_terry", []) if r["question_id"] == q]
        if bt:
            blocks.append({"kind": "table", "table": _bt_table(q, bt)})
    if t.get("pareto_human"):
        blocks.append(heading("human Pareto curves", "human-pareto"))
        blocks.append({"kind": "figure", "figure": human_pareto_figure(
            t["pareto_human"], fig_id="fig-human-pareto")})
        blocks.append({"kind": "table", "table": _pareto_table(t["pareto_human"])})
    if t.get("agreement"):
        blocks.append({"kind": "table", "table": Table(
            "human_agreement", "rater agreement (Krippendorff's α)",
            [Column("question_id", "question"), Column("alpha", "α", fixed(3), True),
             Column("level", "level of measurement"), Column("n_raters", "n raters", numeric=True),
             Column("n_items", "n items", numeric=True)], t["agreement"],
            "α = 1: perfect agreement; α = 0: agreement expected by chance.")})
    if raters:
        blocks.append({"kind": "table", "table": Table(
            "human_raters", "raters",
            [Column("rater_id", "rater"), Column("n_votes", "n votes", numeric=True),
             Column("n_controls", "n control questions", numeric=True),
             Column("control_accuracy", "control accuracy", percent, True),
             Column("excluded", "excluded")], raters,
            row_class=lambda r: "excluded" if _yes(r["excluded"]) else "")})
    return {"id": "human", "title": "Human evaluation", "blocks": blocks}


def _preferences_table(q: str, rows: list[dict]) -> Table:
    def share(p):
        return lambda r: percent(r[p], r[f"{p}_lo"], r[f"{p}_hi"])

    cols = [Column("category", "category"), Column("system_a", "system A"),
            Column("system_b", "system B"), Column("n_votes", "n votes", numeric=True),
            Column("n_raters", "n raters", numeric=True),
            Column("p_a", "prefer A [95% CI]", numeric=True, cell=share("p_a")),
            Column("p_indifferent", "indifferent [95% CI]", numeric=True,
                   cell=share("p_indifferent")),
            Column("p_b", "prefer B [95% CI]", numeric=True, cell=share("p_b"))]
    extra = [f for f in P_FIELDS if f not in ("p_a", "p_indifferent", "p_b")]
    return Table(f"human_preferences_{slug(q)}", f"{q}: preference rates", cols, rows,
                 extra_csv=extra, row_class=lambda r: "overall" if r["category"] == "all" else "")


def _bt_table(q: str, rows: list[dict]) -> Table:
    cols = [Column("rank", "rank", numeric=True), Column("system", "system"),
            Column("strength", "strength [95% CI]", numeric=True,
                   cell=lambda r: with_ci(r["strength"], r["ci_lo"], r["ci_hi"], 3)),
            Column("n_comparisons", "n comparisons", numeric=True)]
    rows = sorted(rows, key=lambda r: float(r["rank"]))
    return Table(f"human_bradley_terry_{slug(q)}", f"{q}: Bradley-Terry strengths", cols, rows,
                 extra_csv=["question_id", "ci_lo", "ci_hi"])


def _pareto_table(rows: list[dict]) -> Table:
    def pref(p):
        return lambda r: percent(r[f"{p}_pref"], r[f"{p}_lo"], r[f"{p}_hi"])

    cols = [Column("system", "system"), Column("thresholding", "thresholding"),
            Column("guidance", "guidance w"), Column("reference_system", "against"),
            Column("fidelity_pref", "fidelity preference [95% CI]", numeric=True,
                   cell=pref("fidelity")),
            Column("alignment_pref", "alignment preference [95% CI]", numeric=True,
                   cell=pref("alignment")),
            Column("n", "n votes", numeric=True)]
    return Table("human_pareto", "human preference over the reference, per config", cols, rows,
                 extra_csv=["fidelity_lo", "fidelity_hi", "alignment_lo", "alignment_hi"])
