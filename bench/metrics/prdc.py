"""Precision and recall (Kynkäänniemi et al., NeurIPS 2019, k = 3) and density and coverage
(Naeem et al., ICML 2020, k = 5) of generated ("fake") features against reference ("real") ones.

Definitions as in the `prdc` package (Naeem et al.'s code), with r_k(z) the Euclidean distance
from z to its k-th nearest neighbour in its own set (itself excluded) and B(z, r) the open ball:

    precision = 1/N Σ_j  1[∃ i: Y_j ∈ B(X_i, r_kpr(X_i))]           (fake in some real ball)
    recall    = 1/M Σ_i  1[∃ j: X_i ∈ B(Y_j, r_kpr(Y_j))]           (real in some fake ball)
    density   = 1/(k_dc N) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_kdc(X_i))]      (Naeem et al., Eq. 3)
    coverage  = 1/M Σ_i  1[min_j ||X_i - Y_j|| < r_kdc(X_i)]         (Naeem et al., Eq. 4)

for M real features X and N fake features Y. The papers use k = 3 for precision/recall and
k = 5 for density/coverage (`k_pr`, `k_dc`); `nearest_k` sets both to one k, which is what
`prdc.compute_prdc(real, fake, nearest_k)` computes (and the tests compare against).

Size. Each side is capped at `max_samples` rows (10,000 by default) by `subsample`, a seeded
choice without replacement, returned sorted so row order (and the prompt codes carried along by
the caller) is kept; the rows used are a function of (seed, n, max_samples) only.

Memory. Distances are computed over block x block tiles (torch, float64, on `device`); the
k-nearest-neighbour radii keep a running top-k per row (O(N k)), the real-fake pass keeps per-fake
counts and two sparse incidence matrices (real i x fake j: "fake j in real i's k_dc ball" for
coverage, "real i in fake j's k_pr ball" for recall), whose entries number about k per row for
features of one distribution. No N x M matrix exists at once: O(block² + (N + M)·(d + k) + nnz).

Bootstrap over prompts (`PRDC.replicates`). The fake side is resampled with integer image counts
w (a (B, N) matrix; W = Σ w). Both radii stay those of the full sets (real and fake):

- precision and density are means over fake images, so a replicate is the w-weighted mean; this
  equals the definition applied to the explicitly duplicated fake rows.
- coverage asks whether real i's nearest fake lies in its ball: under a replicate, whether any
  fake with w_j > 0 does. Also equal to the definition on duplicated rows (real radii are fixed
  and duplicates do not move the nearest fake).
- recall asks whether real i lies in the ball of any fake with w_j > 0, with the fake radii of
  the full fake set. On duplicated rows the definition would shrink the fake radii (a copy is a
  neighbour at distance 0), so recall replicates are not the definition on duplicated rows: they
  resample which fake balls are present, not their size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .cmmd import check_features, check_weights

K_PR = 3
K_DC = 5
MAX_SAMPLES = 10_000
BLOCK = 2048


def subsample(x, max_samples: int = MAX_SAMPLES, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most `max_samples` rows of `x` (an array or a row count), drawn
    without replacement by a generator seeded with (seed, n, max_samples); all rows if n fits."""
    n = int(x) if np.ndim(x) == 0 else len(x)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    if n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng([int(seed), n, int(max_samples)])
    return np.sort(rng.choice(n, size=int(max_samples), replace=False))


# ------------------------------------------------------------------------------- distances

def _spans(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def _distance_tile(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor,
                   b_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (len(a), len(b)) from the norm expansion, clipped at 0."""
    return torch.addmm(a_sq[:, None], a, b.T, alpha=-2.0).add_(b_sq).clamp_(min=0.0).sqrt_()


def _keep_smallest(best: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest of each row of [best | d], ascending."""
    return torch.topk(torch.cat([best, d], 1), k, dim=1, largest=False).values


def knn_radii(x: torch.Tensor, ks, block: int = BLOCK) -> dict[int, np.ndarray]:
    """{k: (n,) distance from each row to its k-th nearest other row} for every k in `ks`.

    Tiles j >= i only (distances are symmetric): each tile updates the running top-k of its
    rows and, transposed, of its columns.
    """
    kmax = max(ks)
    n = len(x)
    sq = (x * x).sum(1)
    best = torch.full((n, kmax), math.inf, dtype=torch.float64, device=x.device)
    spans = _spans(n, block)
    for a, (i0, i1) in enumerate(spans):
        for j0, j1 in spans[a:]:
            d = _distance_tile(x[i0:i1], x[j0:j1], sq[i0:i1], sq[j0:j1])
            if i0 == j0:
                d.fill_diagonal_(math.inf)  # self is not a neighbour
            best[i0:i1] = _keep_smallest(best[i0:i1], d, kmax)
            if i0 != j0:
                best[j0:j1] = _keep_smallest(best[j0:j1], d.T, kmax)
    return {k: best[:, k - 1].cpu().numpy() for k in ks}


# ------------------------------------------------------------------------------- fake side

@dataclass
class FakeIncidence:
    """What the metrics need of one fake set: fixed across bootstrap replicates."""

    in_real_ball: np.ndarray   # (N,) bool: fake j lies in some real k_pr ball (precision)
    real_balls: np.ndarray     # (N,) int64: real k_dc balls containing fake j (density)
    covers: sp.csr_matrix      # (M, N): fake j in real i's k_dc ball (coverage)
    covered_by: sp.csr_matrix  # (M, N): real i in fake j's k_pr ball (recall)
    n_fake_total: int          # fake rows before subsampling
    rows: np.ndarray | None    # rows of the given fake array used (None: all)

    @property
    def n_fake(self) -> int:
        return len(self.in_real_ball)


def _sparse(parts: list[np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    ij = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int32)
    return sp.csr_matrix((np.ones(len(ij), dtype=np.int32), (ij[:, 0], ij[:, 1])), shape=shape)


def _nonzero(mask: torch.Tensor, i0: int, j0: int) -> np.ndarray:
    """(nnz, 2) int32 (row, column) of a tile's True entries, offset to global indices."""
    ij = torch.nonzero(mask).cpu().numpy().astype(np.int32)
    ij += np.array([i0, j0], dtype=np.int32)
    return ij


# ------------------------------------------------------------------------------------ PRDC

class PRDC:
    """Precision, recall, density and coverage against one reference set (radii computed once)."""

    def __init__(self, reference, *, k_pr: int = K_PR, k_dc: int = K_DC,
                 nearest_k: int | None = None, max_samples: int = MAX_SAMPLES, seed: int = 0,
                 block: int = BLOCK, device: str | torch.device = "cpu"):
        """Args:
            reference: (M, d) real features (e.g. DINOv2 or Inception features of real images).
            k_pr: neighbourhood of precision and recall (Kynkäänniemi et al.: 3).
            k_dc: neighbourhood of density and coverage (Naeem et al.: 5).
            nearest_k: one k for all four (the `prdc` package's single `nearest_k`); overrides
                k_pr and k_dc.
            max_samples: rows kept of each side (`subsample`); record it with the seed.
            seed: seed of the subsampling.
            block: rows and columns of one distance tile (memory ~ block² float64).
            device: where the distance tiles are computed.
        """
        if nearest_k is not None:
            k_pr = k_dc = nearest_k
        for name, k in (("k_pr", k_pr), ("k_dc", k_dc)):
            if int(k) != k or k < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {k}")
        if int(block) < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.k_pr, self.k_dc = int(k_pr), int(k_dc)
        self.max_samples, self.seed, self.block = int(max_samples), int(seed), int(block)
        self.device = torch.device(device)
        self.n_real_total = _rows(reference, "reference")
        self.reference_rows = subsample(self.n_real_total, self.max_samples, self.seed)
        real = check_features(_take(reference, self.reference_rows), "reference",
                              min_rows=max(self.k_pr, self.k_dc) + 1)
        self.d = real.shape[1]
        self.real = torch.as_tensor(real, dtype=torch.float64, device=self.device)
        radii = knn_radii(self.real, {self.k_pr, self.k_dc}, self.block)
        self.real_radii_pr, self.real_radii_dc = radii[self.k_pr], radii[self.k_dc]

    @property
    def n_real(self) -> int:
        return len(self.real)

    def incidence(self, fake) -> FakeIncidence:
        """The fake set's ball memberships (subsampled to max_samples rows when larger)."""
        n_total = _rows(fake, "fake")
        rows = subsample(n_total, self.max_samples, self.seed)
        used = None if len(rows) == n_total else rows
        y = check_features(_take(fake, rows), "fake", min_rows=self.k_pr + 1, dims=self.d)
        yt = torch.as_tensor(y, dtype=torch.float64, device=self.device)
        fake_radii = torch.as_tensor(knn_radii(yt, [self.k_pr], self.block)[self.k_pr],
                                     device=self.device)
        r_pr = torch.as_tensor(self.real_radii_pr, device=self.device)
        r_dc = torch.as_tensor(self.real_radii_dc, device=self.device)
        n, m = len(yt), self.n_real
        in_ball = torch.zeros(n, dtype=torch.bool, device=self.device)
        counts = torch.zeros(n, dtype=torch.int64, device=self.device)
        covers, covered = [], []
        x_sq, y_sq = (self.real * self.real).sum(1), (yt * yt).sum(1)
        for i0, i1 in _spans(m, self.block):
            for j0, j1 in _spans(n, self.block):
                d = _distance_tile(self.real[i0:i1], yt[j0:j1], x_sq[i0:i1], y_sq[j0:j1])
                dc = d < r_dc[i0:i1, None]                       # fake j in real i's k_dc ball
                pr = dc if self.k_pr == self.k_dc else d < r_pr[i0:i1, None]
                in_ball[j0:j1] |= pr.any(0)
                counts[j0:j1] += dc.sum(0)
                covers.append(_nonzero(dc, i0, j0))
                covered.append(_nonzero(d < fake_radii[None, j0:j1], i0, j0))
        return FakeIncidence(in_ball.cpu().numpy(), counts.cpu().numpy(),
                             _sparse(covers, (m, n)), _sparse(covered, (m, n)), n_total, used)

    def compute(self, fake) -> dict:
        """Precision, recall, density, coverage of `fake` ((N, d) features or its incidence).

        Returns:
            dict of the four floats, n_real and n_fake (rows used), n_real_total and
            n_fake_total (rows given), k_pr, k_dc, max_samples and seed.
        """
        inc = fake if isinstance(fake, FakeIncidence) else self.incidence(fake)
        reps = self._replicates(inc, np.ones((1, inc.n_fake), dtype=np.int64))
        return {**{name: float(v[0]) for name, v in reps.items()},
                "n_real": self.n_real, "n_fake": inc.n_fake, "n_real_total": self.n_real_total,
                "n_fake_total": inc.n_fake_total, "k_pr": self.k_pr, "k_dc": self.k_dc,
                "max_samples": self.max_samples, "seed": self.seed}

    def replicates(self, fake, weights) -> dict[str, np.ndarray]:
        """The four metrics of B weighted multisets of the fake images (module doc).

        Args:
            fake: (N, d) fake features with N <= max_samples (subsample first, carrying the
                prompt codes along: rows = subsample(len(x), max_samples, seed)), or the
                FakeIncidence of such a set.
            weights: (B, N) non-negative integer image counts; a row without images gives NaN.
        Returns:
            {"precision", "recall", "density", "coverage"}: (B,) float64 arrays.
        """
        if not isinstance(fake, FakeIncidence):
            n = _rows(fake, "fake")
            if n > self.max_samples:
                raise ValueError(f"fake: {n} rows > max_samples = {self.max_samples}; subsample "
                                 "first (rows = subsample(len(fake), max_samples, seed)) and "
                                 "weight those rows")
            fake = self.incidence(fake)
        return self._replicates(fake, check_weights(weights, fake.n_fake))

    def _replicates(self, inc: FakeIncidence, w: np.ndarray) -> dict[str, np.ndarray]:
        total = w.sum(1).astype(np.float64)
        present = (w > 0).astype(np.int32).T                            # (N, B)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = (w @ inc.in_real_ball.astype(np.int64)) / total
            density = (1.0 / self.k_dc) * ((w @ inc.real_balls) / total)
        recall = (inc.covered_by @ present > 0).mean(0)
        coverage = (inc.covers @ present > 0).mean(0)
        empty = total == 0
        recall[empty] = coverage[empty] = np.nan
        return {"precision": precision, "recall": recall, "density": density,
                "coverage": coverage}


def _rows(x, name: str) -> int:
    if np.ndim(x) != 2:
        raise ValueError(f"{name}: expected a 2-D (n, d) array of features, got shape "
                         f"{np.shape(x)}")
    return len(x)


def _take(x, rows: np.ndarray):
    """x[rows], without a copy when every row is used."""
    return x if len(rows) == len(x) else np.asarray(x)[rows]


def compute_prdc(real, fake, nearest_k: int, **kwargs) -> dict:
    """All four metrics with one k, like `prdc.compute_prdc` (PRDC's keywords)."""
    return PRDC(real, nearest_k=nearest_k, **kwargs).compute(fake)
