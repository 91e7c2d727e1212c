"""The Fréchet distance between Gaussians, exact and fast: symmetric eigendecompositions only.

    FD = ||mu1 - mu2||² + tr S1 + tr S2 - 2 tr (S1 S2)^½        (Dowson & Landau 1982)

The trace term is computed without a general matrix square root and without the eigenvalues of
the non-symmetric product S1 S2 (torchmetrics, torch-fidelity) or `scipy.linalg.sqrtm`
(clean-fid, pytorch-fid; slow, and its `disp` argument is gone in scipy 1.18): with R = S2^½
(symmetric, from one `eigh` of S2), S1 S2 = (S1 R) R has the same non-zero eigenvalues as
R S1 R, which is symmetric positive semi-definite, so

    tr (S1 S2)^½ = Σ sqrt(λ_i(R S1 R)),   λ from one `eigvalsh`.

The reference root R is computed once and cached with the reference statistics
(`ReferenceRoot`), so each FID, and each bootstrap replicate, costs two matrix products and one
symmetric eigenvalue problem in float64.

Rank-deficient covariances (fewer images than dimensions, n <= d): R S1 R has rank at most
min(n1 - 1, n2 - 1), and its d - rank null eigenvalues come out of `eigvalsh` as rounding of
about ±eps·λmax. Their square roots are not small (sqrt(eps) ~ 1e-8 relative each; summed over
a thousand null directions of a steep spectrum, 1e-5 of FD, the error of every d x d route,
scipy's sqrtm included). Given the sample sizes (`rank`), only the `rank` largest eigenvalues
are kept, which removes that error; negative rounding is clipped at 0 in any case.
"""
from __future__ import annotations

import numpy as np


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (eigenvalues clipped at 0)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    sym = (sigma + sigma.T) / 2.0
    lam, vec = np.linalg.eigh(sym)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def min_rank(*ranks: int | None) -> int | None:
    """The smallest of the known ranks (None: unknown)."""
    known = [int(r) for r in ranks if r is not None]
    return min(known) if known else None


def sqrt_eigen_sum(lam: np.ndarray, rank: int | None = None) -> float:
    """Σ sqrt(λ) over ascending eigenvalues `lam`, keeping the `rank` largest (None: all)."""
    lam = np.clip(np.asarray(lam, dtype=np.float64), 0.0, None)
    if rank is not None and rank < len(lam):
        lam = lam[len(lam) - max(rank, 0):]
    return float(np.sqrt(lam).sum())


def trace_sqrt_product(sigma1: np.ndarray, root2: np.ndarray, rank: int | None = None) -> float:
    """tr (S1 S2)^½ from S1 and R = S2^½: Σ sqrt(eigvalsh(R S1 R)), float64; `rank` bounds
    the rank of S1 S2 (sample sizes - 1) when known."""
    m = root2 @ np.asarray(sigma1, dtype=np.float64) @ root2
    return sqrt_eigen_sum(np.linalg.eigvalsh((m + m.T) / 2.0), rank)


class ReferenceRoot:
    """Reference statistics with their covariance root, for many FIDs against one reference."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, root: np.ndarray | None = None,
                 rank: int | None = None):
        """`rank`: an upper bound of sigma's rank (reference images - 1), when known."""
        self.rank = rank
        self.mu = np.asarray(mu, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.root = sqrt_psd(self.sigma) if root is None else np.asarray(root, dtype=np.float64)
        self.trace = float(np.trace(self.sigma))

    @classmethod
    def of(cls, stats) -> "ReferenceRoot":
        """From reference statistics with `mu`, `sigma`, `n` and an optional cached `root`."""
        n = getattr(stats, "n", None)
        return cls(stats.mu, stats.sigma, getattr(stats, "root", None),
                   None if n is None else int(n) - 1)

    def distance(self, mu: np.ndarray, sigma: np.ndarray, rank: int | None = None) -> float:
        """FD of N(mu, sigma) to this reference; `rank` bounds sigma's rank (images - 1)."""
        mu = np.asarray(mu, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        diff = mu - self.mu
        value = (diff @ diff + np.trace(sigma) + self.trace
                 - 2.0 * trace_sqrt_product(sigma, self.root, min_rank(rank, self.rank)))
        return float(value)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     root2: np.ndarray | None = None, *, n1: int | None = None,
                     n2: int | None = None) -> float:
    """FD between N(mu1, S1) and N(mu2, S2); `root2` = S2^½ when already known; `n1`, `n2`:
    the sample sizes of the covariances, when known (exact for n <= d, see the module doc)."""
    rank2 = None if n2 is None else n2 - 1
    return ReferenceRoot(mu2, sigma2, root2, rank2).distance(mu1, sigma1,
                                                             None if n1 is None else n1 - 1)


def frechet_distance_eigvals(mu1, sigma1, mu2, sigma2) -> float:
    """The previous route: eigenvalues of the non-symmetric S1 S2 (torchmetrics' method)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    eig = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
    tr_sqrt = np.sqrt(eig).real.sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt)


def frechet_distance_sqrtm(mu1, sigma1, mu2, sigma2) -> float:
    """The classic route (pytorch-fid, clean-fid): `scipy.linalg.sqrtm` of S1 S2, real part.

    Used as the independent reference in tests and as the "old" time in `bench.perf frechet`.
    """
    import warnings

    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular products warn; the value is still usable
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
