"""The VAE pair: site shapes, likelihoods, and its log p(x) estimate against enumeration-free exact checks."""


import pyro.poutine as poutine
import pytest
import torch

from inference.log_likelihood import log_likelihood
from inference.queries import posterior_latents, sample_model
from ppl_models.errors import SpecError
from ppl_models.vae import VAE, VAEArchitecture
from tests.linear_gaussian import LinearGaussian


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_sites_live_in_the_data_plate_with_the_right_shapes(likelihood):
    vae = VAE(VAEArchitecture(x_dim=12, z_dim=3, hidden=[7, 5], likelihood=likelihood))
    x = torch.rand(4, 12).round() if likelihood == "bernoulli" else torch.rand(4, 12)
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    assert guide.nodes["z"]["value"].shape == (4, 3)
    for site in ("z", "x"):
        node = model.nodes[site]
        assert [f.name for f in node["cond_indep_stack"]] == ["data"]
        assert node["fn"].batch_shape == (4,) and node["fn"].event_shape[0] in (3, 12)
    assert torch.isfinite(model.log_prob_sum())


def test_bernoulli_likelihood_is_the_bernoulli_log_mass():
    vae = VAE(VAEArchitecture(x_dim=5, z_dim=2, hidden=[4]))
    z = torch.randn(3, 2)
    x = torch.tensor([[0, 1, 1, 0, 1.0]] * 3)
    p = torch.sigmoid(vae.decoder(z))
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    assert torch.allclose(vae.decoder.distribution(z).log_prob(x), expected, atol=1e-5)


def test_architecture_needs_x_dim():
    with pytest.raises(SpecError, match="x_dim"):
        VAE(VAEArchitecture())


def test_sampling_and_posterior_queries():
    vae = VAE(VAEArchitecture(x_dim=6, z_dim=2, hidden=[4]))
    draws = sample_model(vae.model, 10)
    assert draws["x"].shape == (10, 6) and set(draws["x"].unique().tolist()) <= {0.0, 1.0}
    assert ((draws["x_mean"] > 0) & (draws["x_mean"] < 1)).all()
    z = posterior_latents(vae.guide, torch.ones(3, 6), num_samples=4)["z"]
    assert z.shape == (4, 3, 2)


def test_log_likelihood_is_exact_with_the_exact_posterior_and_chunking_does_not_matter():
    lg = LinearGaussian(exact_guide=True)
    x = lg.data(11)
    est = log_likelihood(lg.model, lg.guide, x, num_particles=37, batch_size=4, particle_chunk=10)
    assert torch.allclose(est, lg.log_marginal(x).detach(), atol=1e-9)


def test_log_likelihood_approaches_log_marginal_from_below():
    lg = LinearGaussian()
    with torch.no_grad():  # a mean-field guide with the posterior's mean and 1.5x its marginal sd
        _, cov = lg.posterior(torch.zeros(1, 3, dtype=torch.float64))
        lg.A.copy_(cov @ lg.W.T / (2 * lg.log_s).exp())
        lg.c.copy_(-lg.A @ lg.b)
        lg.r.copy_((1.5 * cov.diagonal().sqrt()).log())
    x = lg.data(6)
    exact = lg.log_marginal(x).detach()
    est = log_likelihood(lg.model, lg.guide, x, num_particles=5000, batch_size=3, particle_chunk=700)
    elbo_gap = (exact - lg.exact_elbo(x).detach())
    assert ((exact - est).abs() < 0.1 * elbo_gap).all()  # k = 5000 closes > 90% of the ELBO's gap
    assert est.mean() < exact.mean() + 0.01  # a lower bound in expectation
