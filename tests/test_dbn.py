"""The deep belief net against exact answers on nets small enough to enumerate: its exact log p(v) by
brute force over every hidden layer, the variational lower bound below it (exactly, and its Monte Carlo
estimate within its error), samples (top-RBM Gibbs, then a pass down) against the exact marginal by a
chi-square test that rejects a wrong pass down, and bad input."""

import itertools
import json
import os

import pytest
import torch
import torch.nn.functional as F

from inference.errors import SpecError
from ppl_models import catalogue
from ppl_models.dbn import DeepBeliefNet
from ppl_models.rbm import RBM
from tests.cli_util import run_cli
from tests.inference.test_single_site_gibbs import P_MIN, gof_pvalue


def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def log_bernoulli(logits, x):
    return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)


def tiny_dbn(sizes=(4, 3, 3, 2), seed=0) -> DeepBeliefNet:
    torch.manual_seed(seed)
    dbn = DeepBeliefNet(list(sizes), weight_scale=1.5)
    with torch.no_grad():
        for rbm in dbn.rbms:
            rbm.visible_bias.normal_()
            rbm.hidden_bias.normal_()
    return dbn.requires_grad_(False)


def brute_force(dbn: DeepBeliefNet):
    """(log p(v), exact lower bound) for every v of states(), summing every hidden layer term by term: a
    4-3-3-2 net, p(v) = sum_{z1,z2,z3} p(v|z1) p(z1|z2) e^{-E_top(z2,z3)} / Z_top, and the bound
    E_q[log p(v, z1, z2) - log q(z1, z2 | v)] with q(z1|v) q(z2|z1) the recognition chain, z3 summed out."""
    r1, r2, top = dbn.rbms
    z1s, z2s, z3s = states(3), states(3), states(2)
    log_z = torch.logsumexp(torch.stack([-top.energy(a, b) for a in z2s for b in z3s]).double(), 0)
    log_p, bound = [], []
    for v in states(4):
        joint, lb = [], 0.0
        for z1 in z1s:
            for z2 in z2s:
                log_p_vz = (log_bernoulli(r1.visible_logits(z1), v) + log_bernoulli(r2.visible_logits(z2), z1)
                            - top.free_energy(z2)).double() - log_z
                joint.append(log_p_vz)
                log_q = (log_bernoulli(r1.hidden_logits(v), z1) + log_bernoulli(r2.hidden_logits(z1), z2)).double()
                lb += log_q.exp() * (log_p_vz - log_q)
        log_p.append(torch.logsumexp(torch.stack(joint), 0))
        bound.append(lb)
    return torch.stack(log_p), torch.stack(bound), float(log_z)


def test_exact_log_prob_and_the_lower_bound_against_brute_force():
    dbn = tiny_dbn()
    log_p, bound, log_z = brute_force(dbn)
    v = states(4)
    assert torch.allclose(dbn.exact_log_prob(v), log_p, atol=1e-5)
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-6)
    assert bool((bound < log_p - 1e-3).all())  # strictly below: q is not the posterior of this net
    torch.manual_seed(1)
    estimate, stderr = dbn.lower_bound(v, log_z, num_samples=4000)
    assert bool(((estimate - bound).abs() < 4 * stderr + 1e-3).all()), (estimate - bound, stderr)


def test_exact_log_prob_in_chunks_equals_it_in_one_block():
    """Chunking over images (and over the states of the layers summed out) changes nothing but the memory."""
    dbn = tiny_dbn((5, 4, 3, 3, 2), seed=3)
    v = states(5)
    whole = dbn.exact_log_prob(v, chunk_size=None)
    assert float(torch.logsumexp(whole, 0)) == pytest.approx(0.0, abs=1e-6)  # a distribution over all 2^5 images
    for chunk in (1, 3, 7, 32, 1000):
        assert torch.allclose(dbn.exact_log_prob(v, chunk_size=chunk), whole, atol=1e-10, rtol=0), chunk
    assert dbn.exact_log_prob(v[:0]).shape == (0,)
    with pytest.raises(SpecError, match="chunk_size must be a positive integer or None, got 0"):
        dbn.exact_log_prob(v, chunk_size=0)


def test_exact_log_prob_of_a_wide_net_needs_no_image_by_state_by_pixel_tensor():
    """784 visible units under a 12-unit layer: the old (2^12, N, 784) broadcast was 12.8 GB at N = 1,000;
    one (N, 2^12) product per block of images is megabytes."""
    torch.manual_seed(0)
    dbn = DeepBeliefNet([784, 12, 12, 3], weight_scale=0.1)
    v = torch.bernoulli(torch.full((300, 784), 0.3))
    log_p = dbn.exact_log_prob(v)
    assert log_p.shape == (300,) and bool(torch.isfinite(log_p).all())
    assert torch.allclose(dbn.exact_log_prob(v[:5]), log_p[:5], atol=1e-8, rtol=0)


def test_a_single_rbm_dbn_is_exact():
    dbn = tiny_dbn((5, 3))
    v = states(5)
    log_z = float(torch.logsumexp(-dbn.top.free_energy(v).double(), 0))
    estimate, stderr = dbn.lower_bound(v, log_z, num_samples=3)
    assert torch.allclose(estimate, dbn.exact_log_prob(v), atol=1e-5) and float(stderr.abs().max()) < 1e-6


def test_samples_follow_the_exact_marginal_and_a_wrong_pass_down_is_rejected():
    dbn = tiny_dbn(seed=2)
    exact = dbn.exact_log_prob(states(4)).exp()
    family = catalogue.family("dbn")
    torch.manual_seed(0)
    g = family._chains(dbn, 6000, 30, 1, diagnose=False)
    assert gof_pvalue(g.v, exact) > P_MIN
    # wrong: the pass down carries probabilities (mean field) instead of samples through z1
    z2 = g.result.samples["v"][:, -1]
    wrong = torch.bernoulli(dbn.rbms[0].visible_probs(dbn.rbms[1].visible_probs(z2)))
    assert gof_pvalue(wrong, exact) < 1e-6


def test_greedy_training_and_evaluation_through_the_cli(capsys, tmp_path):
    out = str(tmp_path / "run")
    code, _, err = run_cli(capsys, "train", "dbn", "--dataset", "digits", "--no-progress", "--epochs", "2",
                           "--set", "model.hidden=[6,4]", "--set", "pretrain.upward=samples",
                           "--set", "pretrain.epochs=[2,1]", "--set", "train.ais_temperatures=300",
                           "--set", "train.sample_sweeps=5", "--eval-particles", "20", "--out", out)
    assert code == 0, err
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["pretrain_epochs"] == [2, 1] and "rbm2_train_loss" in metrics["history"][0]
    assert "rbm2_train_loss" not in metrics["history"][1]  # RBM 2 trained for one epoch only
    # the bound (with exact log Z) lies below the exact test log-likelihood, within its Monte Carlo error
    assert metrics["test_lower_bound_exact_log_z"] <= metrics["test_log_likelihood_exact"] + 2 * metrics["test_lower_bound_stderr"]
    assert abs(metrics["ais_error"]) < 0.1
    trained = catalogue.load(out)
    assert trained.query("log_prob", trained.data().test.x[:3]).numbers["is_bound"] is False
    assert trained.query("log_prob", trained.data().test.x[:3], estimator="bound").numbers["is_bound"] is True


@pytest.mark.parametrize("argv, message", [
    (["--set", "model.hidden=[6,4]", "--set", "pretrain.epochs=[2]"],
     "pretrain.epochs has 1 entries but the DBN has 2 RBMs"),
    (["--set", "model.hidden=[6,4]", "--set", "pretrain.lr=[0.1,0.1,0.1]"],
     "pretrain.lr has 3 entries but the DBN has 2 RBMs"),
    (["--set", "model.hidden=[]"], "model.hidden must name at least one hidden layer"),
    (["--set", "model.hidden=[6,0]"], "model.hidden"),
])
def test_bad_schedules_are_one_line_errors_that_write_nothing(argv, message, capsys, tmp_path):
    out = str(tmp_path / "bad")
    code, _, err = run_cli(capsys, "train", "dbn", "--dataset", "digits", "--no-progress", "--epochs", "1", *argv,
                           "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(out)


def test_layer_sizes_that_do_not_chain_are_refused():
    with pytest.raises(SpecError, match="layer sizes do not chain: RBM 2 has 5 visible units but RBM 1 has 4 hidden"):
        DeepBeliefNet.from_rbms([RBM(6, 4), RBM(5, 3)])
    with pytest.raises(SpecError, match="layer_sizes must be at least two positive integers"):
        DeepBeliefNet([6])
    with pytest.raises(SpecError, match="exact log p.v. enumerates the hidden layers"):
        DeepBeliefNet([4, 30, 2]).exact_log_prob(torch.zeros(1, 4))


def test_a_layer_started_as_the_one_below_transposed_leaves_p_v_and_makes_the_bound_tight():
    dbn = tiny_dbn((5, 3, 5), seed=3)
    assert dbn.tie_to_below(1) and not DeepBeliefNet([5, 3, 4]).tie_to_below(1)
    v = states(5)
    rbm = dbn.rbms[0]
    rbm_log_p = -rbm.free_energy(v).double() - torch.logsumexp(-rbm.free_energy(v).double(), 0)
    assert torch.allclose(dbn.exact_log_prob(v), rbm_log_p, atol=1e-5)
    # q(h1 | v) is now the exact posterior: every draw's log weight is log p(v), the bound is tight
    log_z = float(torch.logsumexp(-dbn.top.free_energy(states(3)).double(), 0))
    estimate, stderr = dbn.lower_bound(v, log_z, num_samples=50)
    assert torch.allclose(estimate, rbm_log_p, atol=1e-4) and float(stderr.max()) < 1e-4


def _autograd(dbn, loss_fn):
    params = dict(dbn.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    grads = torch.autograd.grad(loss_fn(), list(params.values()), allow_unused=True)
    dbn.requires_grad_(False)
    return {n: g for n, g in zip(params, grads) if g is not None}


def test_up_down_gradients_are_those_of_the_wake_and_sleep_log_likelihoods():
    dbn = DeepBeliefNet([5, 4, 3, 2], weight_scale=1.0, untied=True).requires_grad_(False)
    with torch.no_grad():
        for rec in dbn.recognition:
            rec.weight.normal_()
    torch.manual_seed(0)
    states = [torch.bernoulli(torch.full((7, n), 0.4)) for n in (5, 4, 3)]
    r = dbn.rbms

    def generative():  # -mean sum_l log p(z_{l-1} | z_l)
        return -(log_bernoulli(r[0].visible_logits(states[1]), states[0])
                 + log_bernoulli(r[1].visible_logits(states[2]), states[1])).mean()

    def recognition():  # -mean sum_l log q(z_l | z_{l-1})
        return -(log_bernoulli(dbn.recognition_logits(states[0], 0), states[1])
                 + log_bernoulli(dbn.recognition_logits(states[1], 1), states[2])).mean()

    for formula, loss in ((dbn.generative_gradients, generative), (dbn.recognition_gradients, recognition)):
        expected, got = _autograd(dbn, loss), formula(states)
        assert set(got) == set(expected)
        assert all(torch.allclose(got[n], expected[n], atol=1e-6) for n in got)


def test_up_down_step_is_wake_plus_top_cd_plus_sleep():
    import copy

    from inference.contrastive_divergence import ContrastiveDivergence
    from inference.up_down import UpDown

    dbn = DeepBeliefNet([5, 4, 3, 2], weight_scale=1.0, untied=True)
    twin = copy.deepcopy(dbn)
    v = torch.bernoulli(torch.full((6, 5), 0.5))
    torch.manual_seed(1)
    UpDown(dbn, k=2, num_chains=8).loss_and_grads(v)
    torch.manual_seed(1)  # the same draws, in the same order: wake, top chains, sleep
    wake = twin.recognise(v)
    expected = twin.generative_gradients(wake)
    top = ContrastiveDivergence(twin.top, k=2, num_chains=8)
    top.loss_and_grads(wake[-1])
    expected.update({f"rbms.2.{n}": p.grad for n, p in twin.top.named_parameters()})
    expected.update(twin.recognition_gradients(twin.dream(top.kernel.initial_params["v"])))
    got = {n: p.grad for n, p in dbn.named_parameters() if p.grad is not None}
    assert set(got) == set(expected)  # the lower RBMs' hidden biases take no part once untied
    assert all(torch.allclose(got[n], expected[n], atol=1e-6) for n in got)


def test_untied_copies_give_the_tied_bound_and_fine_tuning_runs_through_the_cli(capsys, tmp_path):
    dbn = tiny_dbn()
    untied = DeepBeliefNet([4, 3, 3, 2], untied=True)
    untied.rbms.load_state_dict(dbn.rbms.state_dict())
    untied.sync_recognition()
    v = states(4)
    torch.manual_seed(0)
    a = dbn.bound_log_weights(v, 5)
    torch.manual_seed(0)
    assert torch.equal(untied.bound_log_weights(v, 5), a)
    out = str(tmp_path / "run")
    code, _, err = run_cli(capsys, "train", "dbn", "--dataset", "digits", "--no-progress", "--epochs", "1",
                           "--set", "model.hidden=[6,4]", "--set", "train.up_down_epochs=2",
                           "--set", "train.ais_temperatures=300", "--set", "train.sample_sweeps=5",
                           "--eval-particles", "20", "--out", out)
    assert code == 0, err
    trained = catalogue.load(out)
    assert trained.module.untied and trained.metrics["fine_tuning"] == "up-down, 2 epochs"
    assert "updown_train_loss" in trained.metrics["history"][1]
    m = trained.metrics
    assert m["test_lower_bound_exact_log_z"] <= m["test_log_likelihood_exact"] + 2 * m["test_lower_bound_stderr"]


@pytest.mark.slow  # three CLI trainings (about 50 s on a loaded machine); the greedy stage's resume is in the conformance test
def test_a_run_killed_during_up_down_resumes_bit_for_bit(capsys, tmp_path, monkeypatch):
    import ppl_models.catalogue.energy as energy_base
    from inference.up_down import UpDown

    argv = ["--dataset", "digits", "--no-progress", "--epochs", "1", "--set", "model.hidden=[6,4]",
            "--set", "train.up_down_epochs=3", "--set", "train.ais_temperatures=50", "--set", "train.sample_sweeps=2",
            "--eval-particles", "4"]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    assert run_cli(capsys, "train", "dbn", *argv, "--out", whole)[0] == 0
    real_fit = energy_base.fit

    def fit_killed(objective, *args, **kwargs):
        def stop(metrics):
            if isinstance(objective, UpDown) and metrics["epoch"] == 2:
                raise KeyboardInterrupt
        return real_fit(objective, *args, **{**kwargs, "on_epoch_end": stop})

    monkeypatch.setattr(energy_base, "fit", fit_killed)
    assert run_cli(capsys, "train", "dbn", *argv, "--out", killed)[0] == 130
    monkeypatch.undo()
    assert run_cli(capsys, "train", "dbn", *argv, "--out", killed)[0] == 0
    a, b = (torch.load(os.path.join(d, "model.pt"), weights_only=False) for d in (whole, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
