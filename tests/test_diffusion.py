"""Diffusion math: schedules against their closed forms, parameterisation round trips, loss."""
import math

import pytest
import torch

from imagen_ref.diffusion import (Schedule, drop_text, eps_from_x0, noise_augment, null_text,
                                  q_sample, training_loss, v_target, x0_from_eps, x0_from_v)

T = torch.linspace(0, 1, 101, dtype=torch.float64)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_variance_preserving_and_monotone(name):
    sch = Schedule(name)
    a, s = sch.alpha_sigma(T)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a), rtol=0, atol=1e-12)
    lam = sch.log_snr(T)
    assert torch.all(lam[1:] <= lam[:-1])
    assert lam.min() >= sch.log_snr_min and lam.max() <= sch.log_snr_max
    torch.testing.assert_close(torch.log(a**2 / s**2), lam, rtol=1e-9, atol=1e-9)


def test_cosine_matches_closed_form_inside_the_clip():
    sch = Schedule("cosine", log_snr_min=-30, log_snr_max=30)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    s = 0.008
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2   # alpha^2 up to normalisation
    expected = torch.log(f / (1 - f))
    torch.testing.assert_close(sch.log_snr(t), expected, rtol=1e-9, atol=1e-9)


def test_linear_matches_ddpm_betas():
    # discrete DDPM: alphabar_T = prod(1 - beta_i), beta linear 1e-4..0.02 over 1000 steps
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    sch = Schedule("linear", log_snr_min=-30, log_snr_max=30)
    for i in (99, 499, 999):
        a, _ = sch.alpha_sigma(torch.tensor([(i + 1) / 1000], dtype=torch.float64))
        # -log(alphabar) = sum(-log(1 - beta)) ~ sum(beta); within 1% of the discrete one
        assert abs(math.log(a.item() ** 2) - math.log(abar[i].item())) / -math.log(abar[i].item()) < 0.01


def test_clip_keeps_signal_at_t1():
    a, _ = Schedule("cosine").alpha_sigma(torch.tensor([1.0], dtype=torch.float64))
    assert a.item() == pytest.approx(math.sqrt(torch.sigmoid(torch.tensor(-10.0)).item()))


def test_parameterisations_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0.05, 0.3, 0.7, 0.99])
    sch = Schedule()
    z = q_sample(x0, t, eps, sch)
    torch.testing.assert_close(x0_from_eps(z, eps, t, sch), x0, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(eps_from_x0(z, x0, t, sch), eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_from_v(z, v_target(x0, eps, t, sch), t, sch), x0, atol=1e-5, rtol=1e-5)


def test_null_text_is_zero_and_masked():
    text, mask = torch.randn(2, 5, 7), torch.ones(2, 5, dtype=torch.bool)
    t0, m0 = null_text(text, mask)
    assert torch.count_nonzero(t0) == 0 and not m0.any()


def test_drop_text_rate_is_ten_percent():
    n = 20000
    text, mask = torch.ones(n, 1, 1), torch.ones(n, 1, dtype=torch.bool)
    out, m = drop_text(text, mask, 0.1, torch.Generator().manual_seed(1))
    dropped = (out.view(n) == 0)
    assert torch.equal(dropped, ~m.view(n))
    assert abs(dropped.float().mean().item() - 0.1) < 0.01


def test_noise_augment_level_zero_is_identity():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    out = noise_augment(x, torch.zeros(2), Schedule(), torch.randn(2, 3, 4, 4))
    assert torch.equal(out, x)
    out = noise_augment(x, torch.tensor([0.0, 0.9]), Schedule(), torch.randn(2, 3, 4, 4))
    assert torch.equal(out[0], x[0]) and not torch.allclose(out[1], x[1])


def test_training_loss_is_zero_for_an_oracle_model():
    """A model that knows x0 predicts eps exactly; the loss must then vanish."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 3, 8, 8, generator=g) * 2 - 1
    sch = Schedule()

    def oracle(z, t, text, mask, lowres=None, aug_t=None):
        return eps_from_x0(z, x0, t, sch)

    loss = training_loss(oracle, x0, torch.zeros(8, 2, 4), torch.ones(8, 2, dtype=torch.bool),
                         sch, generator=g)
    assert loss.item() < 1e-6
    wrong = training_loss(lambda z, *a, **k: torch.zeros_like(z), x0, torch.zeros(8, 2, 4),
                          torch.ones(8, 2, dtype=torch.bool), sch, generator=g)
    assert wrong.item() > 0.5


def test_training_loss_passes_augmented_lowres_and_levels():
    seen = {}

    def model(z, t, text, mask, lowres=None, aug_t=None):
        seen.update(lowres=lowres, aug_t=aug_t)
        return torch.zeros_like(z)

    lowres = torch.zeros(4, 3, 4, 4)
    training_loss(model, torch.zeros(4, 3, 8, 8), torch.zeros(4, 1, 2), torch.ones(4, 1, dtype=torch.bool),
                  Schedule(), generator=torch.Generator().manual_seed(0), lowres=lowres)
    assert seen["aug_t"].shape == (4,) and len(set(seen["aug_t"].tolist())) == 4  # one level per example
    assert not torch.equal(seen["lowres"], lowres)
    full = seen["aug_t"]
    # a smaller maximum scales the same draws: U(0, 0.5) instead of U(0, 1)
    training_loss(model, torch.zeros(4, 3, 8, 8), torch.zeros(4, 1, 2), torch.ones(4, 1, dtype=torch.bool),
                  Schedule(), generator=torch.Generator().manual_seed(0), lowres=lowres,
                  max_aug_level=0.5)
    torch.testing.assert_close(seen["aug_t"], full * 0.5)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_t_from_log_snr_inverts_log_snr_inside_the_clip(name):
    sch = Schedule(name)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    lam = sch.log_snr(t)
    inside = (lam > sch.log_snr_min) & (lam < sch.log_snr_max)
    assert inside.sum() > 40
    torch.testing.assert_close(sch.t_from_log_snr(lam)[inside], t[inside], rtol=0, atol=1e-9)
    # beyond the clip: the t where the clip starts, whose log-SNR is the clip value
    t_end = sch.t_from_log_snr(torch.tensor([sch.log_snr_min - 5.0], dtype=torch.float64))
    assert sch.log_snr(t_end).item() == pytest.approx(sch.log_snr_min, abs=1e-6)


def _seen_t(**kwargs) -> torch.Tensor:
    seen = {}

    def model(z, t, text, mask, lowres=None, aug_t=None):
        seen["t"] = t
        return torch.zeros_like(z)

    n = 4000
    training_loss(model, torch.zeros(n, 1, 2, 2), torch.zeros(n, 1, 2), torch.ones(n, 1, dtype=torch.bool),
                  Schedule(), generator=torch.Generator().manual_seed(0), **kwargs)
    return seen["t"]


def test_high_noise_fraction_zero_draws_what_it_always_did():
    plain = _seen_t()
    # the paper's t ~ U(0, 1), from the generator's first draws (old runs reproduce)
    torch.testing.assert_close(plain, torch.rand(4000, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(_seen_t(high_noise_fraction=0.0), plain)


def test_high_noise_fraction_draws_log_snr_uniformly_from_the_band():
    from scipy import stats

    sch = Schedule()
    lam = sch.log_snr(_seen_t(high_noise_fraction=1.0, high_noise_max_log_snr=-3.0).double())
    assert lam.min() >= sch.log_snr_min - 1e-6 and lam.max() <= -3.0 + 1e-6
    # uniform on [-10, -3]: Kolmogorov-Smirnov against scipy's uniform
    assert stats.kstest(lam.numpy(), stats.uniform(loc=-10, scale=7).cdf).pvalue > 1e-3
    # a fraction f: about f of the examples in the band beyond what U(0, 1) puts there
    mixed = sch.log_snr(_seen_t(high_noise_fraction=0.5, high_noise_max_log_snr=-3.0).double())
    p_band_uniform = (sch.log_snr(_seen_t().double()) <= -3.0).double().mean().item()  # about 0.13
    expected = 0.5 + 0.5 * p_band_uniform
    assert (mixed <= -3.0).double().mean().item() == pytest.approx(expected, abs=0.03)
