"""Samplers against a case with a known answer: Gaussian data, whose optimal denoiser is closed-form.

If x0 ~ N(mu, s^2), then E[x0 | z_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (z_t - alpha mu).
A correct sampler fed this denoiser must return samples with mean mu and std s.
"""
import pytest
import torch

from imagen_ref.device import make_generators, randn_per_image
from imagen_ref.diffusion import Schedule
from imagen_ref.samplers import sample_ddim, sample_ddpm, time_grid

MU, S = 0.3, 0.5


def gaussian_denoiser(schedule):
    def denoiser(z, t):
        a, s = schedule.alpha_sigma(t.double())
        a, s = a.view(-1, 1, 1, 1).to(z.dtype), s.view(-1, 1, 1, 1).to(z.dtype)
        return MU + a * S**2 / (a**2 * S**2 + s**2) * (z - a * MU)
    return denoiser


@pytest.mark.parametrize("sampler,kw", [(sample_ddim, {}), (sample_ddim, {"eta": 1.0}), (sample_ddpm, {}),
                                        (sample_ddpm, {"gamma": 0.3})])
@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_samplers_recover_the_data_distribution(sampler, kw, name):
    sch = Schedule(name)
    gens = make_generators(range(4))  # pixels are independent: 4 images x 2500 pixels
    x = randn_per_image((4, 1, 50, 50), gens, "cpu", torch.float64)
    # 400 steps: with uniform time steps the discretisation error is ~1% at 400, ~5% at 100
    out = sampler(gaussian_denoiser(sch), x, time_grid(400), sch, generators=gens, **kw)
    assert out.mean().item() == pytest.approx(MU, abs=0.02)
    assert out.std().item() == pytest.approx(S, rel=0.03)


def test_ddim_eta0_is_deterministic_and_ddpm_depends_on_generators():
    sch = Schedule()
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    a = sample_ddim(gaussian_denoiser(sch), x, time_grid(10), sch)
    b = sample_ddim(gaussian_denoiser(sch), x, time_grid(10), sch)
    assert torch.equal(a, b)
    c = sample_ddpm(gaussian_denoiser(sch), x, time_grid(10), sch, generators=make_generators([1, 2, 3]))
    d = sample_ddpm(gaussian_denoiser(sch), x, time_grid(10), sch, generators=make_generators([1, 2, 4]))
    assert torch.equal(c[:2], d[:2]) and not torch.equal(c[2], d[2])


def test_callback_sees_every_step_and_grid_shape():
    sch, calls = Schedule(), []
    ts = time_grid(7)
    assert len(ts) == 8 and ts[0] == 1 and ts[-1] == 0
    sample_ddim(gaussian_denoiser(sch), torch.zeros(1, 1, 1, 1), ts, sch,
                callback=lambda i, t, z, x0: calls.append(i))
    assert calls == list(range(7))
    with pytest.raises(ValueError):
        time_grid(0)
