"""The fully visible Boltzmann machine against exact answers: log Z and log p by brute force, the PCD
gradient by the hand-derived Boltzmann-machine rule, AIS against exact log Z, training towards a known
target, completion against the exact conditional, and bad input."""

import itertools
import math

import pytest
import torch

from inference.ais import ais_log_partition
from inference.contrastive_divergence import ContrastiveDivergence
from inference.errors import DataError, SpecError
from inference.exact_enumeration import log_partition
from inference.single_site_gibbs import SingleSiteGibbs, gibbs_sweep
from inference.training import fit
from ppl_models import catalogue
from ppl_models.catalogue.run_directory import TrainedModel
from ppl_models.fvbm import FullyVisibleBM
from tests.inference.test_single_site_gibbs import P_MIN, exact_probs, gof_pvalue, states, strong_fvbm


def brute_log_z(bm: FullyVisibleBM) -> float:
    """log sum_v exp(sum_{i<j} W_ij v_i v_j + b'v), term by term."""
    W, b = bm.weight.detach().double().tolist(), bm.visible_bias.detach().double().tolist()
    d = bm.num_visible
    terms = [sum(b[i] * v[i] for i in range(d)) + sum(W[i][j] * v[i] * v[j] for i in range(d) for j in range(i + 1, d))
             for v in itertools.product([0, 1], repeat=d)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def test_exact_log_likelihood_matches_brute_force():
    bm = strong_fvbm(7, seed=3)
    log_z = float(log_partition(bm, layer="visible"))
    assert log_z == pytest.approx(brute_log_z(bm), abs=1e-5)
    v = states(7)
    log_p = -bm.free_energy(v).detach().double() - log_z
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-6)
    # the exact pseudo-likelihood: each unit's conditional p(v_i | v_-i) from the joint
    probs = exact_probs(bm)
    x = v[[5, 77, 100]]
    index = lambda s: int((s.long() * 2 ** torch.arange(6, -1, -1)).sum())
    expected = []
    for row in x:
        total = 0.0
        for i in range(7):
            flipped = row.clone()
            flipped[i] = 1 - flipped[i]
            total += math.log(probs[index(row)] / (probs[index(row)] + probs[index(flipped)]))
        expected.append(total)
    assert bm.pseudo_log_likelihood(x).tolist() == pytest.approx(expected, abs=1e-5)


def test_pcd_gradient_is_data_minus_model_correlations():
    torch.manual_seed(0)
    bm = FullyVisibleBM(5, weight_scale=0.5)
    data = (torch.rand(12, 5) < 0.4).float()
    cd = ContrastiveDivergence(bm, k=1, persistent=True, num_chains=7, kernel_class=SingleSiteGibbs)
    cd.loss_and_grads(data)
    neg = cd.kernel.initial_params["v"]  # the chains after this update's sweep: its negative sample
    # d(-log p)/dW_ij = <v_i v_j>_model - <v_i v_j>_data for the pair (i != j); d/db_i likewise with v_i
    expected_w = neg.t() @ neg / 7 - data.t() @ data / 12
    expected_w.fill_diagonal_(0)
    assert torch.allclose(bm.weight.grad, expected_w, atol=1e-6)
    assert torch.allclose(bm.visible_bias.grad, neg.mean(0) - data.mean(0), atol=1e-6)
    # and energy_gradients is the autograd derivative of E for the pair parameter (twice each stored entry's)
    w = bm.weight.detach().clone().requires_grad_()
    energy = (-0.5 * ((data @ w) * data).sum(-1) - data @ bm.visible_bias.detach()).mean()
    (auto,) = torch.autograd.grad(energy, w)
    auto = auto + auto.t()
    auto.fill_diagonal_(0)
    assert torch.allclose(bm.energy_gradients(data)["weight"], auto, atol=1e-6)


def test_ais_log_z_agrees_with_exact():
    bm = strong_fvbm(12, seed=4)
    with torch.no_grad():
        bm.weight.mul_(0.5)
    bm.transition = gibbs_sweep
    torch.manual_seed(1)
    result = ais_log_partition(bm, num_runs=200, num_temperatures=500)
    exact = float(log_partition(bm, layer="visible"))
    assert abs(result.log_z - exact) < 3 * result.log_z_std + 0.05, (result.log_z, exact, result.log_z_std)


def test_pcd_through_the_shared_driver_learns_a_known_fvbm():
    target = strong_fvbm(5, seed=5)
    probs = exact_probs(target)
    torch.manual_seed(0)
    data = states(5)[torch.multinomial(probs.float(), 2000, replacement=True)]
    bm = FullyVisibleBM(5)
    before = float((-bm.free_energy(data).double() - log_partition(bm, layer="visible")).mean())
    cd = ContrastiveDivergence(bm, k=1, persistent=True, num_chains=100, kernel_class=SingleSiteGibbs)
    fit(cd, (data,), module=bm, epochs=10, batch_size=100, optimizer="sgd", lr=0.1, momentum=0.5, progress=False)
    after = float((-bm.free_energy(data).double() - log_partition(bm, layer="visible")).mean())
    best = float((-target.free_energy(data).double() - log_partition(target, layer="visible")).mean())
    assert after > before + 0.3 and after > best - 0.1, (before, after, best)
    bm.validate_parameters()  # still symmetric with a zero diagonal after training


def test_completion_query_follows_the_exact_conditional():
    bm = strong_fvbm(5, seed=6)
    bm.transition = gibbs_sweep
    spec = catalogue.make_spec("fvbm", overrides=["model.num_visible=5"])
    trained = TrainedModel("(tiny)", spec, bm.eval(), {"image_shape": [1, 5]}, catalogue.family("fvbm"))
    observed = torch.tensor([True, False, True, False, False])
    x = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]).expand(4000, 5)
    s = states(5)
    probs = exact_probs(bm)
    keep = (s[:, observed] == x[0, observed]).all(1)
    answer = trained.query("complete", x, mask=observed, num_samples=1, sweeps=25, draws=1)
    completions = answer.tensors["completions"][:, 0]
    assert torch.equal(completions[:, observed], x[:, observed])
    assert gof_pvalue(completions[:, ~observed], probs[keep] / probs[keep].sum()) > P_MIN
    exact = trained.query("log_prob", s[:3])
    assert exact.numbers["estimator"].startswith("exact")
    assert exact.tensors["log_prob"].tolist() == pytest.approx(
        (-bm.free_energy(s[:3]).double() - brute_log_z(bm)).tolist(), abs=1e-5)
    with pytest.raises(SpecError, match="fvbm cannot answer posterior queries .it has no latent variables"):
        trained.query("posterior", x[:2])


def test_bad_input_is_a_one_line_error():
    bm = FullyVisibleBM(4)
    with pytest.raises(SpecError, match="num_visible must be a positive integer"):
        FullyVisibleBM(0)
    with torch.no_grad():
        bm.weight[0, 1] = 1.0  # W_01 != W_10
    with pytest.raises(SpecError, match="symmetric with a zero diagonal"):
        bm.validate_parameters()
    with pytest.raises(DataError, match=r"data must have shape \(\.\.\., 4\)"):
        FullyVisibleBM(4).validate_visible(torch.zeros(2, 3))
    with pytest.raises(DataError, match="must be binary"):
        FullyVisibleBM(4).validate_visible(torch.full((2, 4), 0.5))
    with pytest.raises(SpecError, match="needs its Gibbs sweep"):
        ais_log_partition(FullyVisibleBM(4), num_runs=2, num_temperatures=5)
