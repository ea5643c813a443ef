"""The deep Boltzmann machine against exact answers on models small enough to enumerate.

Block Gibbs of a 3-hidden-layer DBM against its exact joint (chi-square; a sampler that drops the
top-down input fails it), free energies and conditionals against brute-force sums, AIS log Z of 2- and
3-layer DBMs against exact, exact log p(v) with the first hidden layer enumerated against brute force,
the joint-training statistic against the hand-derived gradient, the pretraining RBMs' doubled copies,
and bad input.
"""

import json
import math

import pytest
import torch
from scipy.stats import chisquare

from inference.ais import ais_log_partition
from inference.block_gibbs import BlockGibbs
from inference.contrastive_divergence import ContrastiveDivergence
from inference.energy import AnnealableEnergy
from inference.errors import DataError, SpecError
from inference.exact_enumeration import binary_states, log_partition, log_prob_observed
from inference.mcmc_driver import run_mcmc
from inference.mean_field import mean_field
from ppl_models import catalogue
from ppl_models.dbm import DBM, check_layer_sizes
from ppl_models.dbm_pretraining import TiedCopiesRBM, compose_dbm, pretraining_rbms
from tests.cli_util import run_cli


def _dbm(sizes, scale=1.0, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    dbm = DBM(sizes, weight_scale=scale)
    with torch.no_grad():
        for b in dbm.biases:
            b.normal_(0, 0.5)
    return dbm.to(dtype)


@torch.no_grad()
def _joint(dbm):
    """Every state of all layers, and its exact probability (float64)."""
    states = binary_states(sum(dbm.layer_sizes), like=dbm.biases[0])
    layers = list(torch.split(states, dbm.layer_sizes, -1))
    log_p = -dbm.layer_energy(layers).double()
    return states, layers, (log_p - torch.logsumexp(log_p, 0)).exp()


def test_a_dbm_is_an_annealable_two_block_energy():
    dbm = DBM([5, 4, 3, 2])
    assert isinstance(dbm, AnnealableEnergy)
    assert (dbm.num_visible, dbm.num_hidden, dbm.num_data) == (5 + 3, 4 + 2, 5)


def test_free_energies_and_conditionals_match_brute_force():
    dbm = _dbm([3, 2, 3, 2])
    even = binary_states(dbm.num_visible, like=dbm.biases[0])
    odd = binary_states(dbm.num_hidden, like=dbm.biases[0])
    energies = dbm.energy(even.unsqueeze(1), odd.unsqueeze(0))  # (even states, odd states)
    torch.testing.assert_close(dbm.free_energy(even), -torch.logsumexp(-energies, 1))
    torch.testing.assert_close(dbm.hidden_free_energy(odd), -torch.logsumexp(-energies, 0))
    # p(odd | even) factorises into the sigmoids of hidden_logits
    cond = torch.softmax(-energies, 1)
    torch.testing.assert_close(cond @ odd, dbm.hidden_probs(even))
    cond = torch.softmax(-energies, 0)
    torch.testing.assert_close(cond.t() @ even, dbm.visible_probs(odd))
    # the energy of the blocks is the layer energy written out
    x = torch.cat([even[5:6, :3], odd[3:4, :2], even[5:6, 3:], odd[3:4, 2:]], -1)
    w = dbm.weights
    v, h1, h2, h3 = torch.split(x, [3, 2, 3, 2], -1)
    by_hand = -(v @ w[0] @ h1.t() + h1 @ w[1] @ h2.t() + h2 @ w[2] @ h3.t()).squeeze() - sum(
        (a * b).sum() for a, b in zip((v, h1, h2, h3), dbm.biases))
    torch.testing.assert_close(dbm.energy(even[5], odd[3]), by_hand)


class _NoTopDown(DBM):
    """A deliberately wrong sampler: the even layers ignore the layer above them."""

    def visible_logits(self, odd):
        layers = [None] * (self.num_layers + 1)
        for i, x in zip(range(1, self.num_layers + 1, 2), self.split_block(odd, 1)):
            layers[i] = x
        out = []
        for l in range(0, self.num_layers + 1, 2):
            logits = self.biases[l] + (layers[l - 1] @ self.weights[l - 1] if l > 0 else 0)
            if l == 0:
                logits = logits + layers[1] @ self.weights[0].t()
            out.append(logits)
        return torch.cat(out, -1)


@pytest.mark.parametrize("model_class, should_pass", [(DBM, True), (_NoTopDown, False)])
def test_gibbs_samples_of_a_three_layer_dbm_match_the_exact_joint(model_class, should_pass):
    torch.manual_seed(1)
    exact_model = _dbm([2, 2, 2, 2], scale=1.5, seed=3, dtype=torch.float32)
    dbm = model_class([2, 2, 2, 2])
    dbm.load_state_dict(exact_model.state_dict())
    _states, _, probs = _joint(exact_model.double())
    torch.manual_seed(5)
    kernel = BlockGibbs(dbm, num_chains=6000, k=1)
    result = run_mcmc(kernel, num_samples=1, warmup_steps=60, save_params=["v", "h"], diagnose=False)
    even, odd = result.samples["v"][:, -1], result.samples["h"][:, -1]
    layers = dbm.layers(even, odd)
    codes = (torch.cat(layers, -1) * 2 ** torch.arange(7, -1, -1)).sum(-1).long()
    counts = torch.bincount(codes, minlength=256).double()
    expected = probs * counts.sum()
    # states expected fewer than 5 times are pooled into one cell, as the chi-square approximation needs
    rare = expected < 5
    counts = torch.cat([counts[~rare], counts[rare].sum(0, keepdim=True)])
    expected = torch.cat([expected[~rare], expected[rare].sum(0, keepdim=True)])
    _, p = chisquare(counts.numpy(), expected.numpy())
    assert (p > 1e-3) if should_pass else (p < 1e-6), p


@pytest.mark.parametrize("sizes", [[6, 5, 4], [5, 4, 4, 3]])
def test_ais_log_z_of_two_and_three_layer_dbms_matches_exact(sizes):
    torch.manual_seed(0)
    dbm = _dbm(sizes, scale=1.0, dtype=torch.float32)
    exact = float(log_partition(dbm))
    torch.testing.assert_close(exact, float(log_partition(dbm, layer="visible")), atol=1e-4, rtol=0)
    data = (torch.rand(50, sizes[0]) < 0.3).float()
    result = ais_log_partition(dbm, base=dbm.base_rate(data), num_runs=200, num_temperatures=1500, groups=2)
    assert abs(result.log_z - exact) < max(4 * result.log_z_std, 0.03), (result.log_z, exact, result.log_z_std)


@pytest.mark.parametrize("sizes", [[6, 3, 8], [5, 2, 4, 2]])
def test_exact_log_p_with_the_first_hidden_layer_enumerated_matches_brute_force(sizes):
    dbm = _dbm(sizes)
    _states, layers, probs = _joint(dbm)
    v_states = binary_states(sizes[0], like=dbm.biases[0])
    # brute force: sum the joint over every hidden state
    codes = (layers[0] * 2 ** torch.arange(sizes[0] - 1, -1, -1, dtype=torch.float64)).sum(-1).long()
    marginal = torch.zeros(2 ** sizes[0], dtype=torch.float64).index_add_(0, codes, probs)
    torch.testing.assert_close(log_prob_observed(dbm, v_states), marginal.log())
    # and the mean-field bound with the exact log Z lies below it, image by image
    bound = -dbm.mean_field_free_energy(v_states, mean_field(dbm, v_states, tol=1e-9, max_iter=500).means)
    assert bool((bound - log_partition(dbm) <= marginal.log() + 1e-9).all())


def test_joint_training_gradient_is_the_hand_derived_one():
    torch.manual_seed(0)
    dbm = _dbm([5, 4, 3])
    v = (torch.rand(7, 5) < 0.5).double()

    def data_statistics(x):
        return dbm.even_block(x, mean_field(dbm, x, tol=1e-12, max_iter=1000).means)

    cd = ContrastiveDivergence(dbm, k=2, num_chains=11, data_statistics=data_statistics)
    cd.loss_and_grads(v)
    mu1, mu2 = mean_field(dbm, v, tol=1e-12, max_iter=1000).means
    chains = cd.kernel.initial_params
    v_neg, h2_neg = chains["v"][:, :5], chains["v"][:, 5:]
    p1_neg = torch.sigmoid(v_neg @ dbm.weights[0] + h2_neg @ dbm.weights[1].t() + dbm.biases[1])
    # d(-log-likelihood bound)/dW = -<x y'>_data + <x y'>_model, the data term under mean field
    expected = {
        "weights.0": -v.t() @ mu1 / 7 + v_neg.t() @ p1_neg / 11,
        "weights.1": -mu1.t() @ mu2 / 7 + p1_neg.t() @ h2_neg / 11,
        "biases.0": -v.mean(0) + v_neg.mean(0),
        "biases.1": -mu1.mean(0) + p1_neg.mean(0),
        "biases.2": -mu2.mean(0) + h2_neg.mean(0),
    }
    for name, p in dbm.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-9, rtol=1e-7)
    # the data term is the gradient of the mean-field free energy at its fixed point (envelope theorem)
    dbm.zero_grad()
    dbm.mean_field_free_energy(v, [mu1, mu2]).mean().backward()
    torch.testing.assert_close(dbm.weights[1].grad, -mu1.t() @ mu2 / 7)


def test_pretraining_rbms_carry_the_doubled_weights():
    torch.manual_seed(0)
    bottom, middle, top = pretraining_rbms([4, 3, 3, 2], weight_scale=1.0)
    assert [(r.visible_copies, r.hidden_copies) for r in (bottom, middle, top)] == [(2, 1), (2, 2), (1, 2)]
    v = (torch.rand(6, 4) < 0.5).float()
    torch.testing.assert_close(bottom.hidden_probs(bottom.tile(v)), torch.sigmoid(2 * v @ bottom.weight + bottom.hidden_bias))
    torch.testing.assert_close(bottom.up(v), torch.sigmoid(2 * v @ bottom.weight + bottom.hidden_bias))
    h = (torch.rand(6, 2) < 0.5).float()
    hh = torch.cat([h, h], -1)
    torch.testing.assert_close(top.visible_probs(hh), torch.sigmoid(2 * h @ top.weight.t() + top.visible_bias))
    # the tied-copy RBM is an exact energy: its free energy sums its hidden block, its gradient is autograd's
    rbm = TiedCopiesRBM(3, 2, visible_copies=2, hidden_copies=2, weight_scale=1.0).double()
    vv = binary_states(6, like=rbm.weight)
    hs = binary_states(4, like=rbm.weight)
    energies = rbm.energy(vv.unsqueeze(1), hs.unsqueeze(0))
    torch.testing.assert_close(rbm.free_energy(vv), -torch.logsumexp(-energies, 1))
    torch.testing.assert_close(rbm.hidden_free_energy(hs), -torch.logsumexp(-energies, 0))
    rbm.free_energy(vv).mean().backward()
    grads = rbm.energy_gradients(vv, rbm.hidden_probs(vv))
    for name, p in rbm.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)
    dbm = compose_dbm([bottom, middle, top])
    assert dbm.layer_sizes == [4, 3, 3, 2]
    torch.testing.assert_close(dbm.biases[1], (bottom.hidden_bias + middle.visible_bias) / 2)


def test_layer_sizes_that_do_not_chain_are_one_line_errors():
    cases = [
        (lambda: DBM.from_parameters([torch.zeros(4, 3), torch.zeros(2, 5)], [torch.zeros(4), torch.zeros(3), torch.zeros(5)]),
         "layer sizes that do not chain: weight 2 is (2, 5)"),
        (lambda: compose_dbm([TiedCopiesRBM(4, 3), TiedCopiesRBM(5, 2)]), "layer sizes that do not chain: RBM 1 has 3"),
        (lambda: check_layer_sizes([4]), "at least 2 positive integers"),
        (lambda: DBM([4, 0, 3]), "got 0 for layer 1"),
    ]
    for call, message in cases:
        with pytest.raises(SpecError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    dbm = DBM([4, 3, 2])
    for call, message in [(lambda: dbm.validate_visible(torch.zeros(2, 4)), "must have shape (..., 6)"),
                          (lambda: dbm.validate_visible(torch.full((2, 6), 0.5)), "0"),
                          (lambda: dbm.base_rate(torch.full((2, 4), 2.0)), "must lie in [0, 1]")]:
        with pytest.raises(DataError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_pretraining_schedule_for_the_wrong_number_of_layers_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(SpecError, match=r"pretrain.epochs gives 3 layers' epochs \[1, 1, 1\] but model.hidden has 2"):
        catalogue.make_spec("dbm", overrides=["model.hidden=[4,3]", "pretrain.epochs=[1,1,1]"])
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "dbm", "--dataset", "digits", "--set", "model.hidden=[4]",
                           "--set", "pretrain.epochs=[1,2]", "--epochs", "1", "--out", str(out))
    assert code == 2 and "pretrain.epochs gives 2" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_training_time_is_pretraining_plus_joint_and_survives_a_resume(capsys, tmp_path):
    """train_seconds is the whole training (each pretraining layer's epochs + the joint epochs), not the joint
    phase's alone, and a run that resumes finished pretraining layers keeps their time (from their histories)."""
    out = tmp_path / "run"
    argv = ["train", "dbm", "--dataset", "digits", "--no-progress", "--set", "model.hidden=[6,4]",
            "--set", "pretrain.epochs=[2,1]", "--epochs", "1", "--set", "train.ais_temperatures=100",
            "--eval-particles", "4", "--set", "train.sample_sweeps=2", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    layers = m["pretrain_seconds_per_layer"]
    assert len(layers) == 2 and all(s > 0 for s in layers), m
    assert m["joint_seconds"] == pytest.approx(sum(h["seconds"] for h in m["history"]))
    assert m["pretrain_seconds"] == pytest.approx(sum(layers))
    assert m["train_seconds"] == pytest.approx(m["pretrain_seconds"] + m["joint_seconds"])
    assert m["train_seconds"] > m["joint_seconds"]
    assert f"pretraining {layers[0]:.0f} + {layers[1]:.0f}s" in stdout, stdout
    for name in ("model.pt", "metrics.json", "checkpoint.pt"):  # joint phase lost; pretraining checkpoints kept
        (out / name).unlink()
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    again = json.loads((out / "metrics.json").read_text())
    assert again["pretrain_seconds_per_layer"] == pytest.approx(layers)  # resumed: the layers' recorded time


def test_exact_log_p_refuses_a_large_odd_block():
    with pytest.raises(SpecError, match="at most 20 units, got 21"):
        log_prob_observed(DBM([3, 21, 2]), torch.zeros(1, 3))
    assert math.isfinite(float(log_prob_observed(DBM([3, 2, 25]), torch.zeros(1, 3))))


def test_clamped_gibbs_posterior_follows_the_exact_posterior():
    """The family's clamped chains (the data layer held, the even hidden layers free) draw h ~ p(h | v)."""
    exact = _dbm([3, 2, 2, 2], scale=1.5, seed=4, dtype=torch.float32)
    v = torch.tensor([1.0, 0.0, 1.0])
    _, layers, probs = _joint(exact.double())
    given = (layers[0] == v.double()).all(-1)
    posterior = probs[given] / probs[given].sum()  # p(h1, h2, h3 | v), hidden states in counting order
    torch.manual_seed(0)
    family = catalogue.family("dbm")
    g = family._chains(exact, 4000, 40, 1, clamp_mask=torch.ones(3, dtype=torch.bool),
                       clamp_values=v.expand(4000, 3), diagnose=False)
    layers = exact.layers(g.result.samples["v"][:, -1], g.result.samples["h"][:, -1])
    assert bool((layers[0] == v).all())
    codes = (torch.cat(layers[1:], -1) * 2 ** torch.arange(5, -1, -1)).sum(-1).long()
    counts = torch.bincount(codes, minlength=64).double()
    # the mean-field product of the same v is an approximation, and the same test sees it
    means = torch.cat(mean_field(exact, v[None].double(), tol=1e-9, max_iter=500).means, -1)[0]
    states = torch.cat(_joint(exact)[1][1:], -1)[given]
    factorised = (states * means + (1 - states) * (1 - means)).prod(-1)
    p_values = []
    for reference in (posterior, factorised):
        expected = reference * counts.sum()
        rare = expected < 5
        pooled = torch.cat([counts[~rare], counts[rare].sum(0, keepdim=True)])
        expected = torch.cat([expected[~rare], expected[rare].sum(0, keepdim=True)])
        p_values.append(chisquare(pooled.numpy(), expected.numpy()).pvalue)
    assert p_values[0] > 1e-3 and p_values[1] < 1e-6, p_values
