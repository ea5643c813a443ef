"""Mixture of Bernoullis: exact log p(x) against enumeration, the enumerated Pyro pair, sampling, bad input."""

import itertools

import pyro
import pyro.poutine as poutine
import pytest
import torch

from inference.queries import sample_model
from ppl_models.errors import DataError, SpecError
from ppl_models.mixture import BernoulliMixture, MixtureArchitecture
from ppl_models.specs import from_dict

ALL_4BIT = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)


def tiny(k=3, d=4, **kw):
    mix = BernoulliMixture(MixtureArchitecture(x_dim=d, num_components=k, init_scale=1.5, **kw)).double()
    with torch.no_grad():
        mix.weight_logits.copy_(torch.randn(k, dtype=torch.float64))
    return mix


def hand_log_prob(mix, x):
    """sum_k pi_k prod_d mu_kd^x_d (1 - mu_kd)^(1 - x_d), term by term."""
    pi, mu = torch.softmax(mix.weight_logits, -1), torch.sigmoid(mix.pixel_logits)
    out = []
    for row in x:
        total = 0.0
        for k in range(len(pi)):
            term = pi[k]
            for d in range(len(row)):
                term = term * (mu[k, d] if row[d] == 1 else 1 - mu[k, d])
            total = total + term
        out.append(torch.log(total))
    return torch.stack(out)


def test_log_prob_is_normalised_and_equals_the_hand_sum():
    mix = tiny()
    lp = mix.log_prob(ALL_4BIT)
    assert abs(lp.exp().sum().item() - 1) < 1e-12
    assert torch.allclose(lp, hand_log_prob(mix, ALL_4BIT), rtol=0, atol=1e-12)
    assert torch.allclose(mix.responsibilities(ALL_4BIT).sum(-1), torch.ones(16, dtype=torch.float64), atol=1e-12)


def test_log_prob_is_stable_for_extreme_logits():
    mix = BernoulliMixture(MixtureArchitecture(x_dim=784, num_components=5))
    with torch.no_grad():
        mix.pixel_logits.mul_(40)
    lp = mix.log_prob(torch.bernoulli(torch.full((7, 784), 0.5)))
    assert torch.isfinite(lp).all() and (lp < 0).all()


def test_trace_enum_elbo_is_the_exact_negative_log_likelihood_and_its_gradient():
    mix = tiny()
    x = ALL_4BIT[torch.tensor([0, 3, 5, 5, 9, 15])]
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    exact = -mix.log_prob(x).sum()
    assert abs(elbo.loss(mix.model, mix.guide, x) - exact.item()) < 1e-10
    loss = elbo.loss_and_grads(mix.model, mix.guide, x)
    assert abs(loss - exact.item()) < 1e-10
    enum_grads = [p.grad.clone() for p in mix.parameters()]
    expected = torch.autograd.grad(exact, list(mix.parameters()))
    for g, e in zip(enum_grads, expected):
        assert torch.allclose(g, e, rtol=0, atol=1e-10)


def test_the_component_is_enumerated_inside_the_data_plate():
    mix = tiny()
    x = ALL_4BIT[:5]
    trace = poutine.trace(poutine.enum(mix.model, first_available_dim=-2)).get_trace(x)
    for site in ("z", "x"):
        assert [f.name for f in trace.nodes[site]["cond_indep_stack"]] == ["data"]
    assert trace.nodes["z"]["infer"]["enumerate"] == "parallel"
    assert trace.nodes["z"]["value"].shape == (3, 1)


def test_sample_model_query_and_sample_frequencies():
    mix = tiny()
    draws = sample_model(mix.model, 10)
    assert draws["x"].shape == draws["x_mean"].shape == (10, 4)
    assert set(draws["x"].unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(draws["x_mean"], torch.sigmoid(mix.pixel_logits[draws["z"]]))
    # sample(n): each of the 16 vectors' frequency within 4.5 standard errors of its exact probability
    n = 40000
    x, means = mix.sample(n)
    assert x.shape == means.shape == (n, 4)
    counts = torch.stack([(x == row).all(-1).sum() for row in ALL_4BIT]).double()
    p = mix.log_prob(ALL_4BIT).exp().detach()
    assert ((counts / n - p).abs() <= 4.5 * (p * (1 - p) / n).sqrt()).all()


def test_random_initialisation_is_reproducible_and_breaks_symmetry():
    torch.manual_seed(3)
    a = BernoulliMixture(MixtureArchitecture(x_dim=6, num_components=4))
    torch.manual_seed(3)
    b = BernoulliMixture(MixtureArchitecture(x_dim=6, num_components=4))
    assert torch.equal(a.pixel_logits, b.pixel_logits)
    assert len({tuple(row.tolist()) for row in a.pixel_logits}) == 4


def test_init_from_data_gives_distinct_finite_components():
    x = torch.bernoulli(torch.full((50, 8), 0.3))
    mix = BernoulliMixture(MixtureArchitecture(x_dim=8, num_components=5))
    mix.init_from_data(x)
    assert torch.isfinite(mix.pixel_logits).all()
    assert torch.allclose(mix.weight_logits.softmax(-1), torch.full((5,), 0.2))
    with pytest.raises(DataError, match="num_components=5"):
        mix.init_from_data(x[:3])


@pytest.mark.parametrize("x, match", [
    (torch.zeros(3, 5), r"x must be \(N, 4\) binary images, got shape \(3, 5\)"),
    (torch.zeros(4), r"got shape \(4,\)"),
    (torch.tensor([[0, 1, 0.5, 1]]), "only 0 and 1.*found 0.5"),
    (torch.tensor([[0, 1, float("nan"), 1]]), "only 0 and 1.*found nan"),
])
def test_bad_data_gives_one_line_errors(x, match):
    mix = tiny()
    for call in (mix.log_prob, mix.responsibilities, mix.expected_statistics, mix.model):
        with pytest.raises(DataError, match=match) as err:
            call(x)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("data, match", [
    ({"num_components": 0}, "num_components must be >= 1, got 0"),
    ({"prior_count": 0}, "prior_count must be > 0, got 0"),
    ({"weight_prior_count": -1}, "weight_prior_count must be > 0"),
    ({"init": "kmeans"}, "init must be one of"),
    ({"x_dim": 4, "components": 3}, "unknown key model.components"),
])
def test_bad_architecture_gives_one_line_errors(data, match):
    with pytest.raises(SpecError, match=match) as err:
        from_dict(MixtureArchitecture, data, "model")
    assert "\n" not in str(err.value)


def test_architecture_needs_x_dim():
    with pytest.raises(SpecError, match="x_dim"):
        BernoulliMixture(MixtureArchitecture())
