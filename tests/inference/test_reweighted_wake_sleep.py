"""Reweighted wake-sleep and wake-sleep against exact expectations on an enumerable sigmoid belief net.

Every estimator's expectation is computed exactly by summing over all hidden
(and, for the sleep phase, visible) states; the Monte Carlo estimates must
agree within a few standard errors, estimated from repeats.
"""

import math

import pyro
import pytest
import torch

from inference.importance_weights import log_importance_weights
from inference.iwae_elbo import IWAEELBO
from inference.reweighted_wake_sleep import ReweightedWakeSleep, wake_sleep
from ppl_models.errors import SpecError
from tests.linear_gaussian import LinearGaussian
from tests.tiny_sbn import TinySBN, all_states

X = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)


def flat_grads(params):
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in params])


def estimator_draws(objective, sbn, x, reps):
    """``reps`` independent gradients of the objective's surrogate, model and guide parts: (reps, P)."""
    model_g, guide_g = [], []
    for _ in range(reps):
        sbn.zero_grad(set_to_none=True)
        objective.loss_and_grads(sbn.model, sbn.guide, x)
        model_g.append(flat_grads(sbn.model_params()))
        guide_g.append(flat_grads(sbn.guide_params()))
    return torch.stack(model_g), torch.stack(guide_g)


def exact_grad(value, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


def assert_agrees(draws, exact, n_se=4.5, atol=0.0):
    mean = draws.mean(0)
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((mean - exact).abs() <= n_se * se + atol).all(), (mean, exact, se)


def test_wake_theta_estimates_the_gradient_of_log_marginal_per_datapoint():
    sbn = TinySBN()
    target = -exact_grad(sbn.log_marginal(X).sum(), sbn.model_params())  # the surrogate is minimised
    model_g, _ = estimator_draws(ReweightedWakeSleep(num_particles=2000, max_plate_nesting=1), sbn, X, reps=20)
    # self-normalised weights: bias O(1/k), far below the tolerance here
    assert_agrees(model_g, target, atol=5e-3)


def test_wake_phi_estimates_the_posterior_weighted_guide_score():
    sbn = TinySBN()
    h = all_states(2)
    target = -exact_grad((sbn.posterior(X).detach() * sbn.log_q(X, h)).sum(), sbn.guide_params())
    _, guide_g = estimator_draws(ReweightedWakeSleep(num_particles=2000, max_plate_nesting=1), sbn, X, reps=20)
    assert_agrees(guide_g, target, atol=5e-3)


def test_sleep_phi_estimates_the_guide_score_under_the_models_joint():
    sbn = TinySBN()
    xs, hs = all_states(3), all_states(2)
    p_xh = torch.exp(sbn.log_joint(xs, hs)).detach()  # (8 x-states, 4 h-states), sums to 1
    n = 4000  # dreams per step = batch size
    target = -n * exact_grad((p_xh * sbn.log_q(xs, hs)).sum(), sbn.guide_params())
    x = X[:1].expand(n, 3)
    _, guide_g = estimator_draws(ReweightedWakeSleep(num_particles=1, insomnia=0.0, max_plate_nesting=1), sbn, x, reps=10)
    assert_agrees(guide_g, target)
    # a sleep phase that scored the real x instead of the dream would aim elsewhere
    wrong = -n * exact_grad((sbn.posterior(X[:1]).detach() * sbn.log_q(X[:1], hs)).sum(), sbn.guide_params())
    assert (wrong - target).abs().max() > 10 * (guide_g.std(0) / math.sqrt(10)).max()


def test_insomnia_mixes_wake_phi_and_sleep_phi_gradients():
    sbn = TinySBN()
    grads = {}
    for insomnia in (0.0, 0.25, 1.0):
        pyro.set_rng_seed(3)  # the same guide samples and dreams for each
        sbn.zero_grad(set_to_none=True)
        ReweightedWakeSleep(num_particles=5, insomnia=insomnia, max_plate_nesting=1).loss_and_grads(sbn.model, sbn.guide, X)
        grads[insomnia] = flat_grads(sbn.guide_params())
    # the sleep phase runs after the wake phase, so it draws the same dreams in every call
    assert torch.allclose(grads[0.25], 0.25 * grads[1.0] + 0.75 * grads[0.0], atol=1e-12)


def test_classic_wake_sleep_model_gradient_is_the_guide_expectation_of_log_joint():
    sbn = TinySBN()
    h = all_states(2)
    q = torch.exp(sbn.log_q(X, h)).detach()
    target = -exact_grad((q * sbn.log_joint(X, h)).sum(), sbn.model_params())
    model_g, _ = estimator_draws(wake_sleep(max_plate_nesting=1), sbn, X.repeat(500, 1), reps=20)
    assert_agrees(model_g, 500 * target)


def test_surrogates_match_the_per_datapoint_weights_recomputed_by_hand():
    sbn = TinySBN()
    rws = ReweightedWakeSleep(num_particles=7, max_plate_nesting=1)
    pyro.set_rng_seed(5)
    loss, model_s, guide_s = rws.surrogates(sbn.model, sbn.guide, X)
    pyro.set_rng_seed(5)
    w = log_importance_weights(sbn.model, sbn.guide, X, num_particles=7, max_plate_nesting=1)
    norm = torch.exp(w.log_w - torch.logsumexp(w.log_w, 0, keepdim=True)).detach()
    assert torch.allclose(norm.sum(0), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(model_s, -(norm * w.log_p).sum())
    assert torch.allclose(guide_s, -(norm * w.log_q).sum())
    # the reported loss is the negative IWAE bound on the same samples
    pyro.set_rng_seed(5)
    assert loss.item() == pytest.approx(IWAEELBO(num_particles=7, max_plate_nesting=1).loss(sbn.model, sbn.guide, X))


def test_samples_are_constants_for_a_reparameterised_guide():
    # wake-phi differentiates log q(z | x) at fixed z: for a Normal(mu, s) guide that is (z - mu) / s^2,
    # with no pathwise term through z
    lg = LinearGaussian()
    x = lg.data(4)
    w = log_importance_weights(lg.model, lg.guide, x, num_particles=3, max_plate_nesting=1, constant_samples=True)
    z = w.guide_trace.nodes["z"]["value"]
    assert not z.requires_grad
    (g_c,) = torch.autograd.grad(w.log_q.sum(), [lg.c])
    mu, s = x @ lg.A.T + lg.c, lg.r.exp()
    assert torch.allclose(g_c, ((z - mu) / s**2).sum((0, 1)).detach())


def test_bad_options_and_pairs_get_one_line_errors():
    with pytest.raises(SpecError, match="insomnia must be a number in \\[0, 1\\]"):
        ReweightedWakeSleep(insomnia=1.5)
    with pytest.raises(SpecError, match="num_particles must be a positive integer"):
        ReweightedWakeSleep(num_particles=0)
    sbn = TinySBN()
    rws = ReweightedWakeSleep(num_particles=2, insomnia=0.5, sleep_inputs=("image",), max_plate_nesting=1)
    with pytest.raises(SpecError, match="sample site\\(s\\) \\['image'\\]"):
        rws.loss_and_grads(sbn.model, sbn.guide, X)
