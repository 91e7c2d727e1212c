"""Resampling over prompts: bootstrap intervals, paired differences and FID∞ from stored features.

The unit of resampling is the prompt: a prompt's k images move together, and every config of a
run (and two runs made with the same prompts and seeds) is resampled with the same draws, so a
difference between two configs is bootstrapped paired (Efron & Tibshirani 1993, ch. 16).

- Draws: replicate b draws P prompt indices uniformly with replacement (`draw_prompts`); its
  prompt counts weight every image of the prompt. The draws are a function of (seed, P, B) only.
- Intervals (`interval`): 95% percentile interval of the replicates re-centred on the estimate,
  [est - (median - q2.5), est + (q97.5 - median)], clipped to the quantity's range. Resampling
  with duplicates lowers a sample's effective size, and FID is biased upwards in 1/N (Chong &
  Forsyth 2020), so FID's bootstrap distribution sits above the estimate; re-centring removes
  that shift and makes every interval contain its estimate, at any n (one prompt: [est, est]).
  For a mean (CLIP score) the median of the replicates is the estimate up to Monte-Carlo error,
  and this is the plain percentile interval.
- p-values (`p_value`): two-sided bootstrap test of "difference = 0" against the replicates
  centred on their median: (1 + #{|Δ_b - median| >= |Δ|}) / (1 + B). A config against itself
  gives Δ = 0 and p = 1.
- FID of a weighted sample (`FrechetResampler`): mean and unbiased covariance of the multiset
  (image i counted w_i times), Fréchet distance to fixed reference statistics through the
  reference covariance root R (bench.metrics.frechet): tr(S R²)^½ = Σ sqrt(eig(R S R)). With
  Z = (X - x̄) R precomputed, a replicate costs one weighted Gram matrix and one symmetric
  eigenvalue problem, in the d x d space or, when fewer images than dimensions are drawn, in the
  n x n space (the same non-zero eigenvalues), float64 throughout.
- FID∞ (`fid_infinity`): Chong & Forsyth 2020, §3: FID at ≥ 15 sample sizes between N/5 and N,
  a least-squares line in 1/N, FID∞ = its intercept. The estimate uses nested random subsets of
  the prompts (a seeded permutation, without replacement); a bootstrap replicate uses the
  nested prefixes of its own draw sequence (the first n draws of a bootstrap sample are a
  bootstrap sample of size n), so each replicate costs one Gram pass plus one eigenvalue
  problem per size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .frechet import ReferenceRoot, min_rank, sqrt_eigen_sum

LEVEL = 0.95
FID_INF_MIN_PROMPTS = 10   # N/5 must leave at least 2 prompts for the smallest subset


# ------------------------------------------------------------------------------------ draws

def draw_prompts(n_prompts: int, replicates: int, seed: int) -> np.ndarray:
    """(B, P) prompt indices drawn uniformly with replacement; a function of its arguments only."""
    rng = np.random.default_rng([int(seed), int(n_prompts), int(replicates)])
    return rng.integers(0, n_prompts, size=(replicates, n_prompts))


def counts_of(draws: np.ndarray, n_prompts: int) -> np.ndarray:
    """(B, P) times each prompt was drawn, from (B, n) draws."""
    draws = np.atleast_2d(draws)
    out = np.zeros((len(draws), n_prompts), dtype=np.int64)
    rows = np.repeat(np.arange(len(draws)), draws.shape[1])
    np.add.at(out, (rows, draws.ravel()), 1)
    return out


# ------------------------------------------------------------------------------- intervals

def interval(estimate: float, replicates, *, low: float = -math.inf, high: float = math.inf,
             level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of `replicates` re-centred on `estimate`, clipped to [low, high].

    Contains the estimate whenever the estimate is finite and in range; (nan, nan) without
    finite replicates or with a non-finite estimate.
    """
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if not math.isfinite(estimate) or reps.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    q_lo, med, q_hi = np.quantile(reps, [alpha, 0.5, 1.0 - alpha])
    lo = estimate - max(med - q_lo, 0.0)
    hi = estimate + max(q_hi - med, 0.0)
    lo, hi = min(max(lo, low), estimate), max(min(hi, high), estimate)
    return float(lo), float(hi)


def p_value(estimate: float, replicates) -> float:
    """Two-sided bootstrap p-value of H0: difference 0 (replicates centred on their median)."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if not math.isfinite(estimate) or reps.size == 0:
        return math.nan
    centred = np.abs(reps - np.median(reps))
    hits = int((centred >= abs(estimate)).sum())
    return min(1.0, (1 + hits) / (1 + reps.size))


# -------------------------------------------------------------------------------- CLIP score

@dataclass
class PromptMeans:
    """A per-image score grouped by prompt: its image-weighted mean over any prompt counts."""

    sums: np.ndarray     # (P,) sum of the score over the prompt's images
    sizes: np.ndarray    # (P,) images of the prompt in this config

    @classmethod
    def of(cls, values: Sequence[float], codes: Sequence[int], n_prompts: int) -> "PromptMeans":
        values = np.asarray(values, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        return cls(np.bincount(codes, values, n_prompts), np.bincount(codes, None, n_prompts))

    @property
    def estimate(self) -> float:
        n = self.sizes.sum()
        return float(self.sums.sum() / n) if n else math.nan

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        """(B,) means under (B, P) prompt counts."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ self.sums) / (counts @ self.sizes)


# ----------------------------------------------------------------------------------- FID


class FrechetResampler:
    """FID of weighted multisets of one config's images against fixed reference statistics."""

    def __init__(self, features, reference: ReferenceRoot, device: str | torch.device = "cpu"):
        """Args:
            features: (N, d) features of the config's images (float32 or float64, memmap ok).
            reference: the reference statistics with their covariance root.
            device: where the float64 linear algebra runs (a GPU makes replicates cheap).
        """
        dev = torch.device(device)
        # a float64 copy (a memmap stays read-only)
        x = torch.as_tensor(np.array(features, dtype=np.float64), device=dev)
        if x.ndim != 2 or x.shape[1] != reference.mu.shape[0]:
            raise ValueError(f"features {tuple(x.shape)} do not match the reference's "
                             f"{reference.mu.shape[0]} dimensions")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or infinite values")
        self.n, self.d = x.shape
        self.device = dev
        self.mean = x.mean(0)                                            # (d,)
        self.y = x - self.mean                                           # (N, d) centred
        del x
        self.z = self.y @ torch.as_tensor(reference.root, dtype=torch.float64, device=dev)
        self.sq = (self.y * self.y).sum(1)                               # (N,) |y_i|²
        self.offset = self.mean - torch.as_tensor(reference.mu, dtype=torch.float64, device=dev)
        self.ref_trace = reference.trace
        self.ref_rank = getattr(reference, "rank", None)

    def _tensor(self, weights) -> torch.Tensor:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64), device=self.device)
        if w.shape != (self.n,):
            raise ValueError(f"weights of shape {tuple(w.shape)} for {self.n} images")
        return w

    def fid(self, weights=None) -> float:
        """FID of the multiset in which image i appears weights[i] times (None: each once)."""
        w = torch.ones(self.n, dtype=torch.float64, device=self.device) if weights is None \
            else self._tensor(weights)
        nz = torch.nonzero(w > 0).squeeze(1)
        w = w[nz]
        total = float(w.sum())
        if total < 2:
            return math.nan
        ybar = (w @ self.y[nz]) / total                                  # (d,)
        zbar = (w @ self.z[nz]) / total
        trace = (float(w @ self.sq[nz]) - total * float(ybar @ ybar)) / (total - 1)
        a = self.z[nz] * w.sqrt()[:, None]                               # (n', d)
        if len(nz) < self.d:  # the n' x n' Gram space has the same non-zero eigenvalues
            u = w.sqrt() / math.sqrt(total)                              # unit vector
            k = a @ a.T
            ku = k @ u
            m = k - ku[:, None] * u[None, :] - u[:, None] * ku[None, :] + \
                float(u @ ku) * (u[:, None] * u[None, :])                # P K P, P = I - u uᵀ
        else:
            m = a.T @ a - total * torch.outer(zbar, zbar)
        return self._distance(ybar, trace, m / (total - 1), len(nz) - 1)

    def _distance(self, ybar: torch.Tensor, trace: float, m: torch.Tensor, rank: int) -> float:
        """FD from the mean offset, tr S and the symmetric R S R (or its Gram twin) whose rank is
        at most `rank` (distinct images - 1): only that many eigenvalues are kept."""
        lam = torch.linalg.eigvalsh((m + m.T) / 2).cpu().numpy()
        tr_sqrt = sqrt_eigen_sum(lam, min_rank(rank, self.ref_rank))
        diff = self.offset + ybar
        return float(diff @ diff) + trace + self.ref_trace - 2.0 * tr_sqrt

    def nested(self, sequence: np.ndarray, sizes: Sequence[int],
               groups: "PromptIndex") -> np.ndarray:
        """FIDs of the nested prefixes sequence[:s] (prompt indices, repeats allowed), s in sizes."""
        sizes = list(sizes)

        def weights(part: np.ndarray) -> np.ndarray:
            return groups.image_weights(counts_of(part, groups.n_prompts)[0])

        if self.n < self.d or len(sizes) < 2:  # small samples: each prefix directly (cheap)
            return np.array([self.fid(weights(sequence[:s])) for s in sizes])
        dev = self.device
        gram = torch.zeros(self.d, self.d, dtype=torch.float64, device=dev)
        ysum = torch.zeros(self.d, dtype=torch.float64, device=dev)
        zsum = torch.zeros(self.d, dtype=torch.float64, device=dev)
        qsum, total, start, out = 0.0, 0.0, 0, []
        seen = torch.zeros(self.n, dtype=torch.bool, device=dev)  # distinct images so far
        for s in sizes:
            w = torch.as_tensor(weights(sequence[start:s]), dtype=torch.float64, device=dev)
            nz = torch.nonzero(w > 0).squeeze(1)
            w = w[nz]
            seen[nz] = True
            a = self.z[nz] * w.sqrt()[:, None]
            gram += a.T @ a
            ysum += w @ self.y[nz]
            zsum += w @ self.z[nz]
            qsum += float(w @ self.sq[nz])
            total += float(w.sum())
            start = s
            if total < 2:
                out.append(math.nan)
                continue
            ybar, zbar = ysum / total, zsum / total
            trace = (qsum - total * float(ybar @ ybar)) / (total - 1)
            m = (gram - total * torch.outer(zbar, zbar)) / (total - 1)
            out.append(self._distance(ybar, trace, m, int(seen.sum()) - 1))
        return np.array(out)


@dataclass
class PromptIndex:
    """Which prompt each image belongs to (codes into the run's prompt list)."""

    codes: np.ndarray    # (N,) prompt index of each image
    n_prompts: int

    def image_weights(self, counts: np.ndarray) -> np.ndarray:
        """(N,) image weights from (P,) prompt counts: every image of a prompt moves with it."""
        return np.asarray(counts)[self.codes]

    def images_in(self, sizes_in_prompts: Sequence[int]) -> list[float]:
        """Expected images of a prefix of s prompts (s times the mean images per prompt)."""
        per = len(self.codes) / max(len(np.unique(self.codes)), 1)
        return [s * per for s in sizes_in_prompts]


# ------------------------------------------------------------------------------------ FID∞

def fid_inf_sizes(n_prompts: int, points: int = 15) -> list[int]:
    """Distinct subset sizes (prompts) evenly spaced between P/5 and P; [] when P is too small."""
    if n_prompts < FID_INF_MIN_PROMPTS or points < 2:
        return []
    sizes = np.unique(np.round(np.linspace(n_prompts / 5, n_prompts, points)).astype(int))
    return [int(s) for s in sizes if s >= 2]


def line_fit(n_images: Sequence[float], fids: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line FID = a + b / N."""
    x = 1.0 / np.asarray(n_images, dtype=np.float64)
    y = np.asarray(fids, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return float(intercept), float(slope)


def fid_infinity(resampler: FrechetResampler, groups: PromptIndex, sizes: Sequence[int],
                 seed: int) -> tuple[float, float, np.ndarray]:
    """(FID∞, slope, FID at each size) from nested random subsets of prompts, no replacement."""
    rng = np.random.default_rng([int(seed), groups.n_prompts, 15])
    order = rng.permutation(groups.n_prompts)
    fids = resampler.nested(order, sizes, groups)
    intercept, slope = line_fit(groups.images_in(sizes), fids)
    return intercept, slope, fids
