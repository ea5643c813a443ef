"""The IWAE objective against exact answers on a linear-Gaussian VAE."""

import math

import pytest
import torch

from inference.importance_weights import log_importance_weights
from inference.iwae_elbo import IWAEELBO
from inference.multi_sample_elbo import MultiSampleELBO
from ppl_models.errors import SpecError
from tests.linear_gaussian import LinearGaussian


def mean_and_se(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def test_exact_posterior_guide_gives_log_marginal_for_every_k_and_sample():
    # With q = p(z|x), every weight p(x,z)/q(z|x) equals p(x): no Monte Carlo error at all.
    lg = LinearGaussian(exact_guide=True)
    x = lg.data(7)
    exact = lg.log_marginal(x)
    for k in (1, 3, 50):
        bound = IWAEELBO(num_particles=k).per_datapoint(lg.model, lg.guide, x)
        assert torch.allclose(bound, exact, atol=1e-9)


def test_elbo_matches_closed_form_and_is_below_log_marginal():
    lg = LinearGaussian()
    x = lg.data(5)
    exact_elbo, log_px = lg.exact_elbo(x).detach(), lg.log_marginal(x).detach()
    assert (exact_elbo < log_px - 1e-3).all()  # the diagonal guide is not the posterior
    draws = torch.stack([MultiSampleELBO(num_particles=200).per_datapoint(lg.model, lg.guide, x) for _ in range(50)])
    mean = draws.mean(0)
    se = draws.std(0) / math.sqrt(50)
    assert ((mean - exact_elbo).abs() < 4 * se + 1e-6).all()


def repeated_bounds(elbo, lg, x, reps):
    """``reps`` independent draws of each datapoint's bound, shape ``(reps, N)``: the data
    are tiled so that one vectorised call gives them all."""
    return elbo.per_datapoint(lg.model, lg.guide, x.repeat(reps, 1)).reshape(reps, x.shape[0])


def test_iwae_bound_rises_with_k_towards_log_marginal():
    lg = LinearGaussian()
    x = lg.data(4)
    log_px = lg.log_marginal(x).sum().item()
    means = {}
    for k, reps in ((1, 20000), (5, 8000), (50, 2000), (1000, 200)):
        means[k] = mean_and_se(repeated_bounds(IWAEELBO(num_particles=k), lg, x, reps).sum(1))
    ks = sorted(means)
    for a, b in zip(ks, ks[1:]):
        (ma, sa), (mb, sb) = means[a], means[b]
        assert mb - ma > 3 * math.hypot(sa, sb), (a, b, means)
    m, s = means[1000]
    assert m < log_px + 3 * s
    gap1, gap1000 = log_px - means[1][0], log_px - m
    assert gap1000 < 0.05 * gap1, (gap1, gap1000)  # L_k -> log p(x): the k=1000 gap is a small fraction of the ELBO's


def test_minibatch_bound_is_sum_of_per_datapoint_bounds():
    # Recompute each datapoint's bound by hand from the same z draws, one datapoint at a time.
    lg = LinearGaussian()
    x = lg.data(6)
    k = 4
    w = log_importance_weights(lg.model, lg.guide, x, num_particles=k, max_plate_nesting=1)
    z = w.guide_trace.nodes["z"]["value"]  # (k, 6, 2)
    total = 0.0
    with torch.no_grad():
        for n in range(6):
            zn = z[:, n]
            log_p = (torch.distributions.Normal(0.0, 1.0).log_prob(zn).sum(-1)
                     + torch.distributions.Normal(zn @ lg.W.T + lg.b, lg.log_s.exp()).log_prob(x[n]).sum(-1))
            log_q = torch.distributions.Normal(x[n] @ lg.A.T + lg.c, lg.r.exp()).log_prob(zn).sum(-1)
            total += (torch.logsumexp(log_p - log_q, 0) - math.log(k)).item()
    batch_bound = (torch.logsumexp(w.log_w, 0) - math.log(k)).sum().item()
    assert batch_bound == pytest.approx(total, abs=1e-9)
    # ... which is not what one weight per minibatch (Pyro's RenyiELBO / RWS reduction) gives:
    whole_batch = (torch.logsumexp(w.log_w.sum(1), 0) - math.log(k)).item()
    assert abs(whole_batch - total) > 1e-3


def test_expected_minibatch_bound_equals_sum_of_single_datapoint_bounds():
    lg = LinearGaussian()
    x = lg.data(3)
    elbo = IWAEELBO(num_particles=5)
    batch = mean_and_se([-elbo.loss(lg.model, lg.guide, x) for _ in range(2000)])
    singles = [mean_and_se(repeated_bounds(elbo, lg, x[i:i + 1], 2000)) for i in range(3)]
    total, se = sum(m for m, _ in singles), math.sqrt(sum(s * s for _, s in singles))
    assert abs(batch[0] - total) < 4 * math.hypot(batch[1], se)


def _grads(lg, elbo, x, params):
    for p in lg.parameters():
        p.grad = None
    elbo.loss_and_grads(lg.model, lg.guide, x)
    return torch.cat([p.grad.flatten() for p in params])


def test_elbo_gradient_is_unbiased_for_closed_form_gradient():
    lg = LinearGaussian()
    x = lg.data(3)
    params = lg.model_params() + lg.guide_params()
    exact = torch.autograd.grad(-lg.exact_elbo(x).sum(), params)
    exact = torch.cat([g.flatten() for g in exact])
    draws = torch.stack([_grads(lg, MultiSampleELBO(num_particles=50), x, params) for _ in range(400)])
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(400)
    assert ((mean - exact).abs() < 4.5 * se + 1e-6).all(), (mean - exact) / se


def test_dreg_model_gradient_equals_iwae_and_guide_gradient_agrees_in_expectation():
    lg = LinearGaussian()
    x = lg.data(3)
    for seed in range(3):  # same draws -> identical model-parameter gradients
        torch.manual_seed(seed)
        g_iwae = _grads(lg, IWAEELBO(5), x, lg.model_params())
        torch.manual_seed(seed)
        g_dreg = _grads(lg, IWAEELBO(5, dreg=True), x, lg.model_params())
        assert torch.allclose(g_iwae, g_dreg, atol=1e-10)
    plain = torch.stack([_grads(lg, IWAEELBO(5), x, lg.guide_params()) for _ in range(1500)])
    dreg = torch.stack([_grads(lg, IWAEELBO(5, dreg=True), x, lg.guide_params()) for _ in range(1500)])
    diff = plain.mean(0) - dreg.mean(0)
    se = torch.sqrt(plain.var(0) / 1500 + dreg.var(0) / 1500)
    assert (diff.abs() < 4.5 * se + 1e-6).all(), diff / se
    assert (dreg.var(0).sum() < plain.var(0).sum())  # the point of DReG: less noisy guide gradients


def test_dreg_guide_gradient_vanishes_at_the_exact_posterior():
    # q = p(z|x): d log w / dz = 0 for every z, so the DReG guide gradient is exactly zero,
    # while the plain IWAE estimator still carries a zero-mean score-function term.
    lg = LinearGaussian(exact_guide="shift")
    x = lg.data(4)
    dreg = _grads(lg, IWAEELBO(5, dreg=True), x, [lg.shift])
    plain = _grads(lg, IWAEELBO(5), x, [lg.shift])
    assert dreg.abs().max() < 1e-9
    assert plain.abs().max() > 1e-3


def test_bad_options():
    with pytest.raises(SpecError, match="num_particles"):
        IWAEELBO(num_particles=0)
    lg = LinearGaussian(exact_guide=True)  # its guide reads the model's W, b, log_s
    with pytest.raises(SpecError, match="disjoint"):
        IWAEELBO(3, dreg=True).loss_and_grads(lg.model, lg.guide, lg.data(2))
    with pytest.raises(NotImplementedError):
        IWAEELBO(3, dreg=True).differentiable_loss(lg.model, lg.guide, lg.data(2))


@pytest.mark.parametrize("name", ["iwae", "vimco"])
def test_score_function_surrogate_reports_the_bound_itself(name):
    """With discrete latents the surrogate adds a score term t - t.detach(): zero in value, but written as
    bound + t - t it rounds (1e-4 nats per image at MNIST size); the reported loss must be the bound exactly."""
    from inference.vimco import VIMCO
    from ppl_models.sbn import SBNArchitecture, SigmoidBeliefNet

    torch.manual_seed(0)
    sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=64, hidden=[20, 10]))
    x = (torch.rand(100, 64) < 0.3).float()
    elbo = (VIMCO if name == "vimco" else IWAEELBO)(num_particles=5, max_plate_nesting=1)
    torch.manual_seed(1)
    surrogate = elbo.differentiable_loss(sbn.model, sbn.guide, x)
    torch.manual_seed(1)
    assert surrogate.item() == elbo.loss(sbn.model, sbn.guide, x)
