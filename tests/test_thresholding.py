"""threshold() against the paper's pseudocode (Fig. A.31), written independently in numpy."""
import numpy as np
import pytest
import torch

from imagen_ref import threshold
from imagen_ref.thresholding import _row_quantile, parse_mode


def paper_dynamic(x0: np.ndarray, p: float, cap: float = np.inf) -> np.ndarray:
    out = np.empty_like(x0)
    for i in range(x0.shape[0]):
        s = np.percentile(np.abs(x0[i]), p * 100)  # over all non-batch axes
        s = max(s, 1.0)
        s = min(s, cap)
        out[i] = np.clip(x0[i], -s, s) / s
    return out


@pytest.fixture
def x0():
    g = torch.Generator().manual_seed(0)
    # a spread of scales so s < 1 (no-op) and s > 1 (rescale) both occur
    scale = torch.tensor([0.3, 1.0, 2.5, 6.0]).view(4, 1, 1, 1)
    return torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64) * scale


def test_none_is_identity(x0):
    assert torch.equal(threshold(x0, "none"), x0)


def test_static_clips(x0):
    np.testing.assert_array_equal(threshold(x0, "static").numpy(), np.clip(x0.numpy(), -1, 1))


@pytest.mark.parametrize("p", [0.995, 0.95, 0.9, 0.5, 1.0])
def test_dynamic_matches_paper_pseudocode(x0, p):
    ours = threshold(x0, f"dynamic:{p}").numpy()
    np.testing.assert_allclose(ours, paper_dynamic(x0.numpy(), p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p,cap", [(0.95, 1.5), (0.995, 2.0), (0.9, 1.0)])
def test_dynamic_with_cap_matches_if_semantics(x0, p, cap):
    ours = threshold(x0, f"dynamic:{p}:{cap}").numpy()
    np.testing.assert_allclose(ours, paper_dynamic(x0.numpy(), p, cap), rtol=1e-12, atol=1e-12)


def test_dynamic_cap_one_equals_static(x0):
    assert torch.equal(threshold(x0, "dynamic:0.995:1"), threshold(x0, "static"))


def test_dynamic_scales_each_sample_on_its_own(x0):
    alone = threshold(x0[2:3], "dynamic:0.995")
    assert torch.equal(threshold(x0, "dynamic:0.995")[2:3], alone)


def test_row_quantile_equals_torch_quantile():
    x = torch.rand(3, 1001, dtype=torch.float64)
    for q in (0.0, 0.5, 0.995, 1.0):
        torch.testing.assert_close(_row_quantile(x, q), torch.quantile(x, q, dim=1), rtol=0, atol=1e-15)


def test_float32_and_bf16_inputs_keep_dtype(x0):
    for dt in (torch.float32, torch.bfloat16):
        assert threshold(x0.to(dt), "dynamic:0.995").dtype == dt


@pytest.mark.parametrize("bad", ["dynamic", "dynamic:1.5", "dynamic:0", "dynamic:0.9:0.5", "clip", "dynamic:x"])
def test_bad_modes_are_rejected_with_the_forms(bad):
    with pytest.raises(ValueError, match="expected 'none', 'static'"):
        parse_mode(bad)


def test_mode_strings_round_trip():
    for text in ["none", "static", "dynamic:0.995", "dynamic:0.95:1.5"]:
        assert str(parse_mode(text)) == text
