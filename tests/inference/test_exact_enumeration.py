"""Exact log Z / log p(v) by enumeration against brute force over the joint."""

import math

import pytest
import torch

from inference.exact_enumeration import binary_states, log_partition, log_prob
from ppl_models.errors import DataError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM


def _rbm(V, H):
    rbm = RBM(V, H, weight_scale=1.0).double()
    with torch.no_grad():
        rbm.visible_bias.normal_()
        rbm.hidden_bias.normal_()
    return rbm


def test_binary_states_counting_order():
    states = binary_states(3)
    assert states.shape == (8, 3) and states.dtype == torch.get_default_dtype()
    assert states[5].tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(binary_states(3, 2, 6), states[2:6])
    assert len({tuple(s) for s in states.tolist()}) == 8


def test_log_z_matches_brute_force_joint_either_layer():
    rbm = _rbm(5, 4)
    vs, hs = binary_states(5, like=rbm.weight), binary_states(4, like=rbm.weight)
    with torch.no_grad():
        brute = torch.logsumexp(-rbm.energy(vs[:, None, :], hs[None]).flatten(), 0)
    assert float(log_partition(rbm)) == pytest.approx(float(brute), abs=1e-10)
    assert float(log_partition(rbm, layer="visible")) == pytest.approx(float(brute), abs=1e-10)
    assert float(log_partition(rbm, layer="hidden", chunk_size=3)) == pytest.approx(float(brute), abs=1e-10)


def test_log_prob_normalises_and_is_batched():
    rbm = _rbm(6, 3)
    vs = binary_states(6, like=rbm.weight)
    lp = log_prob(rbm, vs)
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-10)
    assert torch.allclose(log_prob(rbm, vs.reshape(8, 8, 6)), lp.reshape(8, 8))


def test_gaussian_bernoulli_log_z_by_quadrature():
    gb = GaussianBernoulliRBM(1, 3, sigma=0.8, weight_scale=1.0).double()
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)
    with torch.no_grad():
        numeric = torch.logsumexp(-gb.free_energy(grid[:, None]), 0) + math.log(float(grid[1] - grid[0]))
    assert float(log_partition(gb)) == pytest.approx(float(numeric), abs=1e-6)


def test_float32_model_large_hidden_layer_is_chunked():
    rbm = RBM(30, 16, weight_scale=0.1)
    ref = log_partition(rbm.double(), layer="hidden", chunk_size=2**16)
    assert float(log_partition(rbm.float(), chunk_size=1000)) == pytest.approx(float(ref), abs=1e-3)


def test_refusals():
    with pytest.raises(SpecError) as e:
        log_partition(RBM(30, 21))
    assert "at most 20" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SpecError):
        log_partition(GaussianBernoulliRBM(3, 2), layer="visible")
    with pytest.raises(SpecError):
        log_partition(RBM(3, 2), layer="both")
    with pytest.raises(DataError):
        log_prob(RBM(3, 2), torch.full((1, 3), 0.5))
