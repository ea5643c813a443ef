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


# log Z of the two fixed models of test_exact_values_unchanged, computed before the refactoring
RBM_LOG_Z = 4.995233987849549
GB_LOG_Z = 4.195101195306203


class _RenamedRBM(torch.nn.Module):
    """A binary RBM whose parameters have other names and another order: exact enumeration may use
    only the TwoBlockEnergy interface (no ``weight`` attribute)."""

    visible_type = "bernoulli"

    def __init__(self, rbm):
        super().__init__()
        self.c = torch.nn.Parameter(rbm.hidden_bias.detach().clone())
        self.b = torch.nn.Parameter(rbm.visible_bias.detach().clone())
        self.coupling = torch.nn.Parameter(rbm.weight.detach().clone())
        self.num_visible, self.num_hidden = rbm.num_visible, rbm.num_hidden

    def free_energy(self, v):
        return -(v @ self.b) - torch.nn.functional.softplus(v @ self.coupling + self.c).sum(-1)

    def hidden_free_energy(self, h):
        return -(h @ self.c) - torch.nn.functional.softplus(h @ self.coupling.t() + self.b).sum(-1)

    def validate_parameters(self):
        pass

    def validate_visible(self, v, what="data"):
        return v


def test_generic_over_the_energy_interface():
    rbm = _rbm(6, 4)
    other = _RenamedRBM(rbm)
    assert not hasattr(other, "weight")
    for layer in ("hidden", "visible"):
        assert float(log_partition(other, layer=layer)) == pytest.approx(float(log_partition(rbm, layer=layer)), abs=1e-12)
    vs = binary_states(6, like=rbm.weight)
    torch.testing.assert_close(log_prob(other, vs), log_prob(rbm, vs), rtol=0, atol=1e-12)
    # states follow the first parameter's dtype: a float32 copy enumerates in float32
    assert float(log_partition(other.float())) == pytest.approx(float(log_partition(rbm)), abs=1e-4)


def test_exact_values_unchanged():
    """Pinned: the generic version gives the numbers the RBM-specific one did (float64, fixed weights)."""
    rbm = RBM(3, 2).double()
    with torch.no_grad():
        rbm.weight.copy_(torch.tensor([[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]]))
        rbm.visible_bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        rbm.hidden_bias.copy_(torch.tensor([-0.4, 0.6]))
    gb = GaussianBernoulliRBM(2, 2, sigma=torch.tensor([0.5, 2.0])).double()
    with torch.no_grad():
        gb.weight.copy_(torch.tensor([[0.5, -1.0], [1.5, 0.25]]))
        gb.visible_bias.copy_(torch.tensor([0.1, -0.2]))
        gb.hidden_bias.copy_(torch.tensor([-0.4, 0.6]))
    assert float(log_partition(rbm)) == pytest.approx(RBM_LOG_Z, abs=1e-12)
    assert float(log_partition(rbm, layer="visible")) == pytest.approx(RBM_LOG_Z, abs=1e-12)
    assert float(log_partition(gb)) == pytest.approx(GB_LOG_Z, abs=1e-12)
