"""bench.metrics.resample and bench.statistics: intervals, paired differences, FID-infinity,
checked against analytic values and seeded simulations."""
import math

import numpy as np
import pytest

from bench.metrics.frechet import ReferenceRoot
from bench.metrics.resample import (FrechetResampler, PromptIndex, PromptMeans, fid_inf_sizes,
                                    fid_infinity, interval, p_value)
from bench.statistics import Draws, paired_delta, reference_keys


def gaussian_pair(d: int, seed: int):
    """Two Gaussians with random covariances; returns (reference root, mu2, sigma2 cholesky)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    b = rng.standard_normal((d, d)) / np.sqrt(d)
    ref = ReferenceRoot(np.zeros(d), a @ a.T + 0.5 * np.eye(d))
    sigma2 = b @ b.T + 0.3 * np.eye(d)
    return ref, 0.1 * rng.standard_normal(d), sigma2


def test_fid_infinity_halves_the_error_of_plain_fid_on_gaussians():
    """Chong & Forsyth: FID_N is biased in 1/N; the intercept of the 1/N line is not."""
    d, n = 64, 2000
    ref, mu2, sigma2 = gaussian_pair(d, 123)
    truth = ref.distance(mu2, sigma2)  # the analytic Fréchet distance of the two Gaussians
    chol = np.linalg.cholesky(sigma2)
    groups = PromptIndex(np.arange(n), n)
    sizes = fid_inf_sizes(n)
    assert len(sizes) == 15 and sizes[0] == n // 5 and sizes[-1] == n
    err_fid, err_inf = [], []
    for trial in range(100):
        x = np.random.default_rng(trial).standard_normal((n, d)) @ chol.T + mu2
        res = FrechetResampler(x, ref)
        inf, slope, _ = fid_infinity(res, groups, sizes, seed=trial)
        err_fid.append(abs(res.fid() - truth))
        err_inf.append(abs(inf - truth))
        assert slope > 0  # FID falls as N grows
    assert np.mean(err_inf) <= 0.5 * np.mean(err_fid), (np.mean(err_inf), np.mean(err_fid))


def test_paired_clip_difference_interval_covers_the_truth():
    """200 simulations of paired per-prompt scores with a known mean difference."""
    p, delta, covered = 80, 1.5, 0
    for sim in range(200):
        rng = np.random.default_rng(sim)
        prompt_effect = rng.normal(30, 5, p)           # shared by both configs: the pairing
        a = prompt_effect + delta + rng.normal(0, 2, p)
        b = prompt_effect + rng.normal(0, 2, p)
        draws = Draws.make(p, 200, seed=sim)
        ma, mb = (PromptMeans.of(v, np.arange(p), p) for v in (a, b))
        d = paired_delta(ma.estimate, ma.replicates(draws.counts), mb.estimate,
                         mb.replicates(draws.counts))
        assert d["ci_low"] <= d["delta"] <= d["ci_high"]
        covered += d["ci_low"] <= delta <= d["ci_high"]
    assert covered >= 0.9 * 200, covered


def test_pairing_narrows_the_interval():
    p = 60
    rng = np.random.default_rng(0)
    effect = rng.normal(30, 8, p)
    a, b = effect + 1 + rng.normal(0, 1, p), effect + rng.normal(0, 1, p)
    ma, mb = (PromptMeans.of(v, np.arange(p), p) for v in (a, b))
    same = Draws.make(p, 500, 0)
    other = Draws.make(p, 500, 1)
    paired = paired_delta(ma.estimate, ma.replicates(same.counts), mb.estimate,
                          mb.replicates(same.counts))
    unpaired = paired_delta(ma.estimate, ma.replicates(same.counts), mb.estimate,
                            mb.replicates(other.counts))
    width = lambda d: d["ci_high"] - d["ci_low"]  # noqa: E731
    assert width(paired) < 0.3 * width(unpaired)
    assert paired["p"] < 0.01


def test_a_config_against_itself_has_delta_zero_and_p_one():
    reps = np.random.default_rng(0).normal(size=100)
    d = paired_delta(3.0, reps, 3.0, reps)
    assert (d["delta"], d["ci_low"], d["ci_high"], d["p"]) == (0.0, 0.0, 0.0, 1.0)
    assert p_value(0.0, np.zeros(10)) == 1.0


@pytest.mark.parametrize("seed", range(300))
def test_intervals_contain_their_estimate_and_stay_in_range_at_tiny_n(seed):
    """CLIP score and FID intervals of 1-4 prompts with 1-3 images each."""
    rng = np.random.default_rng(seed)
    n_prompts, k = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    codes = np.repeat(np.arange(n_prompts), k)
    scores = 100 * np.maximum(rng.uniform(-0.2, 0.5, len(codes)), 0)
    draws = Draws.make(n_prompts, 50, seed)
    clip = PromptMeans.of(scores, codes, n_prompts)
    lo, hi = interval(clip.estimate, clip.replicates(draws.counts), low=0, high=100)
    assert 0 <= lo <= clip.estimate <= hi <= 100
    if n_prompts == 1:
        assert lo == hi == clip.estimate  # one prompt: nothing to resample
    d = 4
    ref = ReferenceRoot(np.zeros(d), np.eye(d))
    res = FrechetResampler(rng.normal(size=(len(codes), d)), ref)
    groups = PromptIndex(codes, n_prompts)
    fid = res.fid()
    reps = [res.fid(groups.image_weights(c)) for c in draws.counts]
    lo, hi = interval(fid, reps, low=0)
    if len(codes) < 2:
        assert math.isnan(fid) and math.isnan(lo)  # a covariance needs two images
    else:
        assert 0 <= lo <= fid <= hi


def test_fid_bootstrap_interval_is_recentred_on_the_estimate():
    """Duplicates lower the effective N, so FID replicates sit above the estimate; the interval
    still contains it (the plain percentile interval would not)."""
    d, n = 32, 60
    ref, mu2, sigma2 = gaussian_pair(d, 7)
    x = np.random.default_rng(1).multivariate_normal(mu2, sigma2, n)
    res = FrechetResampler(x, ref)
    groups = PromptIndex(np.arange(n), n)
    draws = Draws.make(n, 200, 0)
    reps = np.array([res.fid(groups.image_weights(c)) for c in draws.counts])
    fid = res.fid()
    assert np.quantile(reps, 0.025) > fid  # the bias the re-centring removes
    lo, hi = interval(fid, reps, low=0)
    assert lo <= fid <= hi
    assert hi - lo == pytest.approx(np.quantile(reps, 0.975) - np.quantile(reps, 0.025))


def test_default_reference_is_w1_of_the_same_mode():
    def cfg(w, mode, steps=12):
        return {"config_key": f"w{w}-{mode}-s{steps}", "guidance": w, "thresholding": mode,
                "aug_level": 0.0, "sampler": "ddim", "steps": steps}

    configs = [cfg("0", "none"), cfg("1", "none"), cfg("5", "none"), cfg("1", "static"),
               cfg("5", "static"), cfg("5", "dyn"), cfg("1/1", "dyn", 64), cfg("5", "dyn", 64)]
    refs = reference_keys(configs, None)
    assert refs["w5-none-s12"] == "w1-none-s12" and refs["w0-none-s12"] == "w1-none-s12"
    assert refs["w5-static-s12"] == "w1-static-s12"
    assert refs["w5-dyn-s12"] == "w1-none-s12"        # no w = 1 of that mode: the first w = 1
    assert refs["w5-dyn-s64"] == "w1/1-dyn-s64"      # per-stage weights all 1 count as w = 1
    assert set(reference_keys(configs, "w5-none-s12").values()) == {"w5-none-s12"}
    with pytest.raises(ValueError, match="not a config of this run"):
        reference_keys(configs, "nope")
