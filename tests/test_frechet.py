"""bench.metrics.frechet and FrechetResampler's FID against independent computations.

References: closed forms (commuting covariances), scipy's `sqrtm` and numpy's `eigvals` (the old
routes), and an exact route for covariances of samples: with S_i = Y_iᵀY_i / (n_i - 1) (Y_i the
centred samples), tr (S1 S2)^½ = ||Y1 Y2ᵀ||_* / sqrt((n1 - 1)(n2 - 1)), the nuclear norm of the
n1 x n2 cross product. It takes no square root of an eigenvalue, so a rank-deficient
covariance (fewer samples than dimensions) adds no rounding, unlike every d x d route.

The 2048-d features have a power-law spectrum (covariance eigenvalues ∝ k⁻², condition 4e6,
in a random basis), decaying like Inception pool features'. Finding recorded by
`test_rank_deficient_d2048_against_exact`: on a rank-r covariance, the d x d routes add
2 Σ sqrt(rounding) over the d - r null eigenvalues (here 3e-6 to 1e-5 of FD; sqrtm's is larger),
and that sum is their whole error. Given the sample sizes, bench.metrics.frechet keeps only
rank-many eigenvalues and is exact to 1e-9, as is FrechetResampler (its Gram-space route too).
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.metrics.frechet import (ReferenceRoot, frechet_distance, frechet_distance_eigvals,
                                   frechet_distance_sqrtm, sqrt_psd)
from bench.metrics.resample import (FrechetResampler, PromptIndex, counts_of, draw_prompts,
                                    fid_inf_sizes)

D = 2048


def rotation(d: int, seed: int) -> np.ndarray:
    """A seeded random orthogonal (d, d) matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def power_law_features(n: int, basis: np.ndarray, seed: int, *, scale: float = 1.0,
                       shift: float = 0.0) -> np.ndarray:
    """(n, d) Gaussian features whose covariance has eigenvalues scale² k⁻² in `basis`."""
    d = len(basis)
    g = np.random.default_rng(seed).standard_normal((n, d))
    return (g * (scale / np.arange(1, d + 1))) @ basis.T + shift


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x, rowvar=False)


def exact_fd(x1: np.ndarray, x2: np.ndarray) -> float:
    """FD between the sample Gaussians of x1 and x2 through the nuclear norm of Y1 Y2ᵀ."""
    y1, y2 = x1 - x1.mean(0), x2 - x2.mean(0)
    n1, n2 = len(x1), len(x2)
    tr_sqrt = np.linalg.svd(y1 @ y2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = x1.mean(0) - x2.mean(0)
    return float(diff @ diff + (y1 * y1).sum() / (n1 - 1) + (y2 * y2).sum() / (n2 - 1)
                 - 2.0 * tr_sqrt)


def null_space_rounding(sigma: np.ndarray, root: np.ndarray, rank: int) -> float:
    """Σ sqrt(max(λ, 0)) over the d - rank smallest eigenvalues of R S R (0 in exact arithmetic)."""
    m = root @ sigma @ root
    lam = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(lam[:len(lam) - rank], 0.0, None)).sum())


# ----------------------------------------------------------------------------------- small d

def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    want = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    s1, s2 = np.diag(a), np.diag(b)
    for route in (frechet_distance, frechet_distance_eigvals, frechet_distance_sqrtm):
        assert route(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("zeros", [0, 8])
def test_commuting_covariances_match_the_closed_form(zeros):
    """S1 = Q diag(a) Qᵀ, S2 = Q diag(b) Qᵀ: tr (S1 S2)^½ = Σ sqrt(a b); `zeros` a's are 0."""
    rng = np.random.default_rng(1 + zeros)
    d = 32
    q = rotation(d, 2)
    a, b = rng.uniform(0.01, 5.0, d), rng.uniform(0.01, 5.0, d)
    a[:zeros] = 0.0
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    want = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    # null eigenvalues of R S1 R round to ±1e-16 and add sqrt(1e-16) each: 1e-6 covers 8 of them
    rel = 1e-10 if zeros == 0 else 1e-6
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=rel)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(want, rel=rel)
    assert sqrt_psd(s2) @ sqrt_psd(s2) == pytest.approx(s2, abs=1e-12)


def test_reference_root_reuse_equals_frechet_distance():
    rng = np.random.default_rng(3)
    d = 64
    ref = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) / 8
    mu2, s2 = stats(ref)
    root = ReferenceRoot(mu2, s2)
    given = ReferenceRoot(mu2, s2, root=sqrt_psd(s2))
    for seed in range(3):
        x = np.random.default_rng(10 + seed).normal(0.1 * seed, 1.0, size=(100 + 50 * seed, d))
        mu1, s1 = stats(x)
        want = frechet_distance(mu1, s1, mu2, s2)
        assert root.distance(mu1, s1) == pytest.approx(want, rel=1e-12)
        assert given.distance(mu1, s1) == pytest.approx(want, rel=1e-12)
        assert frechet_distance(mu1, s1, mu2, s2, root2=root.root) == pytest.approx(want, rel=1e-12)
        assert want == pytest.approx(frechet_distance_sqrtm(mu1, s1, mu2, s2), rel=1e-9)
    assert root.distance(mu2, s2) == pytest.approx(0.0, abs=1e-10 * root.trace)


# ------------------------------------------------------------------------------ d = 2048

@pytest.fixture(scope="module")
def world():
    """Power-law 2048-d features: a full-rank reference (2500), a full-rank sample (2300) and
    rank-deficient samples (1500, 500), with different means and scales; their roots, with
    their ranks (sample size - 1)."""
    basis = rotation(D, 0)
    x = {"ref": power_law_features(2500, basis, 1),
         "full": power_law_features(2300, basis, 2, scale=1.2, shift=0.01),
         "1500": power_law_features(1500, basis, 3, scale=1.2, shift=0.01),
         "500": power_law_features(500, basis, 4, scale=0.9, shift=-0.01)}
    s = {k: stats(v) for k, v in x.items()}
    roots = {k: ReferenceRoot(*s[k], rank=len(x[k]) - 1) for k in ("ref", "full", "500")}
    return x, s, roots


@pytest.mark.slow
def test_full_rank_d2048_matches_sqrtm_and_is_symmetric(world):
    x, s, roots = world
    (mu1, s1), (mu2, s2) = s["full"], s["ref"]
    fast = roots["ref"].distance(mu1, s1, rank=len(x["full"]) - 1)
    assert fast > 0
    assert fast == pytest.approx(frechet_distance_sqrtm(mu1, s1, mu2, s2), rel=1e-6)
    assert fast == pytest.approx(exact_fd(x["full"], x["ref"]), rel=1e-8)
    assert roots["full"].distance(mu2, s2) == pytest.approx(fast, rel=1e-9)
    # FD(x, x): the smallest eigenvalues of S² (~1e-13) carry rounding of eps·λmax
    assert roots["ref"].distance(mu2, s2) == pytest.approx(0.0, abs=1e-8 * roots["ref"].trace)


@pytest.mark.slow
def test_rank_deficient_d2048_random_covariances_match_sqrtm():
    """Covariances of 700 and 1000 samples of a random linear map (rank 699 and 999 < 2048):
    the fast route equals scipy's sqrtm to 1e-6 and the exact value to 1e-9."""
    rng = np.random.default_rng(5)
    mix = rng.standard_normal((D, D)) / np.sqrt(D)
    reference = rng.standard_normal((1000, D)) @ mix
    sample = rng.standard_normal((700, D)) @ mix * 1.1 + 0.02
    (mu1, s1), (mu2, s2) = stats(sample), stats(reference)
    fast = frechet_distance(mu1, s1, mu2, s2, n1=700, n2=1000)
    assert fast == pytest.approx(frechet_distance_sqrtm(mu1, s1, mu2, s2), rel=1e-6)
    assert fast == pytest.approx(exact_fd(sample, reference), rel=1e-9)


@pytest.mark.parametrize("sample, reference", [("500", "ref"), ("1500", "500")],
                         ids=["500-vs-full", "1500-vs-500"])
def test_rank_deficient_d2048_against_exact(world, sample, reference):
    """The exact value is the nuclear-norm route. On a steep spectrum, a d x d route that keeps
    every eigenvalue of R S R is off by exactly its null-space rounding (asserted to 1e-8),
    3e-6 to 1e-5 of FD here (scipy's sqrtm and numpy's eigvals are further off still); knowing
    the sample sizes, the fast route keeps only rank-many eigenvalues and is exact to 1e-9, and
    so is FrechetResampler."""
    x, s, roots = world
    (mu1, s1), ref = s[sample], roots[reference]
    exact = exact_fd(x[sample], x[reference])
    rank = min(len(x[sample]), len(x[reference])) - 1
    fast = ref.distance(mu1, s1, rank=len(x[sample]) - 1)
    assert fast == pytest.approx(exact, rel=1e-9)
    assert frechet_distance(mu1, s1, ref.mu, ref.sigma, ref.root, n1=len(x[sample]),
                            n2=len(x[reference])) == pytest.approx(fast, rel=1e-12)
    unranked = ReferenceRoot(ref.mu, ref.sigma, ref.root).distance(mu1, s1)
    null = null_space_rounding(s1, ref.root, rank)
    assert null > 1e-7 * exact  # the finding: keeping every eigenvalue costs 2 x this
    assert unranked + 2.0 * null == pytest.approx(exact, rel=1e-8)
    assert FrechetResampler(x[sample], ref).fid() == pytest.approx(exact, rel=1e-9)
    if sample == "500":
        old = frechet_distance_eigvals(mu1, s1, ref.mu, ref.sigma)
        assert abs(old - exact) > abs(unranked - exact) > 1e3 * abs(fast - exact)
        assert old == pytest.approx(exact, rel=1e-4)


def test_rank_deficient_sqrtm_is_further_off_than_fast():
    """scipy's sqrtm on a rank-deficient product (d = 1024, 250 vs 1200 samples; the same at
    d = 2048, 10x slower): off the exact value by far more than the fast route."""
    d = 1024
    basis = rotation(d, 7)
    sample = power_law_features(250, basis, 8, scale=1.2, shift=0.01)
    reference = power_law_features(1200, basis, 9)
    mu1, s1 = stats(sample)
    mu2, s2 = stats(reference)
    exact = exact_fd(sample, reference)
    fast = frechet_distance(mu1, s1, mu2, s2, n1=250, n2=1200)
    old = frechet_distance_sqrtm(mu1, s1, mu2, s2)
    assert fast == pytest.approx(exact, rel=1e-9)
    assert abs(old - exact) > 100 * abs(fast - exact)
    assert old == pytest.approx(exact, rel=1e-4)
    ref = ReferenceRoot(mu2, s2, rank=1199)
    assert FrechetResampler(sample, ref).fid() == pytest.approx(exact, rel=1e-9)
    assert ref.distance(mu1, s1) == pytest.approx(exact, rel=3e-5)  # only the reference's rank


# ------------------------------------------------------------------------- FrechetResampler

def _explicit(x: np.ndarray, weights: np.ndarray, ref: ReferenceRoot) -> float:
    """FID of the multiset by duplicating rows: numpy mean/cov and scipy sqrtm."""
    rep = np.repeat(x, weights, axis=0)
    return frechet_distance_sqrtm(rep.mean(0), np.cov(rep, rowvar=False), ref.mu, ref.sigma)


@pytest.mark.parametrize("n, nonzero", [(30, 20), (150, 120)], ids=["gram-space", "d-space"])
def test_resampler_fid_equals_duplicated_rows(n, nonzero):
    """Both code paths: n' = 20 < d = 48 (n' x n' Gram space) and n' = 120 >= d."""
    rng = np.random.default_rng(n)
    d = 48
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    reference = rng.normal(size=(400, d)) @ mix
    ref = ReferenceRoot(*stats(reference))
    x = rng.normal(0.2, 1.1, size=(n, d)) @ mix
    weights = np.zeros(n, dtype=np.int64)
    weights[rng.choice(n, nonzero, replace=False)] = rng.integers(1, 4, nonzero)
    res = FrechetResampler(x.astype(np.float32), ref)
    x32 = x.astype(np.float32).astype(np.float64)
    want = _explicit(x32, weights, ref)
    assert res.fid(weights) == pytest.approx(want, rel=1e-6)
    assert res.fid(weights) == pytest.approx(exact_fd(np.repeat(x32, weights, axis=0), reference),
                                             rel=1e-7)
    assert res.fid() == pytest.approx(_explicit(x32, np.ones(n, np.int64), ref), rel=1e-6)


@pytest.mark.parametrize("d", [48, 16], ids=["direct-prefixes", "accumulated-gram"])
def test_nested_equals_fid_of_each_prefix(d):
    """nested() on 90 images of 30 prompts: per prefix (n < d) or accumulated (n >= d)."""
    rng = np.random.default_rng(d)
    n_prompts, per = 30, 3
    reference = rng.normal(size=(200, d))
    ref = ReferenceRoot(*stats(reference))
    n = n_prompts * per if d == 16 else 40
    x = rng.normal(0.1, 1.0, size=(n, d))
    groups = PromptIndex(np.arange(n) % n_prompts, n_prompts)
    res = FrechetResampler(x, ref)
    sequence = draw_prompts(n_prompts, 1, seed=5)[0]
    sizes = fid_inf_sizes(n_prompts, 15)
    got = res.nested(sequence, sizes, groups)
    want = [res.fid(groups.image_weights(counts_of(sequence[:s], n_prompts)[0])) for s in sizes]
    assert got == pytest.approx(want, rel=1e-9)
    last = groups.image_weights(counts_of(sequence, n_prompts)[0])
    assert got[-1] == pytest.approx(_explicit(x, last, ref), rel=1e-6)
