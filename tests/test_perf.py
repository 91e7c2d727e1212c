"""bench.perf: the sampling benchmark runs end to end on CPU without the peer, counts FLOPs right,
and refuses a missing peer with exit code 2. No test needs imagen-pytorch."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from bench import perf
from imagen_ref.configs import count_params

# imagen-pytorch 2.1.0 Unet(**IMAGEN_PYTORCH_UNETS["perf-base-32"], text_embed_dim=384,
# max_text_len=32): parameter count measured once with the peer installed.
PEER_PERF_BASE_32_PARAMS = 14_987_384


def test_sampling_tiny_base_writes_positive_throughput(tmp_path):
    out = tmp_path / "perf" / "sampling.json"
    rc = perf.main(["sampling", "--config", "tiny-base", "--batch-size", "2", "--steps", "2",
                    "--repeats", "1", "--warmup-steps", "0", "--text-len", "8", "--device", "cpu",
                    "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["name"], row["precision"]) == ("ours", "fp32")
    assert row["images_per_s"] > 0 and row["s_per_step"] > 0 and row["gflops_per_s"] > 0
    assert row["flops_per_image_step"] > 0
    assert row["flops_per_image"] == pytest.approx(2 * row["flops_per_image_step"])
    assert row["params"] == count_params(perf.resolve_config("tiny-base"))
    assert result["spec"]["steps"] == 2 and result["comparisons"] == []
    assert result["bf16_vs_fp32"] is None


def test_missing_peer_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imagen_pytorch", None)  # import fails as if not installed
    out = tmp_path / "s.json"
    rc = perf.main(["sampling", "--peer", "imagen-pytorch", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "imagen-pytorch is not installed" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--config", "no-such-config"], "unknown --config"),
    (["--config", "tiny-base", "--peer", "imagen-pytorch"], "no imagen-pytorch peer"),
    (["--config", "tiny-sr"], "super-resolution"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_bad_arguments_exit_2(argv, needle, tmp_path, capsys):
    assert perf.main(["sampling", *argv, "--out", str(tmp_path / "s.json")]) == 2
    assert needle in capsys.readouterr().err


def test_cpu_attention_flops_match_explicit_matmuls():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 16, 8, generator=gen)
    k = torch.randn(2, 4, 24, 8, generator=gen)
    v = torch.randn(2, 4, 24, 8, generator=gen)
    mask = torch.ones(2, 1, 1, 24, dtype=torch.bool)
    fused = perf.count_flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    explicit = perf.count_flops(lambda: torch.softmax(q @ k.transpose(-1, -2), -1) @ v)
    assert fused == explicit == 2 * 2 * 4 * 16 * 24 * (8 + 8)


def test_perf_base_32_matches_the_peer_size():
    config = perf.resolve_config("perf-base-32")
    assert (config.image_size, config.text_dim, config.lowres_size) == (32, 384, None)
    assert abs(count_params(config) / PEER_PERF_BASE_32_PARAMS - 1) <= 0.10


def test_random_text_masks_and_zeroes_padding():
    text, mask = perf.random_text(5, 12, 384, seed=3)
    assert text.shape == (5, 12, 384) and mask.shape == (5, 12) and mask.dtype == torch.bool
    assert mask[0].all() and (mask.sum(1) >= 6).all()
    assert (text[~mask] == 0).all()
