"""The distribution metrics a run can ask for with `--metrics`, on any registered feature network.

    fid[:NET]     Fréchet distance (bench.metrics.frechet); `fd-dinov2` is `fid:dinov2`
    kid[:NET]     KID, mean and standard deviation over subsets (torchmetrics' own)
    cmmd[:NET]    CMMD (Jayasumana et al. 2024; bench.metrics.cmmd), default network `clip`
    prdc[:NET]    precision, recall, density, coverage (bench.metrics.prdc), default `dinov2`
    clip_score    the paper's CLIP score (per-image cosines of the CLIP scorer, not a network here)

A metric without a network takes the command's default for its kind (`--fid-network`,
`--cmmd-network`, `--prdc-features`; on a plugin's data, the plugin's). `fid` on the FID network
is the paper's FID and keeps the summary's `fid*` columns (with FID∞); every other metric
writes columns named after quantity and network: `fid_dinov2`, `cmmd_clip`, `precision_dinov2`,
each with `_ci_low` / `_ci_high`, bootstrapped over prompts with the run's shared draws.

Each kind is one entry of KINDS (`register_metric` adds one): the quantities it reports, their
range (for the intervals), which direction is better, and `compute(features, codes, reference,
counts, options)` -> {quantity: (estimate, replicates)} from stored features alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .networks import column_suffix

ALIASES = {"fd-dinov2": "fid:dinov2", "fd_dinov2": "fid:dinov2"}
CLIP_SCORE = "clip_score"


@dataclass(frozen=True)
class MetricKind:
    """A distribution metric computed from stored features and reference features/statistics."""

    name: str
    quantities: tuple[str, ...]
    ranges: dict                         # quantity -> (low, high) of its intervals
    lower_is_better: dict                # quantity -> bool
    compute: Callable                    # compute(features, codes, reference, counts, options, cache)
    default_flag: str                    # the args attribute naming its default network
    needs_features: bool = True          # reference features (else mean and covariance suffice)
    bootstrapped: tuple[str, ...] | None = None   # quantities with intervals (None: all)

    def has_interval(self, quantity: str) -> bool:
        return quantity in (self.quantities if self.bootstrapped is None else self.bootstrapped)


KINDS: dict[str, MetricKind] = {}


def register_metric(kind: MetricKind) -> None:
    KINDS[kind.name] = kind


@dataclass(frozen=True)
class MetricSpec:
    """One metric on one network, as `--metrics` names it."""

    kind: str
    network: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.network}"

    def column(self, quantity: str) -> str:
        return f"{quantity}_{column_suffix(self.network)}"

    def columns(self) -> list[str]:
        k = KINDS[self.kind]
        out = []
        for q in k.quantities:
            out.append(self.column(q))
            if k.has_interval(q):
                out += [self.column(q) + "_ci_low", self.column(q) + "_ci_high"]
        return out


@dataclass
class MetricPlan:
    """What `--metrics` asks for: the paper's FID (on `fid_network`) and KID, CLIP score, and the rest."""

    fid_network: str | None          # the summary's `fid*` columns (None: no FID)
    kid: bool                        # KID on the FID network (`kid`, `kid_std` columns)
    clip_score: bool
    extra: list[MetricSpec] = field(default_factory=list)

    def networks(self) -> list[str]:
        """Every network whose features the run stores, the FID network first."""
        out = [self.fid_network] if self.fid_network else []
        for s in self.extra:
            if s.network not in out:
                out.append(s.network)
        return out

    def feature_networks(self) -> set[str]:
        """Networks whose reference features (not only statistics) are needed."""
        out = {s.network for s in self.extra if KINDS[s.kind].needs_features}
        if self.kid and self.fid_network:
            out.add(self.fid_network)
        return out

    def record(self) -> dict:
        return {"fid_network": self.fid_network, "kid": self.kid, "clip_score": self.clip_score,
                "extra": [s.label for s in self.extra]}

    @classmethod
    def from_record(cls, record: dict) -> "MetricPlan":
        extra = [MetricSpec(*label.split(":", 1)) for label in record.get("extra", [])]
        return cls(record.get("fid_network"), bool(record.get("kid")),
                   bool(record.get("clip_score", True)), extra)


def parse_metrics(text: str, defaults: dict[str, str], *, kid: bool = False) -> MetricPlan:
    """A MetricPlan from `--metrics` (comma list) and the default network of each kind.

    Args:
        text: e.g. "fid,clip_score", "cmmd,fd-dinov2,prdc:inception".
        defaults: kind -> default network ("fid" is the paper's FID network).
        kid: --kid given (KID on the FID network).
    Raises:
        ValueError: an unknown metric, or a metric twice.
    """
    fid_network = defaults.get("fid")
    plan = MetricPlan(None, False, False)
    seen = set()
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        item = ALIASES.get(item, item)
        if item == CLIP_SCORE:
            plan.clip_score = True
            continue
        kind, _, network = item.partition(":")
        if kind not in KINDS:
            raise ValueError(f"--metrics: unknown metric {item!r} (known: "
                             f"{', '.join(sorted(KINDS) + [CLIP_SCORE, 'fd-dinov2'])}; "
                             "a metric may name its network: fid:dinov2)")
        network = network or defaults.get(kind)
        if not network:
            raise ValueError(f"--metrics: {kind} needs a network ({kind}:NAME)")
        if (kind, network) in seen:
            raise ValueError(f"--metrics: {kind}:{network} given twice")
        seen.add((kind, network))
        if kind == "fid" and network == fid_network and plan.fid_network is None:
            plan.fid_network = network
        elif kind == "kid" and network == fid_network:
            plan.kid = True
        else:
            plan.extra.append(MetricSpec(kind, network))
    if kid:
        if fid_network is None:
            raise ValueError("--kid needs an FID network")
        plan.kid = True
    if plan.kid and plan.fid_network is None:  # KID rides on the FID network's stored features
        plan.fid_network = fid_network
    return plan


# --------------------------------------------------------------------------------- kinds

def _image_weights(codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, n) image weights: each image weighs its prompt's count in the replicate."""
    return np.asarray(counts)[:, np.asarray(codes)] if len(counts) else np.zeros((0, len(codes)))


def _fid(features, codes, reference, counts, options, cache):
    from .frechet import ReferenceRoot
    from .resample import FrechetResampler

    key = ("root", id(reference))
    if key not in cache:
        cache[key] = ReferenceRoot.of(reference)
    res = FrechetResampler(features, cache[key], options.device)
    reps = np.array([res.fid(w) for w in _image_weights(codes, counts)])
    return {"fid": (res.fid(), reps)}


def _kid(features, codes, reference, counts, options, cache):
    from .fid import kid_of

    mean, std = kid_of(features, reference.features, subsets=options.kid_subsets,
                       subset_size=options.kid_subset_size, seed=options.seed)
    return {"kid": (mean, np.zeros(0)), "kid_std": (std, np.zeros(0))}


def _cmmd(features, codes, reference, counts, options, cache):
    from .cmmd import CMMD

    key = ("cmmd", id(reference))
    if key not in cache:
        cache[key] = CMMD(reference.features, device=options.device)
    metric = cache[key]
    x = np.asarray(features)
    reps = metric.replicates(x, _image_weights(codes, counts)) if len(counts) else np.zeros(0)
    return {"cmmd": (metric.value(x), np.asarray(reps, dtype=np.float64))}


PRDC_QUANTITIES = ("precision", "recall", "density", "coverage")


def _prdc(features, codes, reference, counts, options, cache):
    from .prdc import K_DC, K_PR, PRDC, subsample

    if len(reference.features) <= max(K_PR, K_DC) or len(features) <= max(K_PR, K_DC):
        # no k-th neighbour on one side: not defined, left empty
        return {q: (math.nan, np.full(len(counts), math.nan)) for q in PRDC_QUANTITIES}
    key = ("prdc", id(reference))
    if key not in cache:
        cache[key] = PRDC(reference.features, max_samples=options.prdc_samples, seed=options.seed)
    metric = cache[key]
    rows = subsample(np.asarray(features), options.prdc_samples, options.seed)
    fake = np.asarray(features)[rows]
    point = metric.compute(fake)
    reps = metric.replicates(fake, _image_weights(np.asarray(codes)[rows], counts)) \
        if len(counts) else {q: np.zeros(0) for q in PRDC_QUANTITIES}
    return {q: (float(point[q]), np.asarray(reps[q], dtype=np.float64)) for q in PRDC_QUANTITIES}


register_metric(MetricKind("fid", ("fid",), {"fid": (0.0, math.inf)}, {"fid": True}, _fid,
                           "fid_network", needs_features=False))
register_metric(MetricKind("kid", ("kid", "kid_std"), {}, {"kid": True}, _kid, "fid_network",
                           bootstrapped=()))
register_metric(MetricKind("cmmd", ("cmmd",), {"cmmd": (-math.inf, math.inf)}, {"cmmd": True},
                           _cmmd, "cmmd_network"))
register_metric(MetricKind("prdc", PRDC_QUANTITIES,
                           {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, math.inf),
                            "coverage": (0.0, 1.0)},
                           {q: False for q in PRDC_QUANTITIES}, _prdc, "prdc_features"))


def spec_stats(spec: MetricSpec, features, codes: Sequence[int], reference, counts: np.ndarray,
               options, cache: dict) -> tuple[dict, dict]:
    """(summary columns, {column: replicates}) of one metric of one config."""
    from .resample import interval

    kind = KINDS[spec.kind]
    values = kind.compute(features, np.asarray(codes), reference, counts, options, cache)
    row, reps = {}, {}
    for q, (estimate, replicates) in values.items():
        col = spec.column(q)
        row[col] = float(estimate)
        if kind.has_interval(q):
            low, high = kind.ranges.get(q, (-math.inf, math.inf))
            row[col + "_ci_low"], row[col + "_ci_high"] = \
                interval(float(estimate), replicates, low=low, high=high) if len(replicates) \
                else (math.nan, math.nan)
            reps[col] = np.asarray(replicates, dtype=np.float64)
    return row, reps
