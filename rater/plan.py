"""Plan a pairwise human study: prompts x raters needed to detect a preference, by simulation.

    python -m rater plan --preference 0.55 --indifferent 0.2 --power 0.8 --out plan/

The study compares system A with system B on one question. Its preference is the analysis'
P(A) + P(indifferent) / 2 (rater.stats, the human Pareto curves), and the study detects it when
the 95% CI of that rate (clustered Wilson over raters and prompts, rater.stats.rate_ci) lies
wholly on A's side of 1/2. Votes come from rater.simulate's model: Davidson ties, d = s_A - s_B
shifted by a normal random effect per rater (--rater-sd) and per prompt (--prompt-sd), with
d and the tie parameter solved so that the population's preference and indifference are the
ones asked for. Each prompt goes to r distinct raters (--ratings-per-task, as the app assigns)
and raters rate --tasks-per-rater prompts each (rater.simulate.balanced_design). For each r the
smallest number of prompts whose simulated power reaches --power is searched (a grid, then
bisection), each design simulated --sims times.

Writes plan.csv (every design tried: prompts, raters, votes, power and its 95% CI), plan.json
(the chosen design per r and the cheapest overall) and plan.png (power against prompts).
`study_power` gives `python -m rater analyze` the power of the study that was run.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from bench.cli import HelpFormatter

from . import stats
from .simulate import balanced_design

GRID = (10, 15, 20, 30, 40, 50, 70, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200,
        5000)
DEFAULT_RATER_SD = 0.3
DEFAULT_PROMPT_SD = 0.5
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(48)   # E[f(Z)], Z ~ N(0, 1)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()

EPILOG = """examples:
  python -m rater plan --preference 0.55                      # A preferred 55% of the time
  python -m rater plan --preference 0.6 --indifferent 0.3 --power 0.9 --ratings-per-task 1,3,5 \\
      --tasks-per-rater 40 --rater-sd 0.5 --prompt-sd 0.8 --out plan/
"""


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2."""


@dataclass(frozen=True)
class Effect:
    """A population preference on rater.simulate's scale: Davidson's d0 and tie parameter nu
    with the random effects' SDs, such that the average over raters and prompts of
    P(A) + P(tie) / 2 is `preference` and of P(tie) is `indifferent`."""

    preference: float
    indifferent: float
    rater_sd: float
    prompt_sd: float
    d0: float
    nu: float


def _population(d0: float, nu: float, sd: float) -> tuple[float, float]:
    """(preference, indifferent) averaged over d = d0 + sd * Z (Gauss-Hermite quadrature)."""
    d = d0 + sd * _NODES
    w = np.stack([np.exp(d / 2), np.full_like(d, nu), np.exp(-d / 2)])
    p = w / w.sum(0)
    return float(_WEIGHTS @ (p[0] + p[1] / 2)), float(_WEIGHTS @ p[1])


def solve_effect(preference: float, indifferent: float = 0.2, rater_sd: float = DEFAULT_RATER_SD,
                 prompt_sd: float = DEFAULT_PROMPT_SD) -> Effect:
    """The Effect of a population preference and indifference (UserError if impossible)."""
    if not 0 < preference < 1 or preference == 0.5:
        raise UserError(f"--preference {preference} must be in (0, 1) and not 0.5 (no effect)")
    if not 0 <= indifferent < 1:
        raise UserError(f"--indifferent {indifferent} must be in [0, 1)")
    if indifferent / 2 >= min(preference, 1 - preference):
        raise UserError(f"--indifferent {indifferent} leaves P(A) = {preference - indifferent / 2:g} "
                        f"or P(B) = {1 - preference - indifferent / 2:g} at or below 0; lower it")
    if rater_sd < 0 or prompt_sd < 0 or rater_sd > 5 or prompt_sd > 5:
        raise UserError("--rater-sd and --prompt-sd must be in [0, 5] (log-odds units)")
    sd = math.hypot(rater_sd, prompt_sd)
    if indifferent > 0:     # both equations at once from a no-effects guess; nested roots if not
        p_a = preference - indifferent / 2
        p_b = 1 - preference - indifferent / 2
        guess = [math.log(p_a / p_b) * math.sqrt(1 + sd * sd * math.pi / 8),
                 math.log(indifferent / math.sqrt(p_a * p_b))]
        sol = optimize.root(lambda x: np.subtract(_population(x[0], math.exp(x[1]), sd),
                                                  (preference, indifferent)), guess, tol=1e-12)
        if sol.success and np.abs(sol.fun).max() < 1e-10:
            return Effect(preference, indifferent, rater_sd, prompt_sd, float(sol.x[0]),
                          math.exp(sol.x[1]))

    def d_for(nu: float) -> float:
        return optimize.brentq(lambda d: _population(d, nu, sd)[0] - preference, -60, 60,
                               xtol=1e-12)

    def tie_gap(log_nu: float) -> float:
        nu = math.exp(log_nu)
        try:
            return _population(d_for(nu), nu, sd)[1] - indifferent
        except ValueError:        # so many ties that no d in range gives the preference
            return 1.0

    if indifferent == 0:
        nu = 0.0
    else:
        lo, hi = -30.0, 15.0
        if tie_gap(hi) < 0:
            raise UserError(f"--indifferent {indifferent} is not reachable at --preference "
                            f"{preference} with these random effects; lower it")
        nu = math.exp(optimize.brentq(tie_gap, lo, hi, xtol=1e-12))
    return Effect(preference, indifferent, rater_sd, prompt_sd, d_for(nu), nu)


def simulate_scores(effect: Effect, raters: np.ndarray, prompts: np.ndarray, n_sims: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Scores (1 A, 0.5 indifferent, 0 B) of the votes (raters[i], prompts[i]), n_sims studies
    as columns: (n_votes, n_sims)."""
    rc, n_r = pd.factorize(raters)[0], len(np.unique(raters))
    pc, n_p = pd.factorize(prompts)[0], len(np.unique(prompts))
    d = (effect.d0 + effect.rater_sd * rng.standard_normal((n_r, n_sims))[rc]
         + effect.prompt_sd * rng.standard_normal((n_p, n_sims))[pc])
    ea, eb = np.exp(d / 2), np.exp(-d / 2)
    z = ea + eb + effect.nu
    u = rng.random(d.shape) * z
    return np.where(u < ea, 1.0, np.where(u < ea + effect.nu, 0.5, 0.0))


def detected(scores: np.ndarray, raters, prompts, preference: float) -> np.ndarray:
    """Per column: the analysis' 95% CI of the preference lies on the true side of 1/2."""
    _, lo, hi = stats.rate_ci(scores, raters, prompts)
    return lo > 0.5 if preference > 0.5 else hi < 0.5


def power_of(effect: Effect, raters, prompts, n_sims: int, seed: int) -> tuple[float, float, float]:
    """(power, 95% Wilson lo, hi) of a layout of votes, by n_sims simulated studies."""
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    chunk = max(1, min(n_sims, 4_000_000 // max(1, len(raters))))   # bounded memory
    while done < n_sims:
        k = min(chunk, n_sims - done)
        hits += int(detected(simulate_scores(effect, raters, prompts, k, rng), raters, prompts,
                             effect.preference).sum())
        done += k
    p = hits / n_sims
    lo, hi = stats.wilson(p, n_sims)
    return p, float(lo), float(hi)


def design_power(effect: Effect, n_prompts: int, ratings_per_task: int, tasks_per_rater: int,
                 n_sims: int, seed: int) -> dict:
    """One row of plan.csv: a balanced design and its simulated power."""
    raters, prompts = balanced_design(n_prompts, ratings_per_task, tasks_per_rater)
    p, lo, hi = power_of(effect, raters, prompts, n_sims, seed)
    return {"n_prompts": n_prompts, "ratings_per_task": ratings_per_task,
            "tasks_per_rater": min(tasks_per_rater, n_prompts),
            "n_raters": int(raters.max()) + 1, "n_votes": len(raters), "power": p,
            "power_lo": lo, "power_hi": hi, "n_sims": n_sims}


def search(effect: Effect, target: float, ratings_per_task: int, tasks_per_rater: int,
           n_sims: int, seed: int, max_prompts: int) -> tuple[list[dict], dict | None]:
    """Every design tried for one r, and the smallest number of prompts reaching `target`."""
    tried: dict[int, dict] = {}

    def at(n: int) -> dict:
        if n not in tried:
            tried[n] = design_power(effect, n, ratings_per_task, tasks_per_rater, n_sims,
                                    seed + 7919 * n)
        return tried[n]

    below, hit = 1, None
    for n in [g for g in GRID if g < max_prompts] + [max_prompts]:
        if at(n)["power"] >= target:
            hit = n
            break
        below = n
    if hit is None:
        return sorted(tried.values(), key=lambda r: r["n_prompts"]), None
    while hit - below > max(1, hit // 50):          # bisection to 2% of the size
        mid = (below + hit) // 2
        if at(mid)["power"] >= target:
            hit = mid
        else:
            below = mid
    rows = sorted(tried.values(), key=lambda r: r["n_prompts"])
    return rows, tried[hit]


POWER_COLUMNS = ["question_id", "system_a", "system_b", "n_votes", "n_prompts", "n_raters",
                 "p_indifferent", "preference", "power", "power_lo", "power_hi", "mdp",
                 "target_power", "rater_sd", "prompt_sd", "n_sims"]


def study_power(oriented: pd.DataFrame, preference: float, rater_sd: float = DEFAULT_RATER_SD,
                prompt_sd: float = DEFAULT_PROMPT_SD, target: float = 0.8, n_sims: int = 200,
                seed: int = 0) -> pd.DataFrame:
    """The power of the study that was run, per question and pair: its own votes (which rater
    rated which prompt) simulated under `preference` with the observed indifference, and the
    smallest preference it detects with probability `target` (mdp); n_sims = 0: the design
    columns only. Columns POWER_COLUMNS."""
    rows = []
    for (q, a, b), g in oriented.groupby(["question_id", "system_a", "system_b"], sort=True):
        raters, prompts = g["rater_id"].to_numpy(), g["prompt_id"].to_numpy()
        ind = float((g["outcome"] == 1).mean())
        row = {"question_id": q, "system_a": a, "system_b": b, "n_votes": len(g),
               "n_prompts": len(set(prompts)), "n_raters": len(set(raters)),
               "p_indifferent": ind, "preference": preference, "power": np.nan,
               "power_lo": np.nan, "power_hi": np.nan, "mdp": np.nan, "target_power": target,
               "rater_sd": rater_sd, "prompt_sd": prompt_sd, "n_sims": n_sims}
        ind = min(ind, 0.98 * 2 * min(preference, 1 - preference))   # keep P(A), P(B) > 0
        try:
            if not n_sims:
                raise UserError("no simulation asked for")
            effect = solve_effect(preference, ind, rater_sd, prompt_sd)
            row["power"], row["power_lo"], row["power_hi"] = power_of(effect, raters, prompts,
                                                                      n_sims, seed)
            row["mdp"] = _mdp(g, ind, rater_sd, prompt_sd, target, n_sims, seed)
        except UserError:
            pass
        rows.append(row)
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def _mdp(g: pd.DataFrame, ind: float, rater_sd: float, prompt_sd: float, target: float,
         n_sims: int, seed: int) -> float:
    """Smallest preference above 1/2 that the votes' layout detects with `target` power (NaN if
    none up to the largest one the indifference allows), to 0.005."""
    raters, prompts = g["rater_id"].to_numpy(), g["prompt_id"].to_numpy()
    top = 1 - ind / 2 - 1e-3

    def power(pref: float) -> float:
        effect = solve_effect(pref, ind, rater_sd, prompt_sd)
        return power_of(effect, raters, prompts, n_sims, seed)[0]

    def safe_power(pref: float) -> float:
        try:
            return power(pref)
        except UserError:
            return 0.0

    lo, hi = 0.5, top
    for _ in range(40):                  # the largest preference these rates allow
        try:
            if hi <= lo or power(hi) < target:
                return float("nan")
            break
        except UserError:
            hi = 0.5 + 0.9 * (hi - 0.5)
    else:
        return float("nan")
    while hi - lo > 0.005:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if safe_power(mid) >= target else (mid, hi)
    return hi


def power_statement(row) -> str:
    """One sentence on the power of a study (a row of study_power)."""
    text = (f"{row['n_votes']} votes from {row['n_raters']} raters on {row['n_prompts']} prompts "
            f"had {row['power']:.0%} power to detect a {row['preference']:.0%} preference")
    if np.isfinite(row["mdp"]):
        text += (f"; {row['target_power']:.0%} power from a {row['mdp']:.1%} preference up")
    else:
        text += f"; no preference reaches {row['target_power']:.0%} power at this size"
    return text + f" (rater SD {row['rater_sd']:g}, prompt SD {row['prompt_sd']:g}, simulated)"


# ------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rater plan", description=__doc__, epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("--preference", type=float, required=True, metavar="P",
                   help="the preference to detect: P(A) + P(indifferent) / 2 in the population")
    p.add_argument("--indifferent", type=float, default=0.2, metavar="F",
                   help="the population's share of 'I am indifferent'")
    p.add_argument("--power", type=float, default=0.8, help="probability of detecting it")
    p.add_argument("--rater-sd", type=float, default=DEFAULT_RATER_SD, metavar="SD",
                   help="SD of raters' random effects on the log-odds of preferring A")
    p.add_argument("--prompt-sd", type=float, default=DEFAULT_PROMPT_SD, metavar="SD",
                   help="SD of prompts' random effects on the log-odds of preferring A")
    p.add_argument("--ratings-per-task", default="1,3,5", metavar="R,...",
                   help="designs: distinct raters per prompt")
    p.add_argument("--tasks-per-rater", type=int, default=20, metavar="Q",
                   help="prompts each rater rates (the app's --tasks-per-rater)")
    p.add_argument("--sims", type=int, default=200, help="simulated studies per design")
    p.add_argument("--max-prompts", type=int, default=5000, help="largest design tried")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulations")
    p.add_argument("--out", default="plan", metavar="DIR", help="folder for plan.csv/json/png")
    return p


def _ratings(text: str) -> list[int]:
    try:
        rs = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        rs = []
    if not rs or rs[0] < 1:
        raise UserError(f"--ratings-per-task {text!r}: expected positive integers, e.g. 1,3,5")
    return rs


def plot(table: pd.DataFrame, chosen: list[dict], target: float, effect: Effect, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r, g in table.groupby("ratings_per_task"):
        g = g.sort_values("n_prompts")
        lo, hi = g["power"] - g["power_lo"], g["power_hi"] - g["power"]
        ax.errorbar(g["n_prompts"], g["power"], yerr=np.stack([lo, hi]).clip(0), fmt="o-",
                    capsize=2, ms=3, label=f"{r} rater{'s' if r > 1 else ''} per prompt")
    for c in chosen:
        ax.annotate(f"{c['n_prompts']} prompts\n{c['n_raters']} raters", (c["n_prompts"],
                    c["power"]), fontsize=7, xytext=(4, -18), textcoords="offset points")
    ax.axhline(target, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("prompts")
    ax.set_ylabel("power (95% CI of the preference excludes 1/2)")
    ax.set_title(f"preference {effect.preference:g}, indifferent {effect.indifferent:g}, "
                 f"rater SD {effect.rater_sd:g}, prompt SD {effect.prompt_sd:g}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0 < args.power < 1:
            raise UserError(f"--power {args.power} must be in (0, 1)")
        if args.sims < 20 or args.tasks_per_rater < 1 or args.max_prompts < 2:
            raise UserError("--sims must be >= 20, --tasks-per-rater >= 1, --max-prompts >= 2")
        rs = _ratings(args.ratings_per_task)
        effect = solve_effect(args.preference, args.indifferent, args.rater_sd, args.prompt_sd)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    rows, chosen = [], []
    for r in tqdm(rs, desc="designs", unit="r"):
        tried, best = search(effect, args.power, r, args.tasks_per_rater, args.sims,
                             args.seed + 1000 * r, args.max_prompts)
        rows += [dict(t, chosen=best is not None and t["n_prompts"] == best["n_prompts"])
                 for t in tried]
        if best is not None:
            chosen.append(best)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "plan.csv", index=False)
    cheapest = min(chosen, key=lambda c: (c["n_votes"], c["n_raters"])) if chosen else None
    (out / "plan.json").write_text(json.dumps(
        {"effect": asdict(effect), "target_power": args.power, "designs": chosen,
         "cheapest": cheapest, "detection": "95% CI of P(A) + P(indifferent)/2 (clustered "
         "Wilson, rater.stats.rate_ci) excludes 1/2 on A's side", "seed": args.seed},
        indent=2) + "\n")
    plot(table, chosen, args.power, effect, out / "plan.png")
    print(f"\nto detect a preference of {args.preference:g} (indifferent {args.indifferent:g}) "
          f"with {args.power:.0%} power, {args.tasks_per_rater} prompts per rater:")
    head = f"{'raters/prompt':>13}{'prompts':>9}{'raters':>8}{'votes':>8}{'power':>8}  95% CI"
    print(head)
    print("-" * len(head))
    for r in rs:
        c = next((c for c in chosen if c["ratings_per_task"] == r), None)
        if c is None:
            print(f"{r:>13}  not reached with {args.max_prompts} prompts")
            continue
        print(f"{r:>13}{c['n_prompts']:>9}{c['n_raters']:>8}{c['n_votes']:>8}{c['power']:>8.2f}"
              f"  [{c['power_lo']:.2f}, {c['power_hi']:.2f}]")
    if cheapest:
        print(f"fewest votes: {cheapest['n_prompts']} prompts x {cheapest['ratings_per_task']} "
              f"raters each = {cheapest['n_votes']} votes from {cheapest['n_raters']} raters")
    print(f"results: {out}/ (plan.csv, plan.json, plan.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
