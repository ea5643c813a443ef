"""RBM and Gaussian-Bernoulli RBM against brute force on tiny models."""

import math

import pytest
import torch

from inference.energy import (
    PARAMETER_ROLES,
    AnnealableEnergy,
    AnnealingPath,
    TwoBlockEnergy,
)
from inference.exact_enumeration import binary_states
from ppl_models.errors import DataError, PPLModelsError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM
from ppl_models.rbm_annealing import BaseRateAnnealingPath


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


# -- the inference.energy interface ---------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: RBM(3, 2), lambda: GaussianBernoulliRBM(3, 2),
                                  lambda: GaussianBernoulliRBM(3, 2, learn_sigma=True)])
def test_models_satisfy_the_energy_protocols(make):
    model = make()
    assert isinstance(model, TwoBlockEnergy) and isinstance(model, AnnealableEnergy)
    assert isinstance(model.annealing_path(model.base_rate()), AnnealingPath)
    assert not hasattr(model, "sample_hidden")


@pytest.mark.parametrize("make, expected", [
    (lambda: RBM(3, 2), {"weight": "coupling", "visible_bias": "visible_bias", "hidden_bias": "hidden_bias"}),
    (lambda: GaussianBernoulliRBM(3, 2, learn_sigma=False),
     {"weight": "coupling", "visible_bias": "visible_bias", "hidden_bias": "hidden_bias"}),
    (lambda: GaussianBernoulliRBM(3, 2, learn_sigma=True),
     {"weight": "coupling", "visible_bias": "visible_bias", "hidden_bias": "hidden_bias", "log_sigma": "visible_scale"}),
], ids=["rbm", "gbrbm-fixed-sigma", "gbrbm-learn-sigma"])
def test_parameter_roles_cover_exactly_the_parameters(make, expected):
    model = make()
    assert model.parameter_roles == expected
    assert set(model.parameter_roles) == {name for name, _ in model.named_parameters()}
    assert set(model.parameter_roles.values()) <= set(PARAMETER_ROLES)
    # a fixed log_sigma is a buffer: no role (nothing may decay or train it)
    assert ("log_sigma" in model.parameter_roles) == isinstance(getattr(model, "log_sigma", None), torch.nn.Parameter)


@pytest.mark.parametrize("make", [_random_rbm, _random_gbrbm])
def test_annealing_path_step_is_the_difference_of_intermediate_log_densities(make):
    model = make()
    V = model.num_visible
    base = torch.randn(V, dtype=torch.float64)
    path = model.annealing_path(base)

    def f(beta, v):  # f_beta(v) = (1 - beta) log p_A*(v) - beta E_v(v) + sum_j softplus(beta x_j(v))
        if model.visible_type == "bernoulli":
            log_base = v @ base
        else:
            log_base = -(((v - base) / model.sigma) ** 2).sum(-1) / 2
        return (1 - beta) * log_base - beta * model.visible_energy(v) \
            + torch.nn.functional.softplus(beta * model.hidden_logits(v)).sum(-1)

    v = binary_states(V, like=model.weight) if model.visible_type == "bernoulli" else torch.randn(9, V, dtype=torch.float64)
    with torch.no_grad():
        increment, v_next = path.step(v, 0.3, 0.45)
        expected = f(0.45, v) - f(0.3, v)
        assert torch.allclose(increment, expected, atol=1e-12)
        assert v_next.shape == v.shape and v_next.dtype == v.dtype
        assert path.step(v, 0.3, 0.45, transition=False)[1] is None
        # log Z_A normalises f_0: enumeration (binary) or the Gaussian density (real units)
        if model.visible_type == "bernoulli":
            assert float(torch.logsumexp(f(0.0, v), 0)) == pytest.approx(path.log_z_base, abs=1e-10)
        else:
            log_normal = torch.distributions.Normal(base, model.sigma).log_prob(v).sum(-1)
            torch.testing.assert_close(f(0.0, v) - path.log_z_base, log_normal, rtol=0, atol=1e-12)
            assert path.sample_base(4).shape == (4, V)


def test_annealing_path_rejects_a_base_of_the_wrong_shape():
    with pytest.raises(SpecError) as e:
        BaseRateAnnealingPath(RBM(3, 2), torch.zeros(4))
    assert "(3,)" in _one_line(e)
    with pytest.raises(SpecError):
        RBM(3, 2).annealing_path(torch.tensor([0.0, float("inf"), 0.0]))


# -- pixel values <-> visible units ------------------------------------------------------------------
def test_binary_rbm_scaling_is_the_identity():
    rbm, x = RBM(3, 2), torch.rand(4, 3)
    assert rbm.to_visible(x) is x and rbm.to_pixels(x) is x and rbm.log_jacobian() == 0.0


def test_gbrbm_standardisation_round_trip_and_jacobian():
    gb = GaussianBernoulliRBM(3, 2).double()
    x = torch.rand(50, 3, dtype=torch.float64)
    x[:, 2] = 0.5 + 0.001 * x[:, 2]  # a nearly constant pixel: its scale is floored
    assert gb.fit_standardization(x, min_scale=0.1) is gb
    torch.testing.assert_close(gb.data_offset, x.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(gb.data_scale, torch.cat([x[:, :2].std(0), torch.tensor([0.1], dtype=torch.float64)]),
                               rtol=0, atol=1e-12)
    u = gb.to_visible(x)
    torch.testing.assert_close(u[:, :2].mean(0), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(u[:, :2].std(0), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(gb.to_pixels(u), x, rtol=0, atol=1e-12)
    # log_jacobian is log |det dv/dx| of the affine map x -> v
    jac = torch.autograd.functional.jacobian(gb.to_visible, x[0])
    assert gb.log_jacobian() == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet), abs=1e-12)
    assert gb.log_jacobian() == pytest.approx(-float(gb.data_scale.log().sum()), abs=1e-12)


def test_gbrbm_scaling_is_saved_with_the_weights():
    gb = GaussianBernoulliRBM(3, 2)
    keys = set(gb.state_dict())
    assert {"data_offset", "data_scale"} <= keys and "data_offset" not in dict(gb.named_parameters())
    torch.testing.assert_close(gb.to_visible(torch.ones(2, 3)), torch.ones(2, 3))  # identity until fitted
    assert gb.log_jacobian() == 0.0
    gb.fit_standardization(torch.rand(10, 3), min_scale=0.05)
    fresh = GaussianBernoulliRBM(3, 2)
    fresh.load_state_dict(gb.state_dict())
    assert torch.equal(fresh.data_offset, gb.data_offset) and torch.equal(fresh.data_scale, gb.data_scale)
    # a state_dict saved when the catalogue attached these buffers from outside has the same keys
    old = GaussianBernoulliRBM(3, 2)
    state = {k: v for k, v in old.state_dict().items()}
    state["data_offset"], state["data_scale"] = torch.full((3,), 0.25), torch.full((3,), 2.0)
    fresh.load_state_dict(state)
    assert fresh.log_jacobian() == pytest.approx(-3 * math.log(2.0))


def test_standardisation_refusals():
    gb = GaussianBernoulliRBM(3, 2)
    with pytest.raises(SpecError):
        gb.fit_standardization(torch.rand(5, 3), min_scale=0.0)
    with pytest.raises(DataError):
        gb.fit_standardization(torch.rand(5, 4), min_scale=0.1)
    with pytest.raises(DataError) as e:
        gb.fit_standardization(torch.rand(1, 3), min_scale=0.1)
    assert "2" in _one_line(e)
