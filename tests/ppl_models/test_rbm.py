"""RBM and Gaussian-Bernoulli RBM against brute force on tiny models."""

import math

import pytest
import torch

from ppl_models.errors import DataError, PPLModelsError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM
from inference.exact_enumeration import binary_states


def _random_rbm(V=4, H=3, scale=1.0, dtype=torch.float64):
    rbm = RBM(V, H, weight_scale=scale).to(dtype)
    with torch.no_grad():
        rbm.visible_bias.normal_(0, scale)
        rbm.hidden_bias.normal_(0, scale)
    return rbm


def _random_gbrbm(V=2, H=3, learn_sigma=True, dtype=torch.float64):
    gb = GaussianBernoulliRBM(V, H, sigma=torch.tensor([0.7, 1.3, 0.9, 1.1][:V]), learn_sigma=learn_sigma, weight_scale=0.8)
    gb = gb.to(dtype)
    with torch.no_grad():
        gb.visible_bias.normal_(0, 1)
        gb.hidden_bias.normal_(0, 1)
    return gb


def test_energy_matches_hand_formula():
    rbm = _random_rbm()
    v = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    h = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    W, b, c = rbm.weight, rbm.visible_bias, rbm.hidden_bias
    expected = -sum(v[i] * W[i, j] * h[j] for i in range(4) for j in range(3)) - (b * v).sum() - (c * h).sum()
    assert torch.allclose(rbm.energy(v, h), expected, atol=1e-12)


def test_free_energy_is_brute_force_marginal_of_energy():
    rbm = _random_rbm()
    vs, hs = binary_states(4, like=rbm.weight), binary_states(3, like=rbm.weight)
    energies = rbm.energy(vs[:, None, :], hs[None, :, :])  # (16, 8)
    assert torch.allclose(rbm.free_energy(vs), -torch.logsumexp(-energies, 1), atol=1e-10)
    assert torch.allclose(rbm.hidden_free_energy(hs), -torch.logsumexp(-energies, 0), atol=1e-10)


def test_conditionals_match_enumeration():
    rbm = _random_rbm()
    vs, hs = binary_states(4, like=rbm.weight), binary_states(3, like=rbm.weight)
    joint = torch.softmax(-rbm.energy(vs[:, None, :], hs[None, :, :]).flatten(), 0).reshape(16, 8)
    p_h_given_v = joint / joint.sum(1, keepdim=True)  # (16, 8)
    assert torch.allclose(rbm.hidden_probs(vs), p_h_given_v @ hs, atol=1e-10)
    p_v_given_h = joint / joint.sum(0, keepdim=True)
    assert torch.allclose(rbm.visible_probs(hs), p_v_given_h.t() @ vs, atol=1e-10)
    assert rbm.visible_mean is not None and torch.equal(rbm.visible_mean(hs), rbm.visible_probs(hs))


def test_gaussian_bernoulli_free_energy_and_conditionals():
    gb = _random_gbrbm()
    hs = binary_states(3, like=gb.weight)
    v = torch.randn(5, 2, dtype=torch.float64)
    energies = gb.energy(v[:, None, :], hs[None, :, :])
    assert torch.allclose(gb.free_energy(v), -torch.logsumexp(-energies, 1), atol=1e-10)
    assert torch.allclose(gb.hidden_probs(v), torch.softmax(-energies, 1) @ hs, atol=1e-10)
    # p(v | h) is N(visible_mean(h), sigma^2): E(v, h) differs from -log N(v) by a v-independent constant
    mean, s = gb.visible_mean(hs), gb.sigma
    log_normal = torch.distributions.Normal(mean[None], s).log_prob(v[:, None, :]).sum(-1)  # (5, 8)
    gap = energies + log_normal
    assert torch.allclose(gap, gap[:1].expand_as(gap), atol=1e-10)


def test_gaussian_bernoulli_hidden_free_energy_by_quadrature():
    gb = _random_gbrbm()
    grid = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    step = (grid[1] - grid[0]).item()
    vv = torch.cartesian_prod(grid, grid)
    hs = binary_states(3, like=gb.weight)
    log_integrand = -gb.energy(vv[:, None, :], hs[None])  # (grid^2, 8)
    numeric = torch.logsumexp(log_integrand, 0) + 2 * math.log(step)
    assert torch.allclose(-gb.hidden_free_energy(hs), numeric, atol=1e-6)


@pytest.mark.parametrize("make", [_random_rbm, _random_gbrbm])
def test_energy_gradients_match_autograd(make):
    model = make()
    v = torch.bernoulli(torch.full((7, model.num_visible), 0.5, dtype=torch.float64))
    if model.visible_type == "gaussian":
        v = torch.randn_like(v)
    h = torch.rand(7, model.num_hidden, dtype=torch.float64)
    ours = model.energy_gradients(v, h)
    model.zero_grad()
    model.energy(v, h).mean().backward()
    names = {n for n, p in model.named_parameters()}
    assert set(ours) == names
    for name, p in model.named_parameters():
        assert torch.allclose(ours[name], p.grad, atol=1e-10), name


@pytest.mark.parametrize("make", [_random_rbm, _random_gbrbm])
def test_weighted_energy_gradients_match_autograd(make):
    model = make()
    v = torch.randn(6, model.num_visible, dtype=torch.float64)
    h = torch.rand(6, model.num_hidden, dtype=torch.float64)
    weights = torch.tensor([0.5, 0.5, 0.5, -1 / 3, -1 / 3, -1 / 3], dtype=torch.float64)
    ours = model.energy_gradients(v, h, weights)
    model.zero_grad()
    (weights * model.energy(v, h)).sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(ours[name], p.grad, atol=1e-10), name


def test_fixed_sigma_is_a_buffer_not_a_parameter():
    gb = GaussianBernoulliRBM(3, 2, sigma=0.5)
    assert "log_sigma" not in dict(gb.named_parameters())
    assert torch.allclose(gb.sigma, torch.full((3,), 0.5))
    assert set(gb.energy_gradients(torch.zeros(2, 3), torch.zeros(2, 2))) == {"weight", "visible_bias", "hidden_bias"}


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_grey_level_data_rejected_by_binary_rbm():
    with pytest.raises(DataError) as e:
        RBM(4, 3).validate_visible(torch.tensor([[0.0, 0.5, 1.0, 1.0]]))
    assert "binary" in _one_line(e) and "0.5" in str(e.value)


def test_nan_in_data_and_weights_rejected():
    with pytest.raises(DataError) as e:
        GaussianBernoulliRBM(2, 2).validate_visible(torch.tensor([[0.0, float("nan")]]), "data")
    assert "finite" in _one_line(e)
    with pytest.raises(DataError):
        RBM(2, 2).validate_visible(torch.ones(3, 5))
    rbm = RBM(4, 3)
    with torch.no_grad():
        rbm.weight[1, 2] = float("nan")
    with pytest.raises(SpecError) as e:
        rbm.validate_parameters()
    assert "weight" in _one_line(e) and "(1, 2)" in str(e.value)


@pytest.mark.parametrize("kwargs", [{"num_visible": 0}, {"num_hidden": 2.5}, {"weight_scale": -1.0}])
def test_bad_sizes_rejected(kwargs):
    args = {"num_visible": 3, "num_hidden": 2, **kwargs}
    with pytest.raises(PPLModelsError) as e:
        RBM(**args)
    _one_line(e)


def test_bad_sigma_rejected():
    with pytest.raises(SpecError):
        GaussianBernoulliRBM(3, 2, sigma=0.0)
    with pytest.raises(SpecError):
        GaussianBernoulliRBM(3, 2, sigma=torch.ones(4))
