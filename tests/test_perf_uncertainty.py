"""bench.perf frechet: the FID-route and uncertainty benchmark runs end to end on a smoke size,
its routes agree on the value, and its bookkeeping adds up."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import perf, perf_uncertainty
from fakes import make_inception_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_inception_weights(tmp_path_factory.mktemp("w") / "inception.pth")


def test_quick_benchmark_writes_agreeing_routes_and_a_projection(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("IMAGEN_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "frechet.json"
    rc = perf.main(["frechet", "--quick", "--n", "120,300", "--weights", str(weights),
                    "--extract-n", "4", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "frechet" and result["spec"]["dims"] == 64
    assert [r["n"] for r in result["rows"]] == [120, 300]
    routes = result["rows"][0]["routes"]
    assert set(routes) >= {"fast_metric", "fast_resampler", "torchmetrics", "eigvals", "sqrtm"}
    value = routes["sqrtm"]["value"]
    assert value > 0
    for name in ("fast_metric", "fast_resampler", "torchmetrics", "eigvals"):
        assert routes[name]["value"] == pytest.approx(value, rel=1e-4), name
    assert "torchmetrics" not in result["rows"][1]["routes"]  # old routes on the first N only
    for row in result["rows"]:
        u = row["uncertainty"]
        assert u["fid_ci"][0] <= u["fid"] <= u["fid_ci"][1]
        assert u["fid_inf_ci"][0] <= u["fid_inf"] <= u["fid_inf_ci"][1]
        assert u["breakdown"]["plain_replicates"] == 20 - 5  # B minus the FID∞ replicates
        assert u["breakdown"]["nested_calls"] == 5 + 1       # the replicates and the estimate
        assert u["seconds"] == pytest.approx(u["ci_seconds"] + u["fid_inf_seconds"])
        assert row["feature_file_bytes"] >= row["n"] * 64 * 4
        assert row["ratio"] == pytest.approx(u["seconds"] / row["extract_seconds"])
    assert result["extraction"]["extract_n"] == 4 and result["extraction"]["images_per_s"] > 0
    p = result["projection"]
    assert p["n"] == 30_000 and p["from_n"] == 300
    assert p["uncertainty_seconds"] == pytest.approx(p["fixed_seconds"] + p["linear_seconds"])
    assert p["met"] == (p["ratio"] < 0.10)
    assert result["speedup_target"]["route"] == "torchmetrics"


def test_synthetic_reference_is_the_law_of_the_features():
    basis = perf_uncertainty.random_basis(8, 0)
    x = perf_uncertainty.power_law_features(40_000, basis, 1)
    ref = perf_uncertainty.synthetic_reference(basis, 40_000)
    assert np.cov(x, rowvar=False) == pytest.approx(ref.sigma, abs=0.02)
    assert np.abs(x.mean(0)).max() < 0.02


def test_extrapolation_keeps_the_eigenproblems_fixed():
    row = {"n": 1000, "uncertainty": {"eigen_problems": 10, "seconds": 12.0}}
    p = perf_uncertainty.extrapolate(row, eig_s=0.5, images_per_s=100.0, target_n=3000)
    assert p["fixed_seconds"] == 5.0 and p["linear_seconds"] == pytest.approx(21.0)
    assert p["extract_seconds"] == 30.0 and p["ratio"] == pytest.approx(26.0 / 30.0)
    assert not p["met"]


@pytest.mark.parametrize("argv, message", [(["--n", "1"], "--n"), (["--old-routes", "magic"], "magic"),
                                           (["--weights", "/nonexistent.pth"], "no such file")])
def test_bad_arguments_are_one_message(tmp_path, capsys, argv, message):
    out = tmp_path / "f.json"
    assert perf.main(["frechet", "--quick", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()
