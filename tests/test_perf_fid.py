"""bench.perf_fid: the FID feature-extraction benchmark runs end to end on CPU on 8 images (ours and
torch-fidelity, a main dependency; clean-fid is not needed) and refuses a missing peer with exit 2."""
from __future__ import annotations

import json
import sys

import pytest

from bench import perf_fid
from fakes import make_inception_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_inception_weights(tmp_path_factory.mktemp("w") / "inception.pth")


def test_fid_benchmark_writes_rows_and_matches_torch_fidelity(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("IMAGEN_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "perf" / "fid.json"
    rc = perf_fid.main(["--make", "8", "--weights", str(weights), "--batch-size", "4",
                        "--num-workers", "0", "--device", "cpu", "--peers", "torch-fidelity",
                        "--compare", "8", "--rounds", "2", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "fid" and result["spec"]["n_images"] == 8
    assert [r["tool"] for r in result["rows"]] == ["ours", "torch-fidelity"]
    for row in result["rows"]:
        assert row["n"] == 8 and row["images_per_s"] > 0 and row["seconds"] > 0
        assert row["peak_rss_mib"] > 0 and row["cuda_peak_mib"] is None
        assert row["rounds"] == 2 and len(row["seconds_all"]) == len(row["cpu_seconds_all"]) == 2
        assert row["seconds"] == min(row["seconds_all"]) and row["cpu_s_per_image"] > 0
    (comp,) = result["comparisons"]
    assert comp["peer"] == "torch-fidelity" and comp["images_per_s_ratio"] > 0
    assert result["target"]["peer"] == "torch-fidelity" and result["target"]["target"] == 1.0
    agree = result["agreement"]["torch-fidelity"]
    assert agree["compared_images"] == 8 and agree["mean_abs_feature"] > 0  # features are not degenerate
    assert agree["max_abs"] <= 1e-4 * max(1.0, agree["mean_abs_feature"]) and agree["within_tol"]
    assert result["memory_scaling"] is None
    # the image folder is cached and reused
    assert len(list((tmp_path / "cache" / "perf_fid").glob("images-8-*/*.png"))) == 8


def test_missing_peer_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cleanfid", None)  # import fails as if not installed
    out = tmp_path / "fid.json"
    rc = perf_fid.main(["--make", "8", "--peers", "clean-fid,torch-fidelity", "--out", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clean-fid" in err and "pip install clean-fid" in err


def test_small_network_input_is_only_for_memory_runs_of_ours(capsys):
    assert perf_fid.main(["--make", "8", "--network-input", "75", "--peers", "torch-fidelity"]) == 2
    assert "--network-input" in capsys.readouterr().err


def test_unknown_peer_is_rejected():
    with pytest.raises(SystemExit) as e:
        perf_fid.main(["--peers", "pytorch-fid"])
    assert e.value.code == 2


def test_rounds_rotate_the_order_of_the_tools():
    tools = ["ours", "clean-fid", "torch-fidelity"]
    orders = [perf_fid.rotated(tools, r) for r in range(3)]
    assert [o[0] for o in orders] == tools  # each tool goes first once
    assert all(sorted(o) == sorted(tools) for o in orders)
