"""NVIL, VIMCO, the IWAE score-function estimator, reweighted wake-sleep and TraceGraph_ELBO on a sigmoid
belief net small enough to enumerate (x: 4 bits, h1: 2, h2: 1).

For each estimator the expectation of its gradient is computed exactly by summing over every hidden state
(and, for k-sample objectives, over every k-tuple of states), and the Monte Carlo mean over many draws must
agree within a few standard errors. Draws are vectorised: a batch of R copies of the data gives R
independent draws per datapoint in one pass (the objectives are per datapoint), and B such blocks give
the standard error. Every per-datapoint objective is also checked to give the same gradient for a
minibatch as for its datapoints one at a time, with the guide's samples held fixed.
"""

import itertools
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceGraph_ELBO

from inference.directed_enumeration import enumerate_latents, exact_log_marginal
from inference.iwae_elbo import IWAEELBO
from inference.log_likelihood import log_likelihood
from inference.nvil import NVIL, NVILBaseline
from inference.reweighted_wake_sleep import ReweightedWakeSleep
from inference.vimco import VIMCO, leave_one_out_bounds
from ppl_models.errors import SpecError
from ppl_models.sbn import SBNArchitecture, SigmoidBeliefNet

X = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
R, B = 250, 24  # copies of the data per block, blocks


def tiny_sbn(seed=0, hidden=(2, 1)):
    torch.manual_seed(seed)
    sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=4, hidden=list(hidden))).double()
    with torch.no_grad():
        for p in sbn.parameters():
            p.normal_(0.0, 1.0)
    return sbn


def groups(sbn):
    """Parameter groups: the generative model, and the recognition network layer by layer."""
    return {"model": list(sbn.generative.parameters()),
            **{f"guide{l}": list(layer.parameters()) for l, layer in enumerate(sbn.recognition, 1)}}


def flat(params, grads=None):
    grads = grads if grads is not None else [p.grad for p in params]
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for p, g in zip(params, grads)])


def draws(surrogate_fn, sbn, extra_params=()):
    """B block means of the surrogate's gradient per copy of the data: ``(B, P)`` over all parameters."""
    params = list(sbn.parameters()) + list(extra_params)
    xs = X.repeat(R, 1)
    out = []
    for _ in range(B):
        grads = torch.autograd.grad(surrogate_fn(xs), params, allow_unused=True)
        out.append(flat(params, grads) / R)
    return torch.stack(out)


def exact(value, sbn, extra_params=()):
    params = list(sbn.parameters()) + list(extra_params)
    return flat(params, torch.autograd.grad(value, params, allow_unused=True))


def assert_agrees(d, target, n_se=5.0, atol=1e-6):
    mean, se = d.mean(0), d.std(0) / math.sqrt(d.shape[0])
    bad = (mean - target).abs() > n_se * se + atol
    assert not bad.any(), f"mean {mean[bad]}, exact {target[bad]}, se {se[bad]}"


def tuples(e, k):
    """Every k-tuple of joint states: ``log_p``, ``log_q`` as ``(T, k, N)`` (T = S**k)."""
    s = e.log_p.shape[0]
    idx = torch.tensor(list(itertools.product(range(s), repeat=k)))
    return e.log_p[idx], e.log_q[idx]


def exact_k_sample_bound(sbn, k):
    """E[log (1/k) sum_i w_i] per datapoint, exactly, ``(N,)``."""
    e = enumerate_latents(sbn.model, sbn.guide, X)
    log_p, log_q = tuples(e, k)
    prob = log_q.sum(1).exp()
    return (prob * (torch.logsumexp(log_p - log_q, dim=1) - math.log(k))).sum(0)


# -------------------------------------------------------------------------- enumeration itself
def test_enumeration_matches_a_hand_written_sum_and_bounds_order():
    sbn = tiny_sbn()
    total = []
    lb = lambda logits, v: torch.distributions.Bernoulli(logits=logits).log_prob(v).sum(-1)
    for bits in itertools.product([0.0, 1.0], repeat=3):
        h1, h2 = torch.tensor(bits[:2], dtype=torch.float64), torch.tensor(bits[2:], dtype=torch.float64)
        total.append(lb(sbn.generative.top_logits, h2) + lb(sbn.down[1](h2), h1) + lb(sbn.down[0](h1), X))
    by_hand = torch.logsumexp(torch.stack(total), 0)
    e = enumerate_latents(sbn.model, sbn.guide, X)
    assert torch.allclose(e.log_marginal, by_hand)
    assert torch.allclose(exact_log_marginal(sbn.model, sbn.guide, X, max_elements=7), by_hand)  # chunked states
    assert torch.allclose(e.log_posterior.exp().sum(0), torch.ones(3, dtype=torch.float64))
    bounds = [e.elbo] + [exact_k_sample_bound(sbn, k) for k in (2, 3, 4)]
    for lower, upper in zip(bounds, bounds[1:] + [by_hand]):  # L_1 <= L_2 <= L_3 <= L_4 <= log p(x)
        assert (lower <= upper + 1e-12).all()
    assert torch.allclose(bounds[0], exact_k_sample_bound(sbn, 1))


def test_importance_sampled_log_likelihood_converges_to_the_exact_value():
    sbn = tiny_sbn()
    truth = exact_log_marginal(sbn.model, sbn.guide, X)
    torch.manual_seed(1)
    # a random guide: heavy-tailed weights (E log w is 0.4 to 2.8 nats below log p(x)), so many particles
    estimate = log_likelihood(sbn.model, sbn.guide, X, num_particles=200000, particle_chunk=20000)
    assert torch.allclose(estimate, truth, atol=0.02)


def test_enumeration_refuses_too_many_bits():
    sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=4, hidden=[15, 10]))
    with pytest.raises(SpecError, match="at most 20 latent bits, the model has 25"):
        exact_log_marginal(sbn.model, sbn.guide, X.float())


# -------------------------------------------------------------------------- NVIL
def nvil_with_state(sbn, local, var):
    signals = 2 if local else 1
    baseline = NVILBaseline(4, signals, hidden=5).double()
    with torch.no_grad():
        for p in baseline.parameters():
            p.normal_(0.0, 0.5)
        baseline.mean.copy_(torch.tensor([-3.0, -1.0][:signals]))
        baseline.var.copy_(torch.tensor(var[:signals]))
    return NVIL(baseline, chain=sbn.chain if local else None), baseline


@pytest.mark.parametrize("local", [False, True], ids=["global-signal", "local-signals"])
def test_nvil_gradient_is_the_elbo_gradient_with_each_layer_scaled_by_its_normaliser(local):
    sbn = tiny_sbn()
    var = [4.0, 9.0]  # normalisers max(1, sd): 2 and 3
    nvil, baseline = nvil_with_state(sbn, local, var)
    torch.manual_seed(2)
    d = draws(lambda xs: nvil.differentiable_loss(sbn.model, sbn.guide, xs), sbn)
    elbo = enumerate_latents(sbn.model, sbn.guide, X).elbo.sum()
    g = groups(sbn)
    target = []
    for name, params in g.items():
        grads = flat(params, torch.autograd.grad(-elbo, params, retain_graph=True))
        if name != "model":
            layer = int(name[len("guide"):])
            grads = grads / (math.sqrt(var[layer - 1]) if local else math.sqrt(var[0]))
        target.append(grads)
    params_in_order = [p for ps in g.values() for p in ps]
    assert [id(p) for p in params_in_order] == [id(p) for p in sbn.parameters()]
    assert_agrees(d, torch.cat(target))


def test_nvil_baseline_is_trained_on_the_expected_squared_centred_signal():
    sbn = tiny_sbn()
    nvil, baseline = nvil_with_state(sbn, local=False, var=[0.25])
    torch.manual_seed(3)
    d = draws(lambda xs: nvil.differentiable_loss(sbn.model, sbn.guide, xs), sbn, baseline.parameters())
    e = enumerate_latents(sbn.model, sbn.guide, X)
    signal = (e.log_p - e.log_q).detach()  # (S, N)
    expected_sq = (e.log_q.exp().detach() * (signal - baseline(X)[:, 0] - baseline.mean).pow(2)).sum()
    n_model = sum(p.numel() for p in sbn.parameters())
    target = exact(expected_sq, sbn, baseline.parameters())[n_model:]
    assert_agrees(d[:, n_model:], target)


def test_nvil_running_statistics_update_after_the_step_and_resume_with_the_module():
    sbn = tiny_sbn()
    nvil, baseline = nvil_with_state(sbn, local=True, var=[0.0, 0.0])
    before = baseline.mean.clone()
    torch.manual_seed(4)
    nvil.loss_and_grads(sbn.model, sbn.guide, X)
    assert not torch.equal(before, baseline.mean)
    assert set(baseline.state_dict()) >= {"mean", "var"}


def test_nvil_refuses_a_chain_that_is_not_the_models():
    sbn = tiny_sbn()
    with pytest.raises(SpecError, match="local learning signals need model sites"):
        NVIL(NVILBaseline(4, 2), chain=("x", "h2", "h3")).loss(sbn.model, sbn.guide, X)
    with pytest.raises(SpecError, match="baseline has 1 outputs but there are 2"):
        NVIL(NVILBaseline(4, 1), chain=sbn.chain)


# -------------------------------------------------------------------------- VIMCO and the IWAE score function
@pytest.mark.parametrize("objective", [VIMCO, IWAEELBO], ids=["vimco", "iwae-score-function"])
@pytest.mark.parametrize("k", [2, 3])
def test_k_sample_estimators_are_unbiased_for_the_gradient_of_the_bound(objective, k):
    sbn = tiny_sbn()
    elbo = objective(num_particles=k, max_plate_nesting=1)
    torch.manual_seed(5 + k)
    d = draws(lambda xs: elbo.differentiable_loss(sbn.model, sbn.guide, xs), sbn)
    assert_agrees(d, exact(-exact_k_sample_bound(sbn, k).sum(), sbn))


def test_vimco_leave_one_out_bound_replaces_one_weight_by_the_others_geometric_mean():
    log_w = torch.tensor([[0.0], [1.0], [3.0]])
    loo = leave_one_out_bounds(log_w)[:, 0]
    by_hand = [math.log((math.exp(2.0) + math.exp(1.0) + math.exp(3.0)) / 3),
               math.log((1 + math.exp(1.5) + math.exp(3.0)) / 3),
               math.log((1 + math.exp(1.0) + math.exp(0.5)) / 3)]
    assert torch.allclose(loo, torch.tensor(by_hand))


def test_vimco_has_lower_guide_gradient_variance_than_the_plain_score_function():
    sbn = tiny_sbn()
    n_model = sum(p.numel() for p in sbn.generative.parameters())
    torch.manual_seed(9)
    v = {name: draws(lambda xs: obj.differentiable_loss(sbn.model, sbn.guide, xs), sbn)[:, n_model:].var(0).sum()
         for name, obj in {"vimco": VIMCO(5, max_plate_nesting=1), "iwae": IWAEELBO(5, max_plate_nesting=1)}.items()}
    assert v["vimco"] < 0.5 * v["iwae"], v


def test_vimco_refuses_one_sample():
    with pytest.raises(SpecError, match="VIMCO needs num_particles >= 2"):
        VIMCO(num_particles=1)


# -------------------------------------------------------------------------- reweighted wake-sleep, TraceGraph_ELBO
@pytest.mark.parametrize("k", [1, 3])
def test_wake_phases_estimate_their_exact_expectations_over_k_tuples(k):
    sbn = tiny_sbn()
    rws = ReweightedWakeSleep(num_particles=k, insomnia=1.0, max_plate_nesting=1)
    torch.manual_seed(11)
    d = draws(lambda xs: rws.differentiable_loss(sbn.model, sbn.guide, xs), sbn)
    log_p, log_q = tuples(enumerate_latents(sbn.model, sbn.guide, X), k)
    prob = log_q.sum(1).exp().detach().unsqueeze(1)
    norm_w = torch.softmax((log_p - log_q).detach(), dim=1)
    target = exact(-(prob * norm_w * (log_p + log_q)).sum(), sbn)  # wake-theta + wake-phi
    assert_agrees(d, target)


def test_sleep_phase_estimates_the_expected_guide_score_on_dreams():
    sbn = tiny_sbn()
    rws = ReweightedWakeSleep(num_particles=2, insomnia=0.0, max_plate_nesting=1)
    torch.manual_seed(12)
    d = draws(lambda xs: rws.differentiable_loss(sbn.model, sbn.guide, xs), sbn)
    e = enumerate_latents(sbn.model, sbn.guide, X)
    log_p, log_q = tuples(e, 2)
    wake_theta = (log_q.sum(1).exp().detach().unsqueeze(1) * torch.softmax((log_p - log_q).detach(), 1) * log_p).sum()
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)  # every image
    dreams = enumerate_latents(sbn.model, sbn.guide, xs)
    sleep = (dreams.log_p.exp().detach() * dreams.log_q).sum() * X.shape[0]  # E_p[log q(h|x)] per dream
    n_model = sum(p.numel() for p in sbn.generative.parameters())
    target = torch.cat([exact(-wake_theta, sbn)[:n_model], exact(-sleep, sbn)[n_model:]])
    assert_agrees(d, target)


def test_tracegraph_elbo_the_library_baseline_is_unbiased_too():
    sbn = tiny_sbn()
    elbo = TraceGraph_ELBO(max_plate_nesting=1)
    torch.manual_seed(13)
    d = draws(lambda xs: tracegraph_surrogate(elbo, sbn.model, sbn.guide, xs), sbn)
    assert_agrees(d, exact(-enumerate_latents(sbn.model, sbn.guide, X).elbo.sum(), sbn))


# -------------------------------------------------------------------------- minibatch = one datapoint at a time
def tracegraph_surrogate(elbo, model, guide, x):
    """Pyro's TraceGraph_ELBO has no public surrogate; its loss_and_grads backpropagates this one."""
    return elbo._loss_and_surrogate_loss(model, guide, (x,), {})[1]


def fixed_guide(guide, values: dict):
    """``guide`` with its sites replayed at ``values`` (still latent, not observed)."""
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, type="sample", is_observed=False, value=value, infer={})
    return poutine.replay(guide, trace=trace)


@pytest.mark.parametrize("name", ["nvil", "vimco", "iwae", "rws", "tracegraph"])
def test_a_minibatch_gives_the_sum_of_its_datapoints_gradients(name):
    sbn = tiny_sbn()
    k = 1 if name in ("nvil", "tracegraph") else 3
    torch.manual_seed(14)
    values = {"h1": torch.bernoulli(torch.full((k, 3, 2), 0.5, dtype=torch.float64)),
              "h2": torch.bernoulli(torch.full((k, 3, 1), 0.5, dtype=torch.float64))}
    if k == 1:
        values = {s: v[0] for s, v in values.items()}
    make = {"nvil": lambda: nvil_with_state(sbn, True, [4.0, 0.5])[0],
            "vimco": lambda: VIMCO(k, max_plate_nesting=1), "iwae": lambda: IWAEELBO(k, max_plate_nesting=1),
            "rws": lambda: ReweightedWakeSleep(k, insomnia=1.0, max_plate_nesting=1),
            "tracegraph": lambda: TraceGraph_ELBO(max_plate_nesting=1)}
    torch.manual_seed(0)
    objective = make[name]()  # one objective (one baseline) for both ways
    params = list(sbn.parameters())
    if name == "nvil":
        params += list(objective.baseline.parameters())

    def grad(x, vals):
        guide = fixed_guide(sbn.guide, vals)
        loss = (tracegraph_surrogate(objective, sbn.model, guide, x) if name == "tracegraph"
                else objective.differentiable_loss(sbn.model, guide, x))
        return flat(params, torch.autograd.grad(loss, params, allow_unused=True))

    whole = grad(X, values)
    one_by_one = sum(grad(X[n:n + 1], {s: v[..., n:n + 1, :] for s, v in values.items()}) for n in range(3))
    assert torch.allclose(whole, one_by_one, atol=1e-10), name


def test_the_sbn_model_samples_and_its_guide_runs_every_layer():
    sbn = tiny_sbn(hidden=(3, 2, 2))
    assert sbn.chain == ("x", "h1", "h2", "h3")
    with pyro.plate("p", 5, dim=-2):
        trace = poutine.trace(sbn.guide).get_trace(X)
    assert [trace.nodes[s]["value"].shape for s in sbn.chain[1:]] == [(5, 3, 3), (5, 3, 2), (5, 3, 2)]
    dream = poutine.trace(sbn.model).get_trace(batch_size=7)
    assert dream.nodes["x"]["value"].shape == (7, 4) and set(dream.nodes["x"]["value"].unique().tolist()) <= {0.0, 1.0}
