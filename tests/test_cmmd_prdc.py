"""bench.metrics.cmmd and bench.metrics.prdc against independent computations.

References: a plain-numpy transcription of CMMD on full kernel matrices (distances from direct
differences, not the norm expansion the module uses), the `prdc` package (Naeem et al.'s code)
for precision/recall/density/coverage, and explicitly duplicated rows for bootstrap replicates:
a replicate with image counts w must equal the metric of the multiset written out, wherever
the definition allows it (CMMD, both estimators; precision, density and coverage; not recall,
whose fake radii are kept from the full set, checked here against a brute-force transcription).
"""
from __future__ import annotations

import contextlib
import io
import json
import tracemalloc

import numpy as np
import pytest

from bench import perf
from bench.metrics import cmmd as cmmd_module
from bench.metrics import prdc as prdc_module
from bench.metrics.cmmd import CMMD, cmmd
from bench.metrics.prdc import PRDC, compute_prdc, subsample
from bench.metrics.resample import counts_of, draw_prompts

METRICS = ("precision", "recall", "density", "coverage")


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(n, d) float64 N(shift, 1) samples (a common offset makes the normalisation matter)."""
    return np.random.default_rng([seed, n, d]).standard_normal((n, d)) + 0.5 + shift


def plain_cmmd(x: np.ndarray, y: np.ndarray, unbiased: bool, sigma: float = 10.0) -> float:
    """CMMD on full matrices, as the paper writes it: normalise, RBF kernel, means, x 1000."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)

    def kernel(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma ** 2))

    def within(k):
        n = len(k)
        return (k.sum() - np.trace(k)) / (n * (n - 1)) if unbiased else k.mean()

    return 1000.0 * (within(kernel(x, x)) + within(kernel(y, y)) - 2 * kernel(x, y).mean())


@pytest.fixture(scope="module")
def prdc_package():
    """The `prdc` package (a dev extra): Naeem et al.'s code, the reference of bench.metrics.prdc."""
    return pytest.importorskip("prdc", reason="pip install prdc (the dev extra)")


def package_prdc(package, real, fake, k) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        return package.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)


def image_weights(n: int, b: int, seed: int) -> np.ndarray:
    """(B, n) bootstrap counts, one image per prompt (bench.metrics.resample's draws)."""
    return counts_of(draw_prompts(n, b, seed), n)


# --------------------------------------------------------------------------------- CMMD

@pytest.fixture(scope="module")
def xy():
    return gaussian(300, 32, 1), gaussian(400, 32, 2, shift=0.3)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cmmd_equals_plain_numpy(xy, unbiased):
    x, y = xy
    expected = plain_cmmd(x, y, unbiased)
    assert expected > 0
    assert CMMD(y, unbiased=unbiased).value(x) == pytest.approx(expected, rel=1e-6)
    assert cmmd(x, y, unbiased=unbiased) == pytest.approx(expected, rel=1e-6)


def test_cmmd_estimators_differ_by_their_diagonals(xy):
    """V-statistic (the reference code's) minus U-statistic = 1000 (h̄_xx / n + h̄_yy / m), h̄ the
    mean of 1 - k over distinct pairs: the diagonal (h = 0) enters the within-set means."""
    x, y = xy

    def mean_h(a):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        h = 1 - np.exp(-((a[:, None] - a[None]) ** 2).sum(-1) / 200)
        return h.sum() / (len(a) * (len(a) - 1))

    gap = CMMD(y).value(x) - CMMD(y, unbiased=True).value(x)
    assert gap == pytest.approx(1000 * (mean_h(x) / len(x) + mean_h(y) / len(y)), rel=1e-6)


@pytest.mark.parametrize("block", [1, 17, 64, 299])
def test_cmmd_blocked_equals_one_tile(xy, block):
    x, y = xy
    if block == 1:
        x, y = x[:40], y[:50]  # every tile a single pair
    one = CMMD(y, block=10_000, unbiased=True)
    blocked = CMMD(y, block=block, unbiased=True)
    assert blocked.value(x) == pytest.approx(one.value(x), rel=1e-10)
    assert blocked.ref_term == pytest.approx(one.ref_term, rel=1e-12)


def test_cmmd_near_zero_for_one_distribution_and_grows_with_a_shift():
    y = gaussian(600, 16, 3)
    metric = CMMD(y, unbiased=True)
    shifts = [0.0, 0.1, 0.2, 0.4]
    values = [metric.value(gaussian(500, 16, 4, shift=s)) for s in shifts]
    assert abs(values[0]) < 0.05 * values[2]
    assert all(a < b for a, b in zip(values, values[1:]))
    biased = CMMD(y).value(gaussian(500, 16, 4))
    assert 0 < biased < values[2]  # positive (V-statistic) but small


def test_cmmd_normalises_its_inputs(xy):
    x, y = xy
    x0, y0 = x.copy(), y.copy()
    assert CMMD(3 * y).value(0.5 * x) == pytest.approx(CMMD(y).value(x), rel=1e-12)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)  # the caller's arrays stay as given
    unit = CMMD(y / np.linalg.norm(y, axis=1, keepdims=True), normalize=False)
    assert unit.value(x / np.linalg.norm(x, axis=1, keepdims=True)) == pytest.approx(
        CMMD(y).value(x), rel=1e-12)
    assert CMMD(3 * y, normalize=False).value(x) != pytest.approx(CMMD(y).value(x), rel=1e-3)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cmmd_unit_weights_equal_the_value(xy, unbiased):
    x, y = xy
    metric = CMMD(y, unbiased=unbiased, block=128)
    value = metric.value(x)
    assert metric.replicates(x, np.ones((1, len(x)), dtype=int))[0] == value  # exactly
    batch = np.vstack([image_weights(len(x), 4, 0), np.ones(len(x), dtype=int)])
    assert metric.replicates(x, batch)[-1] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cmmd_replicates_equal_duplicated_rows(xy, unbiased):
    x, y = xy
    x = x[:120]
    metric = CMMD(y, unbiased=unbiased, block=50)
    weights = image_weights(len(x), 3, 7)
    assert weights.max() >= 3  # duplicates, triplicates
    reps = metric.replicates(x, weights)
    for w, rep in zip(weights, reps):
        duplicated = np.repeat(x, w, axis=0)
        assert rep == pytest.approx(metric.value(duplicated), rel=1e-9)
        assert rep == pytest.approx(plain_cmmd(duplicated, y, unbiased), rel=1e-6)


def test_cmmd_replicate_without_enough_images_is_nan(xy):
    x, y = xy
    w = np.zeros((2, len(x)), dtype=int)
    w[0, 5] = 1
    assert np.isnan(CMMD(y, unbiased=True).replicates(x, w)).all()
    biased = CMMD(y).replicates(x, w)
    assert np.isfinite(biased[0]) and np.isnan(biased[1])


def test_cmmd_bad_input_raises(xy):
    x, y = xy
    metric = CMMD(y)
    bad = x.copy()
    bad[3, 1] = np.nan
    cases = [
        (lambda: metric.value(bad), "x: 1 rows contain NaN"),
        (lambda: metric.value(x[0]), "expected a 2-D"),
        (lambda: metric.value(x[:, :10]), "10 dimensions, the reference has 32"),
        (lambda: metric.value(np.zeros((0, 32))), "0 rows"),
        (lambda: metric.value(np.zeros((4, 32))), "all-zero rows"),
        (lambda: CMMD(np.zeros((0, 32))), "reference: 0 rows"),
        (lambda: CMMD(y, unbiased=True).value(x[:1]), "at least 2"),
        (lambda: CMMD(y, sigma=0), "sigma"),
        (lambda: metric.replicates(x, np.ones((2, 5), dtype=int)), r"shape \(B, 300\)"),
        (lambda: metric.replicates(x, -np.ones((1, 300), dtype=int)), ">= 0"),
        (lambda: metric.replicates(x, np.full((1, 300), 0.5)), "whole numbers"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message):
            fn()


def test_cmmd_memory_is_bounded_by_the_block(monkeypatch):
    """n = 4000: no kernel tile larger than block², and numpy never holds an n x n array.

    Kernel tiles are torch tensors (invisible to tracemalloc), so the tile function is wrapped
    to record every tile's size; tracemalloc bounds what numpy allocates alongside."""
    n, m, d, block = 4000, 300, 8, 256
    sizes = []
    tile = cmmd_module._h_tile

    def recording(*args):
        out = tile(*args)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(cmmd_module, "_h_tile", recording)
    x, y = gaussian(n, d, 5), gaussian(m, d, 6)
    tracemalloc.start()
    try:
        metric = CMMD(y, block=block)
        metric.replicates(x, image_weights(n, 2, 0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full = n * n * 8
    assert max(sizes) <= block * block <= full / 200
    n_tiles = -(-n // block)
    assert len(sizes) >= n_tiles * (n_tiles + 1) // 2  # every upper tile visited
    assert peak < full / 20  # inputs, float64 copies and weights: O(n d + B n)


# --------------------------------------------------------------------------------- PRDC

@pytest.fixture(scope="module")
def real_fake():
    return gaussian(300, 16, 11), gaussian(250, 16, 12, shift=0.2)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("block", [7, 64, 4096])
def test_prdc_single_k_equals_the_prdc_package(prdc_package, real_fake, k, block):
    real, fake = real_fake
    expected = package_prdc(prdc_package, real, fake, k)
    got = compute_prdc(real, fake, k, block=block)
    for name in METRICS:
        assert got[name] == pytest.approx(float(expected[name]), abs=1e-12), name
    assert (got["n_real"], got["n_fake"], got["k_pr"], got["k_dc"]) == (300, 250, k, k)


def test_prdc_separate_ks_equal_two_package_calls(prdc_package, real_fake):
    real, fake = real_fake
    got = PRDC(real, k_pr=3, k_dc=5, block=100).compute(fake)
    pr, dc = package_prdc(prdc_package, real, fake, 3), package_prdc(prdc_package, real, fake, 5)
    for name, ref in (("precision", pr), ("recall", pr), ("density", dc), ("coverage", dc)):
        assert got[name] == pytest.approx(float(ref[name]), abs=1e-12), name
    assert (got["k_pr"], got["k_dc"]) == (3, 5)


def test_prdc_unit_weights_equal_compute(real_fake):
    real, fake = real_fake
    metric = PRDC(real, block=64)
    inc = metric.incidence(fake)
    point = metric.compute(inc)
    assert metric.compute(fake) == point
    reps = metric.replicates(fake, np.ones((1, len(fake)), dtype=int))
    for name in METRICS:
        assert reps[name][0] == point[name], name  # exactly
    batch = metric.replicates(inc, np.vstack([image_weights(len(fake), 3, 1),
                                              np.ones(len(fake), dtype=int)]))
    for name in METRICS:
        assert batch[name][-1] == point[name], name


def test_prdc_replicates_against_duplicated_rows(prdc_package, real_fake):
    """Precision, density, coverage: the prdc package on the written-out multiset. Recall:
    brute force with the full fake set's radii (on duplicates the package would shrink them)."""
    real, fake = real_fake
    k = 4
    metric = PRDC(real, nearest_k=k, block=50)
    weights = image_weights(len(fake), 3, 2)
    reps = metric.replicates(fake, weights)
    fake_radii = prdc_package.prdc.compute_nearest_neighbour_distances(fake, k)
    dist = np.sqrt(((real[:, None, :] - fake[None, :, :]) ** 2).sum(-1))
    for b, w in enumerate(weights):
        expected = package_prdc(prdc_package, real, np.repeat(fake, w, axis=0), k)
        for name in ("precision", "density", "coverage"):
            assert reps[name][b] == pytest.approx(float(expected[name]), rel=1e-12), name
        present = w > 0
        recall = (dist[:, present] < fake_radii[None, present]).any(1).mean()
        assert reps["recall"][b] == pytest.approx(recall, abs=1e-12)


def test_prdc_separate_k_replicates_weighted_means(real_fake):
    real, fake = real_fake
    metric = PRDC(real, k_pr=3, k_dc=5, block=64)
    inc = metric.incidence(fake)
    w = image_weights(len(fake), 2, 3)
    reps = metric.replicates(inc, w)
    assert reps["precision"] == pytest.approx(w @ inc.in_real_ball / w.sum(1), rel=1e-12)
    assert reps["density"] == pytest.approx(w @ inc.real_balls / (5 * w.sum(1)), rel=1e-12)


def test_subsample_is_seeded_sorted_and_recorded(prdc_package):
    a, b = subsample(1000, 100, seed=0), subsample(1000, 100, seed=0)
    assert np.array_equal(a, b) and len(a) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, subsample(1000, 100, seed=1))
    assert np.array_equal(subsample(np.zeros((50, 3)), 100), np.arange(50))
    real, fake = gaussian(500, 8, 21), gaussian(400, 8, 22, shift=0.1)
    metric = PRDC(real, nearest_k=3, max_samples=200, seed=5, block=64)
    got = metric.compute(fake)
    rows_real, rows_fake = subsample(500, 200, 5), subsample(400, 200, 5)
    assert np.array_equal(metric.reference_rows, rows_real)
    expected = package_prdc(prdc_package, real[rows_real], fake[rows_fake], 3)
    for name in METRICS:
        assert got[name] == pytest.approx(float(expected[name]), abs=1e-12), name
    assert (got["n_real"], got["n_real_total"], got["n_fake"], got["n_fake_total"]) == \
        (200, 500, 200, 400)
    with pytest.raises(ValueError, match="subsample first"):
        metric.replicates(fake, np.ones((1, 400), dtype=int))
    reps = metric.replicates(fake[rows_fake], np.ones((1, 200), dtype=int))
    assert reps["recall"][0] == got["recall"]


def test_prdc_bad_input_raises(real_fake):
    real, fake = real_fake
    metric = PRDC(real)
    bad = fake.copy()
    bad[0, 0] = np.inf
    cases = [
        (lambda: metric.compute(bad), "fake: 1 rows contain NaN or infinite"),
        (lambda: metric.compute(fake[0]), "expected a 2-D"),
        (lambda: metric.compute(fake[:, :4]), "4 dimensions, the reference has 16"),
        (lambda: metric.compute(np.zeros((0, 16))), "0 rows; at least 4"),
        (lambda: PRDC(real[:5]), "reference: 5 rows; at least 6"),
        (lambda: PRDC(real, k_pr=0), "k_pr"),
        (lambda: metric.replicates(fake, np.ones((1, 3), dtype=int)), r"shape \(B, 250\)"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message):
            fn()


def test_prdc_memory_is_bounded_by_the_block(monkeypatch):
    n, d, block = 2000, 8, 128
    sizes = []
    tile = prdc_module._distance_tile

    def recording(*args):
        out = tile(*args)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(prdc_module, "_distance_tile", recording)
    real, fake = gaussian(n, d, 31), gaussian(n, d, 32, shift=0.1)
    metric = PRDC(real, block=block)
    inc = metric.incidence(fake)
    assert max(sizes) <= block * block <= n * n / 200
    for matrix in (inc.covers, inc.covered_by):
        assert matrix.nnz < 20 * n  # about k entries per row, not n


# ---------------------------------------------------------------------------- benchmark

def test_quick_benchmark_writes_both_metrics(tmp_path):
    out = tmp_path / "metrics.json"
    rc = perf.main(["metrics", "--quick", "--n", "120", "--bootstrap", "5", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "metrics"
    rows = {r["metric"]: r for r in result["rows"]}
    assert set(rows) == {"cmmd", "prdc"} and rows["cmmd"]["n"] == 120
    assert rows["cmmd"]["value"] > 0
    assert set(rows["prdc"]["value"]) >= set(METRICS)
    for row in rows.values():
        for stage in ("setup", "value", "replicates"):
            s = row["stages"][stage]
            assert s["seconds"] > 0 and s["tracemalloc_peak_mib"] > 0 and s["rss_growth_mib"] >= 0
    assert perf.main(["metrics", "--quick", "--metrics", "kid", "--out", str(out)]) == 2
