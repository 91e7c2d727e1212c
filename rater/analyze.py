"""Analysis of the rating app's votes: preference rates, Bradley-Terry, agreement, human Pareto.

    python -m rater analyze --db ratings.db --out results/human

Reads the newest vote per (rater, task, question) from the store, drops raters under the
control threshold (counted in raters.csv and summary.json), and writes to --out:

    preferences.csv    A / indifferent / B rates with 95% CIs per question, category and pair
    bradley_terry.csv  strengths (natural log, sum-zero) with seeded bootstrap 95% CIs, ranks
    agreement.csv      Krippendorff's alpha per question (ordinal and nominal)
    pareto_human.csv   alignment vs fidelity preference over one reference config
    raters.csv         votes, controls and control accuracy per rater; who was excluded
    power.csv          the power of the study that was run, per question and pair: its own
                       votes (who rated which prompt) simulated at --power-preference, and the
                       smallest preference it detects with 80% power (rater.plan.study_power)
    summary.json       counts, settings and the CI methods
    preferences.png, bradley_terry.png, pareto_human.png

The statistics and their references are in rater/stats.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cli import HelpFormatter

from . import stats

FILES = {"preferences": "preferences.csv", "bradley_terry": "bradley_terry.csv",
         "agreement": "agreement.csv", "pareto_human": "pareto_human.csv",
         "raters": "raters.csv", "power": "power.csv", "summary": "summary.json",
         "preferences_png": "preferences.png", "bradley_terry_png": "bradley_terry.png",
         "pareto_human_png": "pareto_human.png"}

EPILOG = """examples:
  # everything, with the paper's 80% control threshold and 1000 bootstrap replicates
  python -m rater analyze --db ratings.db --out results/human

  # a team database, strictier controls, Pareto curves relative to one config
  python -m rater analyze --db postgresql://rater@db/ratings --out results/human \\
      --control-threshold 0.9 --reference tiny:w5-dyn0.995-aug0-ddim64

  # try it on simulated raters
  python -m rater.simulate --db /tmp/sim.db --demo
  python -m rater analyze --db /tmp/sim.db --out /tmp/sim_results --bootstrap 200
"""


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2 (STYLE §12)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rater analyze", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--db", required=True, metavar="FILE|URL",
                   help="the votes: a SQLite file or a SQLAlchemy URL")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                   help="bootstrap replicates of the Bradley-Terry CIs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--control-threshold", type=float, default=0.8, metavar="F",
                   help="raters with a smaller share of correct control answers are excluded")
    p.add_argument("--power-preference", type=float, default=0.55, metavar="P",
                   help="power.csv: the preference (P(A) + P(indifferent)/2) whose power the "
                        "study had; use the one the study was planned for (python -m rater plan)")
    p.add_argument("--power-sims", type=int, default=200, metavar="N",
                   help="simulated studies per power estimate (0: no power.csv rows)")
    p.add_argument("--rater-sd", type=float, default=None, metavar="SD",
                   help="raters' random-effect SD in the power simulation (default: rater plan's)")
    p.add_argument("--prompt-sd", type=float, default=None, metavar="SD",
                   help="prompts' random-effect SD in the power simulation (default: rater plan's)")
    p.add_argument("--reference", default=None, metavar="SYSTEM",
                   help="reference config of the Pareto curves (MODEL:CONFIG or CONFIG) and "
                        "system B of its pairs (default: the config compared with most others)")
    return p


def load_votes(db_url: str) -> pd.DataFrame:
    """The newest votes of a store; UserError when the file is missing or holds no vote."""
    from . import shown_db
    from .store import SchemaVersionError, VoteStore

    if "://" not in str(db_url) and not Path(db_url).is_file():
        raise UserError(f"--db {db_url}: no such file; pass the ratings database the app "
                        "wrote (python -m rater serve ... --db FILE)")
    try:
        store = VoteStore(str(db_url))
    except SchemaVersionError as e:
        raise UserError(f"--db {shown_db(str(db_url))}: {e}") from None
    try:
        votes = store.votes(latest_only=True)
    finally:
        store.close()
    if votes.empty:
        raise UserError(f"--db {db_url}: the database holds no votes yet")
    return votes


def run_analysis(db_url: str, out_dir, *, n_boot: int = 1000, seed: int = 0,
                 control_threshold: float = 0.8, reference: str | None = None,
                 power_preference: float = 0.55, power_sims: int = 200,
                 rater_sd: float | None = None, prompt_sd: float | None = None
                 ) -> dict[str, Path]:
    """Analyse a vote store and write every result file (FILES) under `out_dir`.

    Returns:
        {name: path} of the files written (keys of FILES).
    Raises:
        UserError: a missing or empty store, bad settings, or no vote left after exclusion.
    """
    from . import plan

    if n_boot < 0 or not 0 <= control_threshold <= 1:
        raise UserError("--bootstrap must be >= 0 and --control-threshold in [0, 1]")
    rater_sd = plan.DEFAULT_RATER_SD if rater_sd is None else rater_sd
    prompt_sd = plan.DEFAULT_PROMPT_SD if prompt_sd is None else prompt_sd
    if power_sims and power_sims < 20 or power_sims < 0:
        raise UserError("--power-sims must be 0 or >= 20")
    if not 0 < power_preference < 1 or power_preference == 0.5:
        raise UserError(f"--power-preference {power_preference} must be in (0, 1), not 0.5")
    if not (0 <= rater_sd <= 5 and 0 <= prompt_sd <= 5):
        raise UserError("--rater-sd and --prompt-sd must be in [0, 5]")
    votes = load_votes(db_url)
    raters = stats.rater_table(votes, control_threshold)
    excluded = set(raters.loc[raters["excluded"], "rater_id"])
    kept = votes[~votes["rater_id"].isin(excluded)]
    oriented = stats.orient(kept, reference)
    if oriented.empty:
        raise UserError(f"--db {db_url}: no votes left to analyse ({len(votes)} votes, "
                        f"{int((~votes['is_control']).sum())} of them not controls, "
                        f"{len(excluded)} of {len(raters)} raters excluded)")
    tables = {"preferences": stats.preference_rates(oriented),
              "bradley_terry": stats.bradley_terry(oriented, n_boot=n_boot, seed=seed),
              "agreement": stats.agreement(oriented),
              "pareto_human": stats.pareto_human(oriented, reference),
              "raters": raters}
    power = plan.study_power(oriented, power_preference, rater_sd, prompt_sd,
                             n_sims=power_sims, seed=seed)
    power["statement"] = [plan.power_statement(r) if np.isfinite(r["power"]) else ""
                          for _, r in power.iterrows()]
    tables["power"] = power
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / FILES[name] for name in FILES}
    for name, table in tables.items():
        table.to_csv(paths[name], index=False)
    summary = {"n_votes": len(oriented), "n_raters": len(raters),
               "n_excluded_raters": len(excluded), "control_threshold": control_threshold,
               "n_boot": n_boot, "seed": seed, "ci_method": stats.CI_METHOD,
               "app_versions": sorted(votes["app_version"].astype(str).unique()),
               "n_votes_all": len(votes), "n_control_votes": int(votes["is_control"].sum()),
               "reference": reference, "bt_scale": "natural log, sum-zero (mean strength 0)",
               "power": {"file": FILES["power"], "preference": power_preference,
                         "n_sims": power_sims, "rater_sd": rater_sd, "prompt_sd": prompt_sd,
                         "method": "the study's own (rater, prompt) votes simulated with "
                                   "rater.simulate's model at the observed indifference; "
                                   "detected = the 95% clustered Wilson CI of P(A) + "
                                   "P(indifferent)/2 excludes 1/2 on the true side; mdp = "
                                   "smallest preference detected with 80% power"}}
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    plot_preferences(tables["preferences"], paths["preferences_png"])
    plot_bradley_terry(tables["bradley_terry"], paths["bradley_terry_png"])
    plot_pareto(tables["pareto_human"], paths["pareto_human_png"])
    return paths


# ------------------------------------------------------------------------------------ plots

MAX_PANELS = 12
COLOURS = {"a": "#4C72B0", "indifferent": "#B0B0B0", "b": "#DD8452"}


def _figure(n_panels: int, width: float, height: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, max(1, n_panels))
    rows = max(1, -(-n_panels // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n_panels:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()


def _short(system: str) -> str:
    return system if len(system) <= 40 else system[:18] + "…" + system[-21:]


def _err(est, lo, hi) -> np.ndarray:
    """(2, n) error bars [est - lo, hi - est] of intervals; 0 where an interval is NaN.

    Non-negative because rater.stats guarantees lo <= est <= hi in floating point (and a
    float difference of ordered numbers is >= 0); no clamp here, which would hide a bug there.
    """
    est, lo, hi = (np.asarray(x, float) for x in (est, lo, hi))
    return np.nan_to_num(np.stack([est - lo, hi - est]))


def _save(plt, fig, path: Path, empty: str | None = None) -> None:
    if empty:
        fig.axes[0].set_visible(True)
        fig.axes[0].axis("off")
        fig.axes[0].text(0.5, 0.5, empty, ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_preferences(prefs: pd.DataFrame, path: Path) -> None:
    """Stacked A / indifferent / B bars per category, one panel per question and pair; error
    bars are the 95% CIs of the A and B rates at their edges of the bar."""
    groups = list(prefs.groupby(["question_id", "system_a", "system_b"], sort=True))
    shown = groups[:MAX_PANELS]
    n_rows = max([len(g) for _, g in shown] or [1])
    plt, fig, axes = _figure(len(shown) or 1, 6.5, 0.9 + 0.35 * n_rows)
    for ax, ((q, a, b), g) in zip(axes, shown):
        g = pd.concat([g[g["category"] == "all"], g[g["category"] != "all"]])
        y = np.arange(len(g))[::-1]
        pa, pt, pb = (g[c].to_numpy() for c in ("p_a", "p_indifferent", "p_b"))
        ax.barh(y, pa, color=COLOURS["a"], label="prefer A")
        ax.barh(y, pt, left=pa, color=COLOURS["indifferent"], label="indifferent")
        ax.barh(y, pb, left=pa + pt, color=COLOURS["b"], label="prefer B")
        ax.errorbar(pa, y, xerr=_err(pa, g["p_a_lo"], g["p_a_hi"]), fmt="none", c="k", lw=1)
        ax.errorbar(1 - pb, y, xerr=_err(pb, g["p_b_lo"], g["p_b_hi"])[::-1], fmt="none", c="k",
                    lw=1)                                # B's bar edge is at 1 - p_b
        ax.set_yticks(y, [f"{c} (n={n})" for c, n in zip(g["category"], g["n_votes"])],
                      fontsize=8)
        ax.set_xlim(0, 1)
        ax.axvline(0.5, color="k", lw=0.5, ls=":")
        ax.set_title(f"{q}: A = {_short(a)}\nB = {_short(b)}", fontsize=8)
    if shown:
        axes[0].legend(fontsize=7, loc="lower right")
    if len(groups) > MAX_PANELS:
        fig.suptitle(f"first {MAX_PANELS} of {len(groups)} pairs; all in preferences.csv")
    _save(plt, fig, path, None if shown else "no votes")


def plot_bradley_terry(bt: pd.DataFrame, path: Path) -> None:
    """Strengths with 95% bootstrap CIs, one panel per question, strongest on top."""
    groups = list(bt.groupby("question_id", sort=True))
    n = max([len(g) for _, g in groups] or [1])
    plt, fig, axes = _figure(len(groups) or 1, 6.5, 1.0 + 0.3 * n)
    for ax, (q, g) in zip(axes, groups):
        g = g.sort_values("strength")
        y = np.arange(len(g))
        s = g["strength"].to_numpy()
        ax.errorbar(s, y, xerr=_err(s, g["ci_lo"], g["ci_hi"]), fmt="o", c=COLOURS["a"],
                    capsize=3)
        ax.set_yticks(y, [_short(x) for x in g["system"]], fontsize=8)
        ax.axvline(0, color="k", lw=0.5, ls=":")
        ax.set_xlabel("Bradley-Terry strength (natural log, mean 0)")
        ax.set_title(q)
    _save(plt, fig, path, None if groups else "fewer than two systems")


def plot_pareto(pareto: pd.DataFrame, path: Path) -> None:
    """Fidelity against alignment preference over the reference, one curve per thresholding
    mode (points in guidance order, labelled with the weight), one panel per reference."""
    groups = list(pareto.groupby("reference_system", sort=True))
    plt, fig, axes = _figure(len(groups) or 1, 6.0, 5.0)
    for ax, (ref, g) in zip(axes, groups):
        for mode, c in g.groupby("thresholding", sort=True):
            x, yv = c["alignment_pref"].to_numpy(), c["fidelity_pref"].to_numpy()
            xerr = _err(x, c["alignment_lo"], c["alignment_hi"])
            yerr = _err(yv, c["fidelity_lo"], c["fidelity_hi"])
            ax.errorbar(x, yv, xerr=xerr, yerr=yerr, fmt="o-", capsize=2, label=mode)
            for xi, yi, w in zip(x, yv, c["guidance"]):
                ax.annotate(f"w={w}", (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.plot([0.5], [0.5], "k*", ms=12, label="reference")
        ax.axhline(0.5, color="k", lw=0.5, ls=":")
        ax.axvline(0.5, color="k", lw=0.5, ls=":")
        ax.set_xlabel("alignment preference over the reference")
        ax.set_ylabel("fidelity preference over the reference")
        ax.set_title(f"reference: {_short(ref)}", fontsize=9)
        ax.legend(fontsize=7, title="thresholding", title_fontsize=7)
    _save(plt, fig, path, None if groups else
          "no configs of one model that differ only in guidance or thresholding")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = run_analysis(args.db, args.out, n_boot=args.bootstrap, seed=args.seed,
                             control_threshold=args.control_threshold, reference=args.reference,
                             power_preference=args.power_preference, power_sims=args.power_sims,
                             rater_sd=args.rater_sd, prompt_sd=args.prompt_sd)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = json.loads(paths["summary"].read_text())
    print(f"{summary['n_votes']} votes from {summary['n_raters'] - summary['n_excluded_raters']}"
          f" raters ({summary['n_excluded_raters']} excluded by the "
          f"{summary['control_threshold']:.0%} control rule)")
    print(f"results: {Path(args.out)}/ ({', '.join(FILES.values())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
