"""(Reweighted) wake-sleep on the DCIM pair against exact expectations on a tiny net.

The pair shares its weights, so the model's and the guide's gradients add up
in one ``.grad``; the exact target is the enumerated expectation of that sum.
"""

import math

import pytest
import torch
import torch.distributions as tdist
import torch.nn.functional as F

from inference.dcim_objectives import make_objective
from ppl_models.errors import SpecError
from tests.inference.test_dcim_objectives import batch, binary_states, random_dcim


def log_terms(dcim, x, y, h):
    """Per (datapoint, h-state): log p_rev(y, h, x) and log q_fwd(h, y | x) for a one-hidden-layer net, (N, S)."""
    onehot = F.one_hot(y, dcim.n_classes).to(x.dtype)
    log_py = torch.log_softmax(dcim.class_prior_logits(), -1)[y][:, None]
    log_ph = tdist.Bernoulli(logits=dcim.logits_down(2, onehot)[:, None, :]).log_prob(h).sum(-1)
    log_px = tdist.Bernoulli(logits=dcim.logits_down(1, h)).log_prob(x[:, None, :]).sum(-1)
    log_qh = tdist.Bernoulli(logits=dcim.logits_up(1, x)[:, None, :]).log_prob(h).sum(-1)
    log_qy = torch.log_softmax(dcim.logits_up(2, h), -1).T[y]
    return log_py + log_ph + log_px, log_qh + log_qy


def draws(objective, dcim, x, y, reps):
    out = []
    for _ in range(reps):
        dcim.zero_grad(set_to_none=True)
        objective.loss_and_grads(dcim.model, dcim.guide, x, y)
        out.append(torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in dcim.parameters()]))
    return torch.stack(out)


def grad_of(value, dcim):
    params = list(dcim.parameters())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def assert_agrees(g, exact, n_se=4.5, atol=0.0):
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert ((mean - exact).abs() <= n_se * se + atol).all(), (mean, exact, se)


def test_rws_gradient_is_the_posterior_expectation_of_both_directions_and_the_class_term():
    dcim = random_dcim([2], input_dim=3, n_classes=2)
    x, y = batch(4, input_dim=3, n_classes=2)
    log_p, log_q = log_terms(dcim, x, y, binary_states(2))
    posterior = torch.softmax(log_p.detach(), -1)  # p_rev(h | x, y)
    target = -grad_of((posterior * (log_p + log_q)).sum(), dcim)
    g = draws(make_objective("rws", module=dcim, num_particles=2000), dcim, x, y, reps=20)
    assert_agrees(g, target, atol=5e-3)
    # without the class term the forward classifier gets no gradient from the data
    log_p, log_q = log_terms(dcim, x, y, binary_states(2))
    log_qh_only = log_q - torch.log_softmax(dcim.logits_up(2, binary_states(2)), -1).T[y]
    no_class = -grad_of((posterior * (log_p + log_qh_only)).sum(), dcim)
    assert (no_class - target).abs().max() > 0.1
    g = draws(make_objective("rws", module=dcim, num_particles=2000, class_weight=0.0), dcim, x, y, reps=20)
    assert_agrees(g, no_class, atol=5e-3)
    # a class weight c scales only the label's term: the target is no_class + c * (target - no_class)
    g = draws(make_objective("rws", module=dcim, num_particles=2000, class_weight=3.0), dcim, x, y, reps=20)
    assert_agrees(g, no_class + 3.0 * (target - no_class), atol=1e-2)


def test_wake_sleep_trains_the_forward_model_on_dreams_of_the_reverse_model():
    dcim = random_dcim([2], input_dim=3, n_classes=2)
    n = 3000
    x, y = batch(1, input_dim=3, n_classes=2)
    x, y = x.expand(n, 3), y.expand(n)
    hs, xs = binary_states(2), binary_states(3)
    # wake: one forward sample h ~ q(h | x) scores log p_rev(y, h, x)
    log_p, _ = log_terms(dcim, x[:1], y[:1], hs)
    q_h = tdist.Bernoulli(logits=dcim.logits_up(1, x[:1])[:, None, :]).log_prob(hs).sum(-1).exp().detach()
    wake = -n * grad_of((q_h * log_p).sum(), dcim)
    # sleep: E over dreams (y, h, x) ~ p_rev of log q(h, y | x), enumerated over all 2 x 4 x 8 states
    sleep = 0.0
    for c in range(2):
        yc = torch.full((len(xs),), c)
        lp, lq = log_terms(dcim, xs, yc, hs)  # (8 x-states, 4 h-states)
        sleep = sleep + (lp.detach().exp() * lq).sum()
    target = wake - n * grad_of(sleep, dcim)
    g = draws(make_objective("wake_sleep", module=dcim), dcim, x, y, reps=12)
    assert_agrees(g, target)


def test_wake_sleep_objectives_need_a_hidden_layer_and_the_module():
    with pytest.raises(SpecError, match="at least one hidden layer"):
        make_objective("rws", module=random_dcim([]))
    with pytest.raises(SpecError, match="needs the DCIM"):
        make_objective("wake_sleep")
    with pytest.raises(SpecError, match="class_weight must be a number >= 0"):
        make_objective("rws", module=random_dcim([2]), class_weight=-1.0)
