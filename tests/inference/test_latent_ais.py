"""Latent AIS (Wu et al. 2017) against exact log p(x): a linear-Gaussian decoder, whose marginal is
N(b, W W' + s^2 I), and a one-dimensional Bernoulli decoder integrated by quadrature."""

import math

import numpy as np
import pytest
import torch

from inference.errors import SpecError
from inference.latent_ais import (
    fit_sigma,
    gaussian_log_likelihood,
    latent_ais,
    latent_ais_log_likelihood,
    sigmoid_schedule,
)
from tests.linear_gaussian import LinearGaussian


def _linear(seed=0, x_dim=6, z_dim=3, n=20):
    m = LinearGaussian(x_dim=x_dim, z_dim=z_dim, seed=seed)
    x = m.data(n, seed=seed + 1)
    W, b, s = m.W.detach(), m.b.detach(), float(m.log_s.detach().exp())
    return (lambda z: z @ W.T + b), x, s, m.log_marginal(x).detach()


def _estimate(decode, x, s, temperatures, runs, seed=0):
    return latent_ais_log_likelihood(decode, x, 3, sigma=s, num_temperatures=temperatures, num_runs=runs,
                                     leapfrog_steps=5, seed=seed)


def test_schedule_runs_from_zero_to_one_and_is_denser_at_the_ends():
    b = sigmoid_schedule(101)
    assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    assert b.diff()[0] < b.diff()[50] > b.diff()[-1]


def test_linear_gaussian_estimates_lie_within_their_standard_errors_of_exact():
    decode, x, s, exact = _linear()
    r = _estimate(decode, x, s, 300, 32)
    error = r.log_prob - exact
    # per image: within 4 standard errors (plus a little for the bias of log-mean-exp with 32 runs)
    assert bool((error.abs() < 4 * r.stderr + 0.02).all()), (error, r.stderr)
    assert abs(float(error.mean())) < 3 * float(r.stderr.pow(2).mean().sqrt()) / math.sqrt(len(error)) + 0.02
    assert 0.3 < float(r.acceptance.mean()) < 0.95


def test_estimates_tighten_with_more_temperatures():
    decode, x, s, exact = _linear(seed=2)
    results = {t: _estimate(decode, x, s, t, 16) for t in (5, 40, 400)}
    errors = {t: (r.log_prob - exact).abs().mean().item() for t, r in results.items()}
    stderrs = {t: r.stderr.mean().item() for t, r in results.items()}
    assert errors[5] > errors[40] > errors[400] and stderrs[5] > stderrs[40] > stderrs[400], (errors, stderrs)
    assert errors[400] < 0.2


def test_it_is_a_stochastic_lower_bound():
    """E[log p_hat] <= log p: with few temperatures clearly below; never significantly above."""
    decode, x, s, exact = _linear(seed=3, n=200)
    for temperatures, clearly_below in ((10, True), (200, False)):
        d = _estimate(decode, x, s, temperatures, 1).log_prob - exact
        upper = float(d.mean() + 3 * d.std() / math.sqrt(len(d)))
        assert float(d.mean()) <= 3 * float(d.std()) / math.sqrt(len(d)), (temperatures, d.mean())
        if clearly_below:
            assert upper < 0, (temperatures, d.mean())


def test_a_wrong_observation_model_fails_the_same_check():
    """The check has power: sigma 20% too large moves the estimate far outside its standard errors."""
    decode, x, s, exact = _linear()
    r = _estimate(decode, x, 1.2 * s, 300, 32)
    assert not bool(((r.log_prob - exact).abs() < 4 * r.stderr + 0.02).all())


def test_bernoulli_decoder_against_quadrature():
    """One latent, four binary pixels: log p(x) = log E_z[prod_d Bernoulli(x_d; sigmoid(a_d z + c_d))] by
    Gauss-Hermite quadrature (200 nodes: exact to many digits for this smooth integrand)."""
    a = torch.tensor([2.0, -1.5, 3.0, 0.5], dtype=torch.float64)
    c = torch.tensor([0.3, -0.2, 1.0, 0.0], dtype=torch.float64)
    x = torch.tensor([list(map(float, f"{i:04b}")) for i in range(16)], dtype=torch.float64)
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    z = torch.tensor(nodes).unsqueeze(-1)
    logits = z * a + c  # (Q, D)
    ll = (x.unsqueeze(1) * logits - torch.nn.functional.softplus(logits)).sum(-1)  # (16, Q)
    exact = torch.logsumexp(ll + torch.log(torch.tensor(weights / math.sqrt(2 * math.pi))), 1)
    assert abs(float(torch.logsumexp(exact, 0))) < 1e-9  # the 16 states sum to one
    r = latent_ais_log_likelihood(lambda z: z * a + c, x, 1, observation="bernoulli", num_temperatures=200,
                                  num_runs=32, leapfrog_steps=5, seed=0)
    assert bool(((r.log_prob - exact).abs() < 4 * r.stderr + 0.02).all()), (r.log_prob - exact, r.stderr)


def test_batches_give_the_same_shapes_and_seeded_runs_repeat():
    decode, x, s, _ = _linear()
    a = latent_ais_log_likelihood(decode, x, 3, sigma=s, num_temperatures=20, num_runs=3, seed=5, batch_size=7)
    b = latent_ais_log_likelihood(decode, x, 3, sigma=s, num_temperatures=20, num_runs=3, seed=5, batch_size=7)
    assert a.log_prob.shape == (20,) and a.log_weights.shape == (3, 20) and torch.equal(a.log_prob, b.log_prob)


def test_fit_sigma_picks_the_generating_value():
    decode, x, s, _ = _linear(n=100)
    grid = [s / 4, s / 2, s, 2 * s, 4 * s]
    best, scores = fit_sigma(decode, x, 3, grid, num_temperatures=200, num_runs=2, leapfrog_steps=5)
    assert best == s and set(scores) == set(grid)


@pytest.mark.parametrize("kwargs, message", [
    ({"observation": "poisson", "sigma": 1.0}, "observation must be one of gaussian, bernoulli"),
    ({}, "needs sigma"),
    ({"sigma": -1.0}, "sigma must be positive"),
    ({"observation": "bernoulli"}, "needs binary images"),
    ({"sigma": 1.0, "num_runs": 0}, "num_runs must be an integer >= 1"),
    ({"sigma": 1.0, "num_temperatures": 1}, "num_temperatures must be an integer >= 2"),
    ({"sigma": 1.0, "target_accept": 1.5}, "target_accept must lie in (0, 1)"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    decode, x, _, _ = _linear(n=2)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        latent_ais_log_likelihood(decode, x, 3, **kwargs)


def test_reverse_ais_from_exact_posterior_draws_is_an_upper_bound_that_sandwiches_exact():
    """Bidirectional Monte Carlo: forward AIS errs low, reverse AIS (from exact posterior draws) errs high, and
    with enough temperatures the two close in on the exact value (averaged over 50 images)."""
    m = LinearGaussian(x_dim=6, z_dim=3, seed=0)
    x = m.data(50, seed=7)
    exact = m.log_marginal(x).detach()
    W, b, s = m.W.detach(), m.b.detach(), float(m.log_s.detach().exp())
    with torch.no_grad():
        mean, cov = m.posterior(x)
        initial = torch.distributions.MultivariateNormal(mean, cov).sample((8,))  # (R, N, Z) exact draws
    ll = gaussian_log_likelihood(lambda z: z @ W.T + b, x, s)
    for temperatures, tight in ((5, False), (300, True)):
        fwd = latent_ais(ll, 50, 3, num_temperatures=temperatures, num_runs=8, leapfrog_steps=5, dtype=x.dtype)
        rev = latent_ais(ll, 50, 3, num_temperatures=temperatures, num_runs=8, leapfrog_steps=5, dtype=x.dtype,
                         reverse=True, initial=initial)
        lower, upper = float((fwd.log_prob - exact).mean()), float((rev.log_prob - exact).mean())
        assert lower < 0.05 and upper > -0.05, (temperatures, lower, upper)
        if tight:
            assert upper - lower < 0.2
        else:
            assert upper - lower > 0.5  # few temperatures: a wide sandwich
    with pytest.raises(SpecError, match="give initial"):
        latent_ais(ll, 50, 3, reverse=True)
