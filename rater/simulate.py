"""Simulated raters: answer rating tasks from a known preference model, through the vote store.

    python -m rater.simulate --db ratings.db --demo
    python -m rater.simulate --db ratings.db --tasks tasks.jsonl --strength MODEL:CONFIG=1.0

Preference model: every system has a latent log-strength per question; a comparison of i with
j ends in a preference for i, indifference or a preference for j with Davidson's (1970, JASA
65:317) extension of Bradley-Terry to ties, with d = s_i - s_j and tie parameter nu:
    P(i) = e^(d/2) / Z,  P(tie) = nu / Z,  P(j) = e^(-d/2) / Z,  Z = e^(d/2) + e^(-d/2) + nu.
Explicit probabilities (P(A), P(tie), P(B)) per (question, A, B) override the strengths.

Raters: a careful rater answers a vote from the model with probability 1 - lapse_r - haze_p,
uniformly at random with probability lapse_r (their own carelessness, uniform on
[0, 2 * noise]) and "indifferent" with probability haze_p (a prompt's ambiguity, uniform on
[0, 2 * prompt_noise]). Votes of one rater, or of one prompt, are therefore correlated, as with
people, and the population's probabilities stay exact (`true_probs`). Careless raters answer
everything, controls included, at random, so they fail the 80% control rule. Sides are
randomised per (rater, task), as the app does.

Raters and prompts may also differ in taste: with rater_sd / prompt_sd > 0, a rater's and a
prompt's normal random effects shift d = s_A - s_B (A: the task's set A) of each of their votes
(a random-intercept model on Davidson's scale). With ratings_per_task r, each screen (prompt and
pair, all questions) goes to r distinct raters and raters fill their quota in turn, as the
app's assignment does (`balanced_design`); `python -m rater plan` sizes studies with these.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cli import HelpFormatter

from .tasks import system_name as side_system  # the app's system strings

CHOICES = ("left", "indifferent", "right")


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2."""


@dataclass
class PreferenceModel:
    """Latent log-strengths per question and system (Davidson ties), or explicit probabilities."""

    strengths: dict = field(default_factory=dict)  # {question: {system: s}} or {system: s}
    tie: float = 0.5                               # Davidson's nu (0: no ties)
    explicit: dict = field(default_factory=dict)   # {(question, a, b): (P(a), P(tie), P(b))}

    def strength(self, question: str, system: str) -> float:
        table = self.strengths.get(question, self.strengths)
        value = table.get(system, 0.0) if isinstance(table, dict) else 0.0
        return float(value) if not isinstance(value, dict) else 0.0

    def probs(self, question: str, a: str, b: str) -> np.ndarray:
        """(P(a preferred), P(indifferent), P(b preferred)) of a careful, lapse-free rater."""
        if (question, a, b) in self.explicit:
            return np.asarray(self.explicit[(question, a, b)], float)
        if (question, b, a) in self.explicit:
            return np.asarray(self.explicit[(question, b, a)], float)[::-1].copy()
        d = self.strength(question, a) - self.strength(question, b)
        w = np.array([np.exp(d / 2), self.tie, np.exp(-d / 2)])
        return w / w.sum()


@dataclass
class Raters:
    """The simulated rater pool."""

    n_raters: int = 20             # raters in all, careless ones included
    n_careless: int = 2            # raters who answer everything at random
    noise: float = 0.1             # mean lapse rate of a careful rater (random answers)
    prompt_noise: float = 0.05     # mean share of "indifferent" a prompt's ambiguity adds
    control_rate: float = 0.1      # control trials per real task
    control_accuracy: float = 0.97 # a careful rater's share of correct control answers
    tasks_per_rater: int | None = None  # None: every rater answers every task
    ratings_per_task: int | None = None  # r raters per screen (balanced_design); None: off
    rater_sd: float = 0.0          # SD of a rater's random effect on d = s_A - s_B
    prompt_sd: float = 0.0         # SD of a prompt's random effect on d


def true_probs(model: PreferenceModel, raters: Raters, question: str, a: str,
               b: str) -> np.ndarray:
    """The population's (P(a), P(indifferent), P(b)) over careful raters and prompts."""
    p = model.probs(question, a, b)
    lapse, haze = raters.noise, raters.prompt_noise
    return (1 - lapse - haze) * p + lapse / 3 + haze * np.array([0.0, 1.0, 0.0])


# ------------------------------------------------------------------------------------ tasks

def _side(system: str, label: str) -> dict:
    model, sep, key = system.rpartition(":")
    if not sep:
        model, key = system, None
    return {"label": label, "model_id": model, "config_key": key}


def synthetic_tasks(systems: list[str], *, questions=("fidelity", "alignment"),
                    categories=("Colors", "Counting", "Text"), prompts_per_category: int = 5,
                    pairs: str = "all", reference: str | None = None, seed: int = 0) -> list[dict]:
    """Tasks in the tasks.jsonl shape (no images) for every pair of `systems` ("all") or every
    system against `reference` ("reference"), per prompt and question; A is the first system
    of a pair (the non-reference one), sides by a seeded coin."""
    if pairs == "reference":
        if reference not in systems:
            raise UserError(f"reference {reference!r} is not one of the systems")
        combos = [(s, reference) for s in systems if s != reference]
    else:
        combos = [(a, b) for i, a in enumerate(systems) for b in systems[i + 1:]]
    rng = np.random.default_rng(seed)
    tasks = []
    for cat in categories:
        for k in range(prompts_per_category):
            prompt_id = f"{cat.lower()}-{k:03d}"
            for a, b in combos:
                for q in questions:
                    tid = "t-" + hashlib.sha256(json.dumps([q, prompt_id, a, b]).encode()
                                                ).hexdigest()[:16]
                    a_left = bool(rng.integers(2))
                    sides = [_side(a, "A"), _side(b, "B")]
                    left, right = sides if a_left else sides[::-1]
                    tasks.append({"task_id": tid, "question_id": q,
                                  "meta": {"prompt_id": prompt_id, "category": cat},
                                  "hidden": {"a_side": "left" if a_left else "right",
                                             "left": left, "right": right}})
    return tasks


def read_tasks(path: str | Path) -> list[dict]:
    """The tasks of a tasks.jsonl (`python -m bench.drawbench pairs`); UserError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tasks file {path} not found; write one with "
                        "`python -m bench.drawbench pairs`")
    tasks = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            t = json.loads(line)
            t["hidden"]["left"], t["hidden"]["right"], t["question_id"], t["task_id"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{i}: not a rating task ({e}); expected one JSON object "
                            "per line as bench/rating_task.schema.json describes") from None
        tasks.append(t)
    if not tasks:
        raise UserError(f"{path} has no tasks")
    return tasks


# ------------------------------------------------------------------------------------ votes

VOTE_FIELDS = ("task_id", "rater_id", "question_id", "choice", "left_system", "right_system",
               "left_label", "right_label", "time_shown", "time_answered", "category",
               "prompt_id", "is_control", "control_expected", "app_version")


def _task_table(tasks: list[dict], model: PreferenceModel) -> tuple[pd.DataFrame, np.ndarray]:
    """Tasks as columns, and each task's (P(left), P(tie), P(right)) of a careful rater."""
    rows, cache = [], {}
    for t in tasks:
        h, meta = t["hidden"], t.get("meta", {})
        rows.append((t["task_id"], t["question_id"], side_system(h["left"]),
                     side_system(h["right"]), h["left"].get("label", "A"),
                     h["right"].get("label", "B"), meta.get("category", ""),
                     meta.get("prompt_id", "")))
    table = pd.DataFrame(rows, columns=["task_id", "question_id", "left_system", "right_system",
                                        "left_label", "right_label", "category", "prompt_id"])
    probs = np.array([cache.setdefault(k, model.probs(*k)) for k in
                      zip(table["question_id"], table["left_system"], table["right_system"])])
    return table, probs


def _assign(n_raters: int, n_tasks: int, per_rater: int | None, rng) -> tuple[np.ndarray, ...]:
    """(rater index, task index) of every vote: all tasks, or a random subset per rater."""
    if per_rater is None or per_rater >= n_tasks:
        return np.repeat(np.arange(n_raters), n_tasks), np.tile(np.arange(n_tasks), n_raters)
    pick = np.argsort(rng.random((n_raters, n_tasks)), axis=1)[:, :per_rater]
    return np.repeat(np.arange(n_raters), per_rater), pick.ravel()


def balanced_design(n_screens: int, ratings_per_task: int, tasks_per_rater: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(rater, screen) of every rating when each screen goes to r distinct raters and raters fill
    a quota of q screens in turn: rater j takes positions j*q .. (j+1)*q - 1 of the sequence
    screen = t mod n, t < n * r, so q <= n consecutive positions are distinct screens and the
    last rater takes the rest. Raters needed: ceil(n * r / q)."""
    n, r = n_screens, ratings_per_task
    q = min(tasks_per_rater, n)
    if n < 1 or r < 1 or q < 1:
        raise UserError("need at least one screen, one rating per task and one task per rater")
    if r > n * 10**6:
        raise UserError("ratings per task is absurdly large")
    t = np.arange(n * r)
    return t // q, t % n


def _draw(p: np.ndarray, rng) -> np.ndarray:
    """One categorical draw per row of p (n, 3)."""
    return np.minimum((rng.random(len(p))[:, None] > np.cumsum(p, 1)).sum(1), 2)


def _screen_assign(table: pd.DataFrame, raters: Raters, rng) -> tuple[np.ndarray, np.ndarray]:
    """(rater index, task index) of every vote under balanced_design over the screens."""
    pair = [tuple(sorted(x)) for x in zip(table["left_system"], table["right_system"])]
    screen, uniq = pd.factorize(pd.Series(list(zip(table["prompt_id"].where(
        table["prompt_id"] != "", table["task_id"]), pair))))
    quota = raters.tasks_per_rater or len(uniq)
    order = rng.permutation(len(uniq))                 # which screens rater 0 gets first
    rater, pos = balanced_design(len(uniq), raters.ratings_per_task, quota)
    need = int(rater.max()) + 1
    if need > raters.n_raters:
        raise UserError(f"{len(uniq)} screens x {raters.ratings_per_task} ratings need {need} "
                        f"raters at {quota} screens each; there are {raters.n_raters}")
    tasks_of = pd.Series(np.arange(len(table))).groupby(screen).apply(list)
    r_out, t_out = [], []
    for j, s in zip(rater, order[pos]):
        for t in tasks_of[s]:
            r_out.append(j)
            t_out.append(t)
    return np.array(r_out, int), np.array(t_out, int)


def _effects(v: pd.DataFrame, r: np.ndarray, raters: Raters, model: PreferenceModel,
             rng) -> np.ndarray | None:
    """Per vote (P(left), P(tie), P(right)) with the rater and prompt random effects on d."""
    if raters.rater_sd <= 0 and raters.prompt_sd <= 0:
        return None
    d = np.array([model.strength(q, a) - model.strength(q, b) for q, a, b in
                  zip(v["question_id"], v["left_system"], v["right_system"])])
    a_left = np.where(v["right_label"] == "A", -1.0, 1.0)     # effects favour the task's set A
    codes, uniq = pd.factorize(v["prompt_id"].where(v["prompt_id"] != "", v["task_id"]))
    shift = rng.normal(0, raters.rater_sd, raters.n_raters)[r] if raters.rater_sd > 0 else 0.0
    if raters.prompt_sd > 0:
        shift = shift + rng.normal(0, raters.prompt_sd, len(uniq))[codes]
    d = d + a_left * shift
    w = np.stack([np.exp(d / 2), np.full(len(d), model.tie), np.exp(-d / 2)], 1)
    return w / w.sum(1, keepdims=True)


def _real_votes(table, probs, raters: Raters, careless, rng, model=None) -> pd.DataFrame:
    if raters.ratings_per_task:
        r, t = _screen_assign(table, raters, rng)
    else:
        r, t = _assign(raters.n_raters, len(table), raters.tasks_per_rater, rng)
    v = table.iloc[t].reset_index(drop=True)
    p = probs[t].copy()
    if model is not None:
        varied = _effects(v, r, raters, model, rng)
        p = p if varied is None else varied
    swap = rng.random(len(v)) < 0.5                       # sides per (rater, task)
    p[swap] = p[swap, ::-1]
    lapse = rng.uniform(0, 2 * raters.noise, raters.n_raters)[r]
    codes, uniq = pd.factorize(v["prompt_id"].where(v["prompt_id"] != "", v["task_id"]))
    haze = rng.uniform(0, 2 * raters.prompt_noise, len(uniq))[codes]
    p = (1 - lapse - haze)[:, None] * p + lapse[:, None] / 3 + np.outer(haze, [0, 1, 0])
    p[careless[r]] = 1 / 3
    v["choice"] = np.array(CHOICES)[_draw(p, rng)]
    for a, b in (("left_system", "right_system"), ("left_label", "right_label")):
        v.loc[swap, [a, b]] = v.loc[swap, [b, a]].to_numpy()
    v["rater"] = r
    v["is_control"] = False
    v["control_expected"] = None
    return v


def _control_votes(counts: np.ndarray, raters: Raters, careless, rng) -> pd.DataFrame:
    """Control trials as the app records them: question "control", the original set against
    a corrupted copy on a random side."""
    r = np.repeat(np.arange(len(counts)), counts)
    n = len(r)
    orig_left = rng.random(n) < 0.5
    expected = np.where(orig_left, "left", "right")
    acc = np.where(careless[r], 1 / 3, raters.control_accuracy)
    correct = rng.random(n) < acc
    others = {"left": ("indifferent", "right"), "right": ("left", "indifferent")}
    wrong = np.array([others[e][k] for e, k in zip(expected, rng.integers(0, 2, n))], object)
    return pd.DataFrame({
        "task_id": [f"c-{i:06d}" for i in range(n)],
        "question_id": "control",
        "left_system": np.where(orig_left, "control:original", "control:corrupted"),
        "right_system": np.where(orig_left, "control:corrupted", "control:original"),
        "left_label": np.where(orig_left, "original", "corrupted"),
        "right_label": np.where(orig_left, "corrupted", "original"),
        "category": "", "prompt_id": "", "choice": np.where(correct, expected, wrong),
        "rater": r, "is_control": True, "control_expected": expected})


def simulate_votes(tasks: list[dict], model: PreferenceModel, raters: Raters | None = None, *,
                   seed: int = 0, start: dt.datetime | None = None,
                   app_version: str | None = None) -> pd.DataFrame:
    """Votes of a simulated rater pool on `tasks`, as the store's columns (times in UTC).

    Raters are 'sim-000', 'sim-001', ...; the last `n_careless` of them are the careless ones.
    Each rater's votes, controls interleaved, are spaced by lognormal answer times.
    """
    from .store import APP_VERSION

    raters = raters or Raters()
    if raters.n_raters < 1 or not 0 <= raters.n_careless <= raters.n_raters:
        raise UserError("need at least one rater and 0 <= careless raters <= raters")
    if raters.noise + raters.prompt_noise > 0.5:
        raise UserError("noise + prompt noise must be at most 0.5")
    rng = np.random.default_rng(seed)
    table, probs = _task_table(tasks, model)
    careless = np.arange(raters.n_raters) >= raters.n_raters - raters.n_careless
    if (raters.rater_sd > 0 or raters.prompt_sd > 0) and model.explicit:
        raise UserError("rater and prompt effects need strengths, not explicit probabilities")
    real = _real_votes(table, probs, raters, careless, rng, model)
    per_rater = np.bincount(real["rater"], minlength=raters.n_raters)
    n_ctrl = np.ceil(raters.control_rate * per_rater).astype(int)
    ctrl = _control_votes(n_ctrl, raters, careless, rng)
    v = pd.concat([real, ctrl], ignore_index=True)
    v = v.iloc[np.lexsort((rng.random(len(v)), v["rater"]))].reset_index(drop=True)
    start = start or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    seconds = rng.lognormal(np.log(6.0), 0.5, len(v))
    done = v.assign(s=seconds).groupby("rater")["s"].cumsum().to_numpy() + 60.0 * v["rater"]
    answered = pd.to_datetime(start) + pd.to_timedelta(done, unit="s")
    v["time_answered"] = answered.dt.floor("us")      # the store keeps microseconds
    v["time_shown"] = (answered - pd.to_timedelta(seconds, unit="s")).dt.floor("us")
    v["rater_id"] = [f"sim-{i:03d}" for i in v["rater"]]
    v["app_version"] = app_version or f"{APP_VERSION}+simulated"
    v["shown_order"] = v["left_label"] + "|" + v["right_label"]
    v.insert(0, "id", np.arange(1, len(v) + 1))
    return v.drop(columns="rater")


def fill_store(store, votes: pd.DataFrame, progress: bool = True) -> int:
    """Write simulated votes through `store.record_vote`, one committed row each."""
    from tqdm import tqdm

    rows = votes[list(VOTE_FIELDS)].to_dict("records")
    for row in tqdm(rows, desc="votes", unit="vote", disable=not progress):
        for k in ("time_shown", "time_answered"):
            row[k] = row[k].to_pydatetime()
        row["is_control"] = bool(row["is_control"])
        store.record_vote(**row)
    return len(rows)


# --------------------------------------------------------------------------------- the demo

DEMO_GUIDANCE = (1, 2, 3, 5, 8)
DEMO_MODES = {"none": 0.10, "static": 0.05, "dyn0.995": 0.012}  # fidelity loss per (w - 1)^2


def demo_systems(model_id: str = "tiny") -> list[str]:
    """A guidance x thresholding grid of one model (config keys as bench.sampling writes)."""
    return [f"{model_id}:w{w}-{m}-aug0-ddim64" for m in DEMO_MODES for w in DEMO_GUIDANCE]


def demo_model(model_id: str = "tiny") -> PreferenceModel:
    """Made-up but paper-shaped preferences: alignment grows with the guidance weight; fidelity
    grows a little, then falls at high weights, least with dynamic thresholding (§2.3)."""
    strengths = {"fidelity": {}, "alignment": {}}
    for system in demo_systems(model_id):
        key = system.split(":", 1)[1]
        w = float(key.split("-")[0][1:])
        mode = key.split("-")[1]
        strengths["alignment"][system] = 1.2 * np.log(w)
        strengths["fidelity"][system] = 0.8 * np.log(w) - DEMO_MODES[mode] * (w - 1) ** 2
    return PreferenceModel(strengths, tie=0.5)


# ------------------------------------------------------------------------------ command line

EPILOG = """examples:
  # a guidance x thresholding grid of one model, each config against w3 with dynamic thresholding
  python -m rater.simulate --db /tmp/sim.db --demo
  python -m rater analyze --db /tmp/sim.db --out /tmp/sim_results

  # answer a real tasks file; systems not named have strength 0
  python -m rater.simulate --db ratings_dry.db --tasks tasks.jsonl \\
      --strength tiny:w5-dyn0.995-aug0-ddim64=1.0 --raters 30 --careless 3

  # synthetic tasks for named systems, per-question strengths from a JSON file
  python -m rater.simulate --db sim.db --systems a:w1-none-aug0-ddim64,a:w5-none-aug0-ddim64 \\
      --model model.json    # {"tie": 0.5, "strengths": {"fidelity": {"SYSTEM": 1.0}, ...}}
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rater.simulate", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--db", required=True, metavar="FILE|URL", help="vote store to write to")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tasks", metavar="FILE", help="tasks.jsonl to answer")
    src.add_argument("--systems", metavar="S,...", help="synthetic tasks over these systems")
    src.add_argument("--demo", action="store_true",
                     help="synthetic tasks and preferences of a guidance x thresholding grid")
    p.add_argument("--model", metavar="FILE", help="preference model JSON: tie, strengths")
    p.add_argument("--strength", action="append", default=[], metavar="SYSTEM=S",
                   help="log-strength of a system on every question (repeatable)")
    p.add_argument("--tie", type=float, default=None, help="Davidson tie parameter nu "
                   "(default: the model file's, else 0.5)")
    p.add_argument("--pairs", choices=("all", "reference"), default="all",
                   help="synthetic tasks: every pair, or every system against --reference")
    p.add_argument("--reference", default=None, metavar="SYSTEM",
                   help="the reference system of --pairs reference")
    p.add_argument("--prompts", type=int, default=5, help="synthetic prompts per category")
    p.add_argument("--raters", type=int, default=20, help="raters, careless ones included")
    p.add_argument("--careless", type=int, default=2, help="raters answering at random")
    p.add_argument("--noise", type=float, default=0.1, help="mean lapse rate of a rater")
    p.add_argument("--prompt-noise", type=float, default=0.05,
                   help="mean extra share of 'indifferent' per prompt")
    p.add_argument("--control-rate", type=float, default=0.1, help="controls per real task")
    p.add_argument("--tasks-per-rater", type=int, default=None, metavar="N",
                   help="tasks each rater answers (default: all)")
    p.add_argument("--ratings-per-task", type=int, default=None, metavar="R",
                   help="each screen to R distinct raters, as the app assigns (default: off)")
    p.add_argument("--rater-sd", type=float, default=0.0, metavar="SD",
                   help="SD of raters' random effects on s_A - s_B")
    p.add_argument("--prompt-sd", type=float, default=0.0, metavar="SD",
                   help="SD of prompts' random effects on s_A - s_B")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    return p


def _model_from_args(args) -> PreferenceModel:
    model = PreferenceModel()
    if args.demo:
        model = demo_model()
    if args.model:
        try:
            spec = json.loads(Path(args.model).read_text())
            model = PreferenceModel(spec.get("strengths", {}), float(spec.get("tie", 0.5)))
        except (OSError, ValueError, AttributeError) as e:
            raise UserError(f"--model {args.model}: {e}; expected a JSON object with "
                            '"strengths" ({question: {system: s}} or {system: s}) and "tie"')
    for item in args.strength:
        system, sep, value = item.rpartition("=")
        try:
            model.strengths[system] = float(value)
        except ValueError:
            sep = ""
        if not sep or not system:
            raise UserError(f"--strength {item!r}: expected SYSTEM=NUMBER")
    if args.tie is not None:
        model.tie = args.tie
    return model


def _tasks_from_args(args) -> list[dict]:
    if args.tasks:
        return read_tasks(args.tasks)
    if args.demo:
        systems = demo_systems()
        return synthetic_tasks(systems, pairs="reference", prompts_per_category=args.prompts,
                               reference=args.reference or "tiny:w3-dyn0.995-aug0-ddim64",
                               seed=args.seed)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if len(set(systems)) < 2:
        raise UserError("--systems needs at least two different systems")
    return synthetic_tasks(systems, pairs=args.pairs, reference=args.reference,
                           prompts_per_category=args.prompts, seed=args.seed)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tasks = _tasks_from_args(args)
        model = _model_from_args(args)
        raters = Raters(n_raters=args.raters, n_careless=args.careless, noise=args.noise,
                        prompt_noise=args.prompt_noise, control_rate=args.control_rate,
                        tasks_per_rater=args.tasks_per_rater,
                        ratings_per_task=args.ratings_per_task, rater_sd=args.rater_sd,
                        prompt_sd=args.prompt_sd)
        if args.ratings_per_task is not None and args.ratings_per_task < 1 or \
                args.rater_sd < 0 or args.prompt_sd < 0:
            raise UserError("--ratings-per-task must be >= 1, --rater-sd and --prompt-sd >= 0")
        votes = simulate_votes(tasks, model, raters, seed=args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .store import VoteStore

    store = VoteStore(args.db)
    try:
        n = fill_store(store, votes)
    finally:
        store.close()
    print(f"{n} votes ({int(votes['is_control'].sum())} controls) of {args.raters} simulated "
          f"raters on {len(tasks)} tasks")
    print(f"votes: {args.db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
