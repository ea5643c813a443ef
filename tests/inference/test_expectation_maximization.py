"""Batch EM: the hand M-step, monotone objective, parameter recovery, mid-epoch resume, the shared driver."""

import copy
import itertools
import time

import pytest
import torch

from inference.expectation_maximization import ExpectationMaximization
from inference.training import fit
from ppl_models.errors import SpecError
from ppl_models.mixture import BernoulliMixture, MixtureArchitecture


def mixture(k, d, dtype=torch.float64, **kw):
    return BernoulliMixture(MixtureArchitecture(x_dim=d, num_components=k, **kw)).to(dtype)


def simulate(n, weights, probs, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.multinomial(weights, n, replacement=True, generator=g)
    return torch.bernoulli(probs[z], generator=g), z


def em_iterations(mix, x, iterations, batch_size):
    em = ExpectationMaximization(mix)
    losses = []
    for _ in range(iterations):
        losses.append(sum(em.loss_and_grads(b) for b in x.split(batch_size)))
        em.end_epoch()
    return losses


def test_m_step_equals_the_hand_formula():
    mix = mixture(2, 2, prior_count=0.5, weight_prior_count=2.0)
    with torch.no_grad():
        mix.weight_logits.copy_(torch.tensor([0.3, 0.7], dtype=torch.float64).log())
        mix.pixel_logits.copy_(torch.logit(torch.tensor([[0.2, 0.9], [0.6, 0.4]], dtype=torch.float64)))
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # responsibilities by Bayes' rule, written out
    lik = torch.tensor([[0.3 * 0.2 * 0.9, 0.7 * 0.6 * 0.4],
                        [0.3 * 0.8 * 0.9, 0.7 * 0.4 * 0.4],
                        [0.3 * 0.2 * 0.1, 0.7 * 0.6 * 0.6]], dtype=torch.float64)
    r = lik / lik.sum(1, keepdim=True)
    n_k = r.sum(0)
    mu = (r.T @ x + 0.5) / (n_k[:, None] + 2 * 0.5)
    pi = (n_k + 2.0) / (3 + 2 * 2.0)
    em = ExpectationMaximization(mix)
    loss = em.loss_and_grads(x[:2]) + em.loss_and_grads(x[2:])
    assert abs(loss + lik.sum(1).log().sum().item()) < 1e-12
    em.end_epoch()
    assert torch.allclose(torch.sigmoid(mix.pixel_logits), mu, rtol=0, atol=1e-12)
    assert torch.allclose(torch.softmax(mix.weight_logits, -1), pi, rtol=0, atol=1e-12)
    assert em.stats is None and all(p.grad is None for p in mix.parameters())


def test_no_probability_is_zero_or_one_even_for_constant_pixels():
    x = torch.zeros(20, 3, dtype=torch.float64)
    x[:, 0] = 1
    mix = mixture(2, 3)
    em_iterations(mix, x, 3, 7)
    mu = torch.sigmoid(mix.pixel_logits)
    assert torch.isfinite(mix.pixel_logits).all() and ((mu > 0) & (mu < 1)).all()


@pytest.mark.parametrize("prior_count", [0.1, 1e-9])
def test_em_never_decreases_the_objective(prior_count):
    """log p(X) + log prior never decreases; with a vanishing prior that is the log-likelihood itself."""
    torch.manual_seed(1)
    x, _ = simulate(400, torch.tensor([0.4, 0.35, 0.25]), torch.rand(3, 12))
    mix = mixture(4, 12, prior_count=prior_count, weight_prior_count=prior_count)
    em = ExpectationMaximization(mix)
    prev_obj, prev_ll = -float("inf"), -float("inf")
    for _ in range(40):
        ll = mix.log_prob(x).sum().item()
        obj = ll + mix.log_prior().item()
        assert obj >= prev_obj - 1e-6
        if prior_count < 1e-6:
            assert ll >= prev_ll - 1e-6
        prev_obj, prev_ll = obj, ll
        for b in x.split(64):
            em.loss_and_grads(b)
        em.end_epoch()


def test_em_recovers_a_known_mixture_up_to_label_permutation():
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    probs = torch.where(torch.rand(3, 20, generator=g, dtype=torch.float64) < 0.5, 0.15, 0.85)
    probs[:, 0] = torch.tensor([0.5, 0.3, 0.7])
    n = 6000
    x, _ = simulate(n, weights, probs)
    best = None
    for restart in range(4):  # restarts from data, keeping the best fit, as one does against local optima
        torch.manual_seed(restart)
        mix = mixture(3, 20)
        mix.init_from_data(x)
        em_iterations(mix, x, 60, 1000)
        ll = mix.log_prob(x).sum().item()
        if best is None or ll > best[0]:
            best = (ll, mix)
    mix = best[1]
    pi, mu = torch.softmax(mix.weight_logits, -1).detach(), torch.sigmoid(mix.pixel_logits).detach()
    perm = min(itertools.permutations(range(3)), key=lambda p: (mu[list(p)] - probs).abs().sum().item())
    pi, mu = pi[list(perm)], mu[list(perm)]
    # smallest component has about 1200 images: a pixel's standard error <= 0.5 / sqrt(1200) = 0.0144,
    # 4.5 standard errors = 0.065 over 60 pixels; a weight's <= sqrt(0.25 / 6000) = 0.0065, 4.5 of them = 0.03
    assert (mu - probs).abs().max() < 0.065
    assert (pi - weights).abs().max() < 0.03


def test_resume_mid_epoch_from_state_dict_gives_the_same_parameters():
    torch.manual_seed(2)
    x, _ = simulate(300, torch.tensor([0.5, 0.5]), torch.rand(2, 9))
    batches = list(x.split(50))
    mix = mixture(3, 9)
    twin = copy.deepcopy(mix)
    em = ExpectationMaximization(mix)
    for b in batches:
        em.loss_and_grads(b)
    em.end_epoch()

    first = ExpectationMaximization(twin)
    for b in batches[:3]:
        first.loss_and_grads(b)
    state = copy.deepcopy(first.state_dict())
    resumed = ExpectationMaximization(twin)
    resumed.load_state_dict(state)
    for b in batches[3:]:
        resumed.loss_and_grads(b)
    resumed.end_epoch()
    assert torch.equal(mix.pixel_logits, twin.pixel_logits) and torch.equal(mix.weight_logits, twin.weight_logits)
    assert resumed.state_dict() == {"stats": None}
    resumed.load_state_dict(None)
    assert resumed.stats is None


def test_loss_has_no_side_effects():
    x, _ = simulate(40, torch.tensor([1.0]), torch.full((1, 5), 0.3))
    mix = mixture(2, 5)
    em = ExpectationMaximization(mix)
    before = copy.deepcopy(mix.state_dict())
    assert abs(em.loss(x) + mix.log_prob(x).sum().item()) < 1e-12
    em.end_epoch()
    assert em.stats is None and all(torch.equal(before[k], v) for k, v in mix.state_dict().items())


def test_the_shared_driver_runs_one_em_iteration_per_epoch_and_resumes(tmp_path):
    torch.manual_seed(4)
    x, _ = simulate(200, torch.tensor([0.6, 0.4]), torch.rand(2, 10))
    x = x.float()
    torch.manual_seed(0)
    by_hand = mixture(3, 10, dtype=torch.float32)
    driven, resumed = copy.deepcopy(by_hand), copy.deepcopy(by_hand)
    losses = em_iterations(by_hand, x, 4, 64)
    kw = dict(batch_size=64, progress=False, optimizer="adam", lr=0.1)
    result = fit(ExpectationMaximization(driven), (x,), module=driven, epochs=4, **kw)
    # the driver shuffles, so only summation order differs from the loop by hand
    assert [abs(h["train_loss"] * 200 - l) < 1e-3 for h, l in zip(result.history, losses)] == [True] * 4
    assert torch.allclose(driven.pixel_logits, by_hand.pixel_logits, atol=1e-4)
    ckpt = str(tmp_path / "em.pt")
    fit(ExpectationMaximization(resumed), (x,), module=resumed, epochs=2, checkpoint_path=ckpt, **kw)
    fit(ExpectationMaximization(resumed), (x,), module=resumed, epochs=4, checkpoint_path=ckpt, **kw)
    assert torch.equal(resumed.pixel_logits, driven.pixel_logits)


def test_em_rejects_a_model_without_the_em_interface():
    with pytest.raises(SpecError, match="expected_statistics.*got Linear"):
        ExpectationMaximization(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_em_on_mnist5k_reaches_a_sensible_test_log_likelihood():
    from ppl_models.data import load_dataset

    d = load_dataset("mnist5k", binarize="threshold")
    torch.manual_seed(0)
    mix = BernoulliMixture(MixtureArchitecture(x_dim=784, num_components=50))
    mix.init_from_data(d.train.x)
    started = time.perf_counter()
    losses = em_iterations(mix, d.train.x, 30, 1000)
    test = mix.log_prob(d.test.x).mean().item()
    print(f"K=50, 30 EM iterations: test {test:.2f} nats/image in {time.perf_counter() - started:.1f} s")
    assert all(b <= a * (1 - 1e-5) for a, b in zip(losses, losses[1:]))  # float32 sums of 3500 images
    assert test > -150
