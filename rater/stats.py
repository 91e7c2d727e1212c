"""Statistics of pairwise human ratings (Imagen paper §4.2, App. E; eval_anchors.md §4).

Votes are the store's rows (`rater.store.VoteStore.votes()`): a choice of the left set, the
right set or indifference, with the systems and their task labels on each side. Everything here
works on pandas DataFrames, so it is tested on simulated votes without a database.

- Orientation: every non-control vote is turned into an outcome for the task's set A against
  set B ("a", "indifferent", "b"), undoing the on-screen side randomisation; one unordered pair
  of systems is always reported in one order (the reference system, when given, as B).
- Preference rates with 95% CIs: the Wilson score interval at an effective sample size
  n_eff = p(1 - p) / V, where V is the two-way cluster-robust variance of the rate over raters
  and prompts (Cameron, Gelbach & Miller 2011, J. Bus. Econ. Stat. 29:238) and n_eff is capped
  at n (Korn & Graubard 1998, Survey Methodology 24:193). Votes of one rater, or on one prompt,
  are correlated; an iid binomial interval is then too narrow (tests/test_rater_stats.py).
  The Wilson bounds are computed without cancellation (`wilson`), so 0 <= lo <= p <= hi <= 1
  holds in floating point too, at any n_eff (lo is exactly 0 at p = 0, hi exactly 1 at p = 1).
- Bradley-Terry strengths: P(i beats j) = sigmoid(s_i - s_j), ties as half wins, natural-log
  scale, sum-zero (mean strength 0); fitted by Newton's method on the concave log-likelihood
  (Hunter 2004, Ann. Statist. 32:384), CIs from a seeded two-way ("pigeonhole") bootstrap that
  reweights raters and prompts (Owen 2007, Ann. Appl. Stat. 1:246), 2.5/97.5 percentiles,
  widened to the estimate where they miss it. A replicate that repeats the data reproduces the
  estimate bit for bit (each replicate's Newton iteration stops on its own); the widening only
  acts on lopsided bootstrap distributions of tiny data, so every interval contains its estimate.
- Agreement: Krippendorff's alpha per question over (task) items, with the `krippendorff`
  package, nominal and ordinal (A < indifferent < B).
- Human Pareto data: systems of one model that differ only in guidance weight or thresholding,
  each compared directly with one reference config; preference = P(win) + P(indifferent) / 2.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import sparse, stats as sps

OUTCOMES = ("a", "indifferent", "b")
Z95 = float(sps.norm.ppf(0.975))
CI_METHOD = ("preference rates: Wilson score interval at the effective sample size from a "
             "two-way (rater, prompt) cluster-robust variance, capped at n; Bradley-Terry: "
             "percentile CI of a seeded two-way (rater x prompt) pigeonhole bootstrap, "
             "widened to contain the estimate; "
             "strengths on a natural-log scale, sum-zero")


# ---------------------------------------------------------------------------------- controls

def rater_table(votes: pd.DataFrame, threshold: float = 0.8) -> pd.DataFrame:
    """Per rater: n_votes (non-control), n_controls, control_accuracy, excluded.

    A rater is excluded when their share of correct control answers is below `threshold`
    (the paper's 80%); a rater who saw no control is kept (accuracy NaN).
    """
    v = votes.assign(correct=votes["choice"] == votes["control_expected"])
    ctrl = v[v["is_control"]].groupby("rater_id")["correct"].agg(["size", "mean"])
    n = v[~v["is_control"]].groupby("rater_id").size()
    raters = sorted(set(v["rater_id"]))
    out = pd.DataFrame({"rater_id": raters})
    out["n_votes"] = out["rater_id"].map(n).fillna(0).astype(int)
    out["n_controls"] = out["rater_id"].map(ctrl["size"]).fillna(0).astype(int)
    out["control_accuracy"] = out["rater_id"].map(ctrl["mean"]).astype(float)
    out["excluded"] = out["control_accuracy"] < threshold  # NaN (no controls) -> False
    return out


# ------------------------------------------------------------------------------- orientation

def _a_side(left_label: pd.Series, right_label: pd.Series, left: pd.Series,
            right: pd.Series) -> np.ndarray:
    """True where the left set is the task's set A (label "A"; else the non-reference side)."""
    a_left = (left_label == "A").to_numpy()
    unlabeled = ~((left_label == "A") | (right_label == "A")).to_numpy()
    fallback = ((right_label == "reference") | (right_label == "B")).to_numpy() | (
        ~(left_label == "reference").to_numpy() & (left <= right).to_numpy())
    return np.where(unlabeled, fallback, a_left)


def orient(votes: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Non-control votes as outcomes of system_a against system_b.

    Returns a DataFrame with question_id, category, prompt_id (the task id where empty),
    rater_id, task_id, system_a, system_b, outcome (0 = a, 1 = indifferent, 2 = b) and
    score (1, 0.5, 0: the share of a win that goes to A). Each unordered pair appears in one
    order only: the reference as B if it is in the pair, else the order most votes had as A/B.
    """
    v = votes[~votes["is_control"].astype(bool)].reset_index(drop=True)
    a_left = _a_side(v["left_label"], v["right_label"], v["left_system"], v["right_system"])
    sys_a = np.where(a_left, v["left_system"], v["right_system"])
    sys_b = np.where(a_left, v["right_system"], v["left_system"])
    choice = v["choice"].to_numpy()
    a_side = np.where(a_left, "left", "right")
    outcome = np.where(choice == "indifferent", 1, np.where(choice == a_side, 0, 2))
    df = pd.DataFrame({"question_id": v["question_id"], "category": v["category"].fillna(""),
                       "prompt_id": v["prompt_id"].fillna("").where(v["prompt_id"] != "",
                                                                     v["task_id"]),
                       "rater_id": v["rater_id"], "task_id": v["task_id"],
                       "system_a": sys_a, "system_b": sys_b, "outcome": outcome})
    # one order per unordered pair
    key = [tuple(sorted(p)) for p in zip(df["system_a"], df["system_b"])]
    df["pair"] = key
    counts = df.groupby(["pair", "system_a"]).size().reset_index(name="n")
    counts = counts.sort_values(["pair", "n", "system_a"], ascending=[True, False, True])
    first_a = counts.drop_duplicates("pair").set_index("pair")["system_a"]
    if reference is not None:
        for pair in first_a.index:
            if reference in pair:
                first_a[pair] = pair[1] if pair[0] == reference else pair[0]
    flip = df["system_a"].to_numpy() != df["pair"].map(first_a).to_numpy()
    df.loc[flip, ["system_a", "system_b"]] = df.loc[flip, ["system_b", "system_a"]].to_numpy()
    df.loc[flip, "outcome"] = 2 - df.loc[flip, "outcome"]
    df["score"] = 1.0 - df["outcome"] / 2.0
    return df.drop(columns="pair")


# ------------------------------------------------------------------------ preference rates

def wilson(p, n, z: float = Z95):
    """Wilson score interval (Wilson 1927) for a rate p out of n (arrays); returns (lo, hi).

    The bounds are the roots of (1 + a) x^2 - (2p + a) x + p^2 = 0, a = z^2 / n. The textbook
    form centre -/+ half cancels at p = 0 and 1 (0 of 3: lo = 2^-54 > p), so the bounds are
    computed without cancellation (q = 1 - p, h = sqrt(a p q + a^2 / 4)):
        lo = p * (p / (p + a/2 + h))                    (the product of the roots is p^2/(1+a))
        hi = p + (a (1/2 - p) + h) / (1 + a)            for p <= 1/2,
        hi = 1 - q * (q / (q + a/2 + h))                for p > 1/2 (q is exact there).
    Each bound is p, or 1 - q, moved by a non-negative term, and rounding is monotone, so
    lo <= p <= hi holds in floating point as in exact arithmetic, at any n (lo = 0 at p = 0,
    hi = 1 at p = 1); the clip to [0, 1] only removes rounding beyond the range.
    """
    p, n = np.asarray(p, float), np.asarray(n, float)
    a = z * z / n
    q = 1 - p
    h = np.sqrt(a * p * q + a * a / 4)
    lo = p * (p / (p + a / 2 + h))
    hi = np.where(p <= 0.5, p + (a * (0.5 - p) + h) / (1 + a), 1 - q * (q / (q + a / 2 + h)))
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def _cluster_var(e: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """CR1 variance of a mean from per-vote deviations e (n, k), clustered by `groups`."""
    codes = pd.factorize(groups)[0]
    g = codes.max() + 1
    if g < 2:
        return np.full(e.shape[1], np.nan)
    sums = np.zeros((g, e.shape[1]))
    np.add.at(sums, codes, e)
    return g / (g - 1) * (sums ** 2).sum(0) / len(e) ** 2


def twoway_variance(y: np.ndarray, raters, prompts) -> np.ndarray:
    """Two-way cluster-robust variance of the column means of y (n, k) (Cameron et al. 2011).

    V = V_rater + V_prompt - V_(rater, prompt); where that is negative, the larger one-way
    variance; where a dimension has one cluster only, the other dimension's variance.
    """
    e = y - y.mean(0)
    vr = _cluster_var(e, np.asarray(raters))
    vp = _cluster_var(e, np.asarray(prompts))
    cells = pd.Series(raters).astype(str).to_numpy() + "\x1f" + \
        pd.Series(prompts).astype(str).to_numpy()
    vc = _cluster_var(e, cells)
    v = vr + vp - vc
    one = np.fmax(vr, vp)                        # NaN only if both dimensions have 1 cluster
    v = np.where(np.isnan(v) | (v <= 0), one, v)
    iid = (e ** 2).sum(0) / len(e) ** 2          # one rater and one prompt: plain variance
    return np.where(np.isnan(v), iid, v)


def rate_ci(y: np.ndarray, raters, prompts, z: float = Z95):
    """Means of y (n, k) with clustered Wilson 95% CIs: (mean, lo, hi) arrays of length k."""
    n = len(y)
    p = y.mean(0)
    v = twoway_variance(y, raters, prompts)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(v > 0, p * (1 - p) / v, n)
    n_eff = np.clip(np.nan_to_num(n_eff, nan=n), 1e-9, n)
    lo, hi = wilson(p, n_eff, z)
    return p, lo, hi


PREF_COLUMNS = ["question_id", "category", "system_a", "system_b", "n_votes", "n_raters",
                "p_a", "p_a_lo", "p_a_hi", "p_indifferent", "p_indifferent_lo",
                "p_indifferent_hi", "p_b", "p_b_lo", "p_b_hi"]


def preference_rates(oriented: pd.DataFrame, z: float = Z95) -> pd.DataFrame:
    """Rates of A / indifferent / B with clustered Wilson CIs, per question and pair, overall
    (category "all") and per non-empty category. Columns PREF_COLUMNS."""
    rows = []
    for (q, a, b), g in oriented.groupby(["question_id", "system_a", "system_b"], sort=True):
        cats = [("all", g)] + [(c, gc) for c, gc in g.groupby("category", sort=True) if c]
        for cat, gc in cats:
            y = np.eye(3)[gc["outcome"].to_numpy()]
            p, lo, hi = rate_ci(y, gc["rater_id"].to_numpy(), gc["prompt_id"].to_numpy(), z)
            rows.append([q, cat, a, b, len(gc), gc["rater_id"].nunique(),
                         p[0], lo[0], hi[0], p[1], lo[1], hi[1], p[2], lo[2], hi[2]])
    return pd.DataFrame(rows, columns=PREF_COLUMNS)


# --------------------------------------------------------------------------- Bradley-Terry

def bt_fit(wins: np.ndarray, ridge: float = 1e-6, max_iter: int = 200,
           tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry log-strengths maximising sum_ij wins_ij log sigmoid(s_i - s_j).

    Args:
        wins: (..., n, n) weighted wins of i over j (a tie adds 1/2 to both directions); a batch
            of bootstrap replicates is fitted at once.
        ridge: a tiny L2 penalty that keeps the fit finite where the MLE does not exist (a system
            that wins or loses every comparison, Hunter 2004 Assumption 1); 1e-6 moves the
            estimate of a system with tens of comparisons by well under 1e-4.
    Returns:
        (..., n) strengths, natural-log scale, mean 0. Newton's method with the step scaled to
        at most 2 per coordinate; the objective is concave (Hunter 2004, §2). Each fit of a
        batch stops on its own, so it equals the fit of its wins alone, bit for bit.
    """
    wins = np.asarray(wins, float)
    n = wins.shape[-1]
    games = wins + np.swapaxes(wins, -1, -2)
    won = wins.sum(-1)
    theta = np.zeros(wins.shape[:-1])
    active = np.ones(wins.shape[:-2] + (1,), bool)    # fits still iterating
    shift = np.ones((n, n)) / n + ridge * np.eye(n)  # curvature along 1 and the ridge
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[..., None, :] - theta[..., :, None]))  # P(i beats j)
        grad = won - (games * p).sum(-1) - ridge * theta
        c = games * p * (1 - p)
        hess = -c + np.eye(n) * c.sum(-1)[..., None, :] + shift    # minus the Hessian
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        big = np.abs(step).max(-1, keepdims=True)
        step = step * np.minimum(1.0, 2.0 / np.maximum(big, 1e-300))
        new = theta + step
        theta = np.where(active, new - new.mean(-1, keepdims=True), theta)
        active &= np.abs(step).max(-1, keepdims=True) >= tol
        if not active.any():
            break
    return theta


BT_COLUMNS = ["question_id", "system", "strength", "ci_lo", "ci_hi", "rank", "n_comparisons"]


def _bt_cells(g: pd.DataFrame, systems: list[str]) -> tuple[pd.DataFrame, sparse.csr_matrix]:
    """Votes summed per (rater, prompt, a, b) cell and a (cells, n*n) matrix of their wins."""
    idx = {s: i for i, s in enumerate(systems)}
    n = len(systems)
    cells = (g.assign(ia=g["system_a"].map(idx), ib=g["system_b"].map(idx))
             .groupby(["rater_id", "prompt_id", "ia", "ib"], sort=False)["score"]
             .agg(["sum", "size"]).reset_index())
    c = np.arange(len(cells))
    ia, ib = cells["ia"].to_numpy(), cells["ib"].to_numpy()
    data = np.r_[cells["sum"].to_numpy(), cells["size"].to_numpy() - cells["sum"].to_numpy()]
    m = sparse.csr_matrix((data, (np.r_[c, c], np.r_[ia * n + ib, ib * n + ia])),
                          shape=(len(cells), n * n))
    return cells, m


def bt_bootstrap(cells: pd.DataFrame, m: sparse.csr_matrix, n: int, n_boot: int,
                 rng: np.random.Generator, chunk: int = 200, ridge: float = 1e-6) -> np.ndarray:
    """(n_boot, n) strengths of the pigeonhole bootstrap: every replicate draws raters and
    prompts with replacement and weights a cell by (times its rater drawn) x (its prompt)."""
    r_codes, r_uniq = pd.factorize(cells["rater_id"])
    p_codes, p_uniq = pd.factorize(cells["prompt_id"])
    out = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        wr = rng.multinomial(len(r_uniq), np.full(len(r_uniq), 1 / len(r_uniq)), size=b)
        wp = rng.multinomial(len(p_uniq), np.full(len(p_uniq), 1 / len(p_uniq)), size=b)
        weights = (wr[:, r_codes] * wp[:, p_codes]).astype(float)          # (b, cells)
        wins = np.asarray((m.T @ weights.T).T).reshape(b, n, n)
        out.append(bt_fit(wins, ridge=ridge))
    return np.concatenate(out)


def _question_rng(seed: int, question: str) -> np.random.Generator:
    """One generator per (seed, question), so adding a question changes no other CI."""
    return np.random.default_rng([seed, *question.encode()])


def bradley_terry(oriented: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Bradley-Terry strengths per question with seeded bootstrap 95% CIs (columns BT_COLUMNS).

    rank = 1 + the number of systems whose CI lies wholly above this one's (Chatbot Arena's
    rule, eval_anchors.md §4.1), so systems with overlapping CIs share a rank. A percentile CI
    can miss the estimate where the bootstrap distribution is lopsided (tiny data); it is then
    widened to the estimate, so ci_lo <= strength <= ci_hi always.
    """
    rows = []
    for q, g in oriented.groupby("question_id", sort=True):
        systems = sorted(set(g["system_a"]) | set(g["system_b"]))
        if len(systems) < 2:
            continue
        n = len(systems)
        cells, m = _bt_cells(g, systems)
        strength = bt_fit(np.asarray(m.sum(0)).reshape(n, n))
        if n_boot > 0:
            boot = bt_bootstrap(cells, m, n, n_boot, _question_rng(seed, q))
            lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
            lo, hi = np.minimum(lo, strength), np.maximum(hi, strength)
        else:
            lo = hi = np.full(n, np.nan)
        rank = 1 + (lo[None, :] > hi[:, None]).sum(1)
        n_cmp = pd.concat([g["system_a"], g["system_b"]]).value_counts()
        for i, s in enumerate(systems):
            rows.append([q, s, strength[i], lo[i], hi[i], int(rank[i]), int(n_cmp.get(s, 0))])
    out = pd.DataFrame(rows, columns=BT_COLUMNS)
    return out.sort_values(["question_id", "strength"], ascending=[True, False],
                           ignore_index=True)


# ------------------------------------------------------------------------------- agreement

AGREEMENT_COLUMNS = ["question_id", "alpha", "level", "n_raters", "n_items"]


def agreement(oriented: pd.DataFrame, levels=("ordinal", "nominal")) -> pd.DataFrame:
    """Krippendorff's alpha per question; items are tasks rated by 2+ raters, values the
    oriented outcome (0 = A, 1 = indifferent, 2 = B). NaN where no item has 2 ratings or
    every rating is the same value (alpha is undefined then)."""
    import krippendorff

    rows = []
    for q, g in oriented.groupby("question_id", sort=True):
        table = g.pivot_table(index="rater_id", columns="task_id", values="outcome",
                              aggfunc="first")
        table = table.loc[:, table.notna().sum(axis=0) >= 2]
        table = table.loc[table.notna().any(axis=1)]
        data = table.to_numpy(float)
        for level in levels:
            alpha = np.nan
            if data.size and len(np.unique(data[~np.isnan(data)])) > 1:
                alpha = float(krippendorff.alpha(reliability_data=data, value_domain=[0, 1, 2],
                                                 level_of_measurement=level))
            rows.append([q, alpha, level, table.shape[0], table.shape[1]])
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


# ------------------------------------------------------------------------ human Pareto data

_NUM = r"[0-9.eE+-]+|inf"
_KEY = re.compile(rf"^w(?P<w>(?:{_NUM})(?:_(?:{_NUM}))*)-(?P<thr>none|static|dyn(?P<p>{_NUM})"
                  rf"(?:cap(?P<cap>{_NUM}))?)-(?P<rest>aug.+)$")


def parse_system(system: str) -> dict | None:
    """'model:w5-dyn0.995-aug0-ddim64' -> model_id, guidance (floats), guidance_label ('5',
    '1.35/8'), thresholding ('none' | 'static' | 'dynamic:P' | 'dynamic:P:CAP') and rest
    ('aug0-ddim64'); None for a system that is not a model config (reference, controls)."""
    model, sep, key = system.rpartition(":")
    m = _KEY.match(key) if sep else None
    if m is None:
        return None
    mode = m["thr"]
    if m["p"] is not None:
        mode = f"dynamic:{m['p']}" + (f":{m['cap']}" if m["cap"] else "")
    weights = m["w"].split("_")
    return {"model_id": model, "guidance": tuple(float(w) for w in weights),
            "guidance_label": "/".join(weights), "thresholding": mode, "rest": m["rest"]}


PARETO_COLUMNS = ["thresholding", "guidance", "system", "reference_system", "fidelity_pref",
                  "fidelity_lo", "fidelity_hi", "alignment_pref", "alignment_lo",
                  "alignment_hi", "n", "n_fidelity", "n_alignment"]


def _matches(system: str, reference: str) -> bool:
    """A reference is a full system string or just its config key."""
    return system == reference or system.endswith(":" + reference)


def _families(systems, reference: str | None) -> list[tuple[str, list[str]]]:
    """(reference system, members) of every group of configs of one model that differ only in
    guidance weight and thresholding mode (same aug level, sampler and steps)."""
    groups: dict[tuple, list[str]] = {}
    for s in sorted(systems):
        info = parse_system(s)
        if info is not None:
            groups.setdefault((info["model_id"], info["rest"]), []).append(s)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        refs = [s for s in members if reference is not None and _matches(s, reference)]
        if reference is not None and not refs:
            continue
        out.append((refs[0] if refs else None, members))
    return out


def _hub(members: list[str], pairs: pd.DataFrame) -> str:
    """The member compared directly with the most other members (then most votes, name)."""
    sub = pairs[pairs["system_a"].isin(members) & pairs["system_b"].isin(members)]
    both = pd.concat([sub[["system_a", "system_b"]],
                      sub[["system_b", "system_a"]].set_axis(["system_a", "system_b"], axis=1)])
    rank = both.groupby("system_a").agg(k=("system_b", "nunique"), v=("system_b", "size"))
    rank = rank.reset_index().sort_values(["k", "v", "system_a"], ascending=[False, False, True])
    return rank["system_a"].iloc[0] if len(rank) else members[0]


def _pref_vs(oriented: pd.DataFrame, system: str, ref: str, question: str):
    """(preference of `system` over `ref`, lo, hi, n) from their direct votes on `question`."""
    g = oriented[(oriented["question_id"] == question)
                 & (((oriented["system_a"] == system) & (oriented["system_b"] == ref))
                    | ((oriented["system_a"] == ref) & (oriented["system_b"] == system)))]
    if g.empty:
        return np.nan, np.nan, np.nan, 0
    score = np.where(g["system_a"] == system, g["score"], 1 - g["score"])
    p, lo, hi = rate_ci(score[:, None], g["rater_id"].to_numpy(), g["prompt_id"].to_numpy())
    return p[0], lo[0], hi[0], len(g)


def pareto_human(oriented: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Alignment against fidelity preference of each config over one reference config.

    Preference = P(preferred) + P(indifferent) / 2 from direct votes (0.5: as good as the
    reference), with clustered Wilson CIs. Configs are grouped by model and everything but
    guidance and thresholding; the reference of a group is `reference` (a system or config
    key) or, by default, the config compared directly with the most others. The reference
    itself is one row at (0.5, 0.5) with n = 0, so each curve passes through it.
    """
    pairs = oriented.drop_duplicates(["system_a", "system_b"])
    systems = set(oriented["system_a"]) | set(oriented["system_b"])
    rows = []
    for ref, members in _families(systems, reference):
        ref = ref or _hub(members, pairs)
        ref_info = parse_system(ref)
        family = []
        for s in members:
            if s == ref:
                continue
            fid = _pref_vs(oriented, s, ref, "fidelity")
            ali = _pref_vs(oriented, s, ref, "alignment")
            if fid[3] + ali[3] == 0:
                continue
            info = parse_system(s)
            family.append([info["thresholding"], info["guidance_label"], s, ref, *fid[:3],
                           *ali[:3], fid[3] + ali[3], fid[3], ali[3]])
        if family:
            rows += [[ref_info["thresholding"], ref_info["guidance_label"], ref, ref,
                      0.5, np.nan, np.nan, 0.5, np.nan, np.nan, 0, 0, 0]] + family
    out = pd.DataFrame(rows, columns=PARETO_COLUMNS)
    if out.empty:
        return out
    order = out["system"].map(lambda s: parse_system(s)["guidance"])
    return (out.assign(_g=order).sort_values(["reference_system", "thresholding", "_g"])
            .drop(columns="_g").reset_index(drop=True))
