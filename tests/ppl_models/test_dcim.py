"""DCIM model: spec chaining, tied transposed weights (dense and conv), mean recursion
against exact marginals, ancestral sampling against exact conditionals, the Pyro pair."""

import itertools
import math

import numpy as np
import pyro
import pytest
import torch
from scipy import stats

from ppl_models.dcim import DCIM, DCIMSpec, dense_spec, paper_cnn_spec
from ppl_models.dcim_layers import ConvLink
from ppl_models.errors import DataError, SpecError
from ppl_models.specs import from_dict


def binary_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def bern_prob(states, probs):
    """P(states) under independent Bernoulli(probs); states (S, n), probs (..., n) -> (..., S)."""
    p = probs.unsqueeze(-2)
    return (states * p + (1 - states) * (1 - p)).prod(-1)


def tiny_dcim(scale=1.0, seed=0, input_dim=3, hidden=(3, 2), n_classes=3):
    torch.manual_seed(seed)
    dcim = DCIM(dense_spec(hidden, input_dim=input_dim, n_classes=n_classes)).double()
    with torch.no_grad():
        for link in dcim.links:
            link.weight.copy_(scale * torch.randn_like(link.weight))
        for b in dcim.biases:
            b.copy_(0.5 * torch.randn_like(b))
    return dcim


def chi2_pvalue(observed, expected_probs, min_expected=5.0):
    """Chi-square goodness of fit, pooling cells with expected count < min_expected."""
    observed = np.asarray(observed, dtype=float)
    expected = np.asarray(expected_probs, dtype=float) * observed.sum()
    small = expected < min_expected
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


# ------------------------------------------------------------------- spec
def test_paper_cnn_shapes_chain():
    assert DCIM(paper_cnn_spec()).layer_shapes == [
        (1, 28, 28), (32, 26, 26), (32, 24, 24), (32, 12, 12), (64, 10, 10), (64, 8, 8), (64, 4, 4), (50,), (10,)
    ]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"input_shape": [784], "hidden": [{"kind": "conv", "units": 4}]}, "spec.hidden[0]: a conv layer needs"),
        ({"input_shape": [1, 8, 8], "hidden": [{"kind": "dense", "units": 4}, {"kind": "conv", "units": 4}]},
         "spec.hidden[1]: a conv layer needs"),
        ({"input_shape": [1, 8, 8], "hidden": [{"kind": "conv", "units": 4, "window": 5},
                                               {"kind": "conv", "units": 4, "window": 5}]},
         "spec.hidden[1]: conv window 5"),
        ({"input_shape": [1, 8]}, "spec.input_shape must be [D] or [C, H, W]"),
        ({"hidden": [{"kind": "pool", "units": 4}]}, "spec.hidden[0].kind must be one of"),
        ({"hidden": [{"units": 4, "stide": 2}]}, "unknown key spec.hidden[0].stide"),
    ],
)
def test_spec_that_does_not_chain_is_one_line_error(data, fragment):
    with pytest.raises(SpecError) as e:
        from_dict(DCIMSpec, data)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------- tied weights
def test_dense_reverse_is_exact_transpose_with_one_parameter_and_one_gradient():
    dcim = tiny_dcim()
    m = dcim.n_layers
    assert len(list(dcim.parameters())) == m + (m + 1)  # one weight per pair, one bias per layer
    h = torch.rand(4, 2, dtype=torch.float64)
    w = dcim.links[1].weight
    assert torch.equal(dcim.links[1].down(h), h @ w)
    assert torch.allclose(dcim.logits_down(2, h), h @ w + dcim.biases[1])
    # a loss using both directions puts both contributions into the one .grad
    x1 = torch.rand(4, 3, dtype=torch.float64)
    up = lambda: dcim.logits_up(2, x1).pow(2).sum()  # noqa: E731
    down = lambda: dcim.logits_down(2, h).pow(2).sum()  # noqa: E731
    g_up = torch.autograd.grad(up(), w)[0]
    g_down = torch.autograd.grad(down(), w)[0]
    (up() + down()).backward()
    assert torch.allclose(w.grad, g_up + g_down)


def dense_matrix(fn, in_shape):
    """The matrix of a linear map, column j = fn(e_j) flattened."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return fn(basis).reshape(n, -1).t()


@pytest.mark.parametrize(
    "in_shape, window, stride, padding",
    [((2, 5, 5), 3, 1, 0), ((1, 5, 5), 2, 2, 0), ((2, 7, 6), 3, 2, 1), ((3, 6, 6), 2, 2, 0), ((1, 9, 8), 4, 3, 1)],
)
def test_conv_reverse_is_exact_transpose_of_the_convolution_matrix(in_shape, window, stride, padding):
    c, h, w = in_shape
    out_shape = (4, (h + 2 * padding - window) // stride + 1, (w + 2 * padding - window) // stride + 1)
    link = ConvLink(in_shape, out_shape, window, stride, padding).double()
    forward = dense_matrix(link.up, in_shape)  # (n_out, n_in)
    reverse = dense_matrix(link.down, out_shape)  # (n_in, n_out)
    assert forward.shape == (math.prod(out_shape), math.prod(in_shape))
    assert torch.allclose(reverse, forward.t(), atol=1e-12)
    assert [p is link.weight for p in link.parameters()] == [True]


def test_conv_dcim_generator_uses_the_transposed_convolution_of_its_recognition_net():
    spec = from_dict(DCIMSpec, {"input_shape": [1, 6, 5], "n_classes": 3,
                                "hidden": [{"kind": "conv", "units": 2, "window": 2, "stride": 2}, {"units": 4}]})
    dcim = DCIM(spec).double()
    m1 = dense_matrix(lambda v: dcim.logits_up(1, v) - dcim.biases[1], (1, 6, 5))
    h = torch.rand(3, *dcim.layer_shapes[1], dtype=torch.float64)
    got = dcim.logits_down(1, h) - dcim.biases[0]
    assert torch.allclose(got.reshape(3, -1), h.reshape(3, -1) @ m1, atol=1e-12)


# ------------------------------------------------------- mean recursion
def exact_forward_marginals(dcim, x):
    """Exact E[h1], E[h2], p(y) given one image x, by enumerating h1 and h2."""
    (w1, w2, w3), b = [l.weight for l in dcim.links], list(dcim.biases)
    s1, s2 = binary_states(w1.shape[0]), binary_states(w2.shape[0])
    p_h1 = bern_prob(s1, torch.sigmoid(w1 @ x + b[1]))  # (S1,)
    p_h2 = p_h1 @ bern_prob(s2, torch.sigmoid(s1 @ w2.t() + b[2]))  # (S2,)
    p_y = p_h2 @ torch.softmax(s2 @ w3.t() + b[3], -1)
    return {1: p_h1 @ s1, 2: p_h2 @ s2, 3: p_y}


def exact_reverse_marginals(dcim, y):
    (w1, w2, w3), b = [l.weight for l in dcim.links], list(dcim.biases)
    s2, s1 = binary_states(w2.shape[0]), binary_states(w1.shape[0])
    onehot = torch.nn.functional.one_hot(y, dcim.n_classes).double()
    p_h2 = bern_prob(s2, torch.sigmoid(onehot @ w3 + b[2]))
    p_h1 = p_h2 @ bern_prob(s1, torch.sigmoid(s2 @ w2 + b[1]))
    p_x = p_h1 @ torch.sigmoid(s1 @ w1 + b[0])  # E[x] = sum_h1 p(h1) sigmoid(W1'h1 + b0)
    return {2: p_h2 @ s2, 1: p_h1 @ s1, 0: p_x}


def mean_recursion_errors(scale, seed=0):
    """Max abs error of the mean recursion per layer: forward h1, h2, y given x; reverse h2, h1, x given y."""
    dcim = tiny_dcim(scale=scale, seed=seed)
    x, y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), torch.tensor(2)
    with torch.no_grad():
        up, exact_up = dcim.up_means(x.unsqueeze(0)), exact_forward_marginals(dcim, x)
        down, exact_down = dcim.down_means(y.view(1)), exact_reverse_marginals(dcim, y)
        err = lambda a, b: float((a[0] - b).abs().max())  # noqa: E731
        return {
            "up h1": err(up[1], exact_up[1]), "up h2": err(up[2], exact_up[2]), "up y": err(up[3], exact_up[3]),
            "down h2": err(down[2], exact_down[2]), "down h1": err(down[1], exact_down[1]),
            "down x": err(down[0], exact_down[0]),
        }


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_mean_recursion_is_exact_for_the_first_layer_computed(scale):
    errors = mean_recursion_errors(scale)
    assert errors["up h1"] < 1e-12 and errors["down h2"] < 1e-12


def test_mean_recursion_error_above_the_first_layer_is_second_order_in_the_weights():
    """Measured (max over 5 seeds): weights N(0, s^2), s = 0.05 -> errors <= 3e-4;
    s = 0.3 -> <= 5e-3; s = 1 -> up to 0.09 on p(y|x) and E[x|y]; s = 3 -> up to 0.22.
    Halving small weights divides the error by about 4 (second order)."""
    small, half = mean_recursion_errors(0.1), mean_recursion_errors(0.05)
    for layer in ("up h2", "up y", "down h1", "down x"):
        assert 2.5 < small[layer] / half[layer] < 5.5, (layer, small[layer], half[layer])
        assert small[layer] < 2e-3
    large = mean_recursion_errors(3.0)
    assert large["up y"] > 0.05 and large["down x"] > 0.05  # far from exact with large weights


# ------------------------------------------------------- ancestral sampling
@pytest.mark.parametrize("via", ["module", "pyro_guide"])
def test_forward_ancestral_sampling_matches_exact_joint(via):
    dcim = tiny_dcim(scale=1.5)
    (w1, w2, w3), b = [l.weight for l in dcim.links], list(dcim.biases)
    x = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    n = 30000
    xs = x.expand(n, 3)
    with torch.no_grad():
        if via == "module":
            s = dcim.sample_up(xs)
            h1, h2, y = s[1], s[2], s[3].argmax(1)
        else:
            tr = pyro.poutine.trace(dcim.guide).get_trace(xs)
            h1, h2, y = tr.nodes["h1"]["value"], tr.nodes["h2"]["value"], tr.nodes["y"]["value"]
        # exact joint p(h1, h2, y | x) over 8 x 4 x 3 states, in the same mixed-radix order
        s1, s2 = binary_states(3), binary_states(2)
        p1 = bern_prob(s1, torch.sigmoid(w1 @ x + b[1]))
        p21 = bern_prob(s2, torch.sigmoid(s1 @ w2.t() + b[2]))
        py2 = torch.softmax(s2 @ w3.t() + b[3], -1)
        joint = p1[:, None, None] * p21[:, :, None] * py2[None, :, :]
    code = (h1.long() @ torch.tensor([4, 2, 1])) * 12 + (h2.long() @ torch.tensor([2, 1])) * 3 + y
    counts = torch.bincount(code, minlength=96)
    assert chi2_pvalue(counts.numpy(), joint.reshape(-1).numpy()) > 1e-3


@pytest.mark.parametrize("via", ["module", "pyro_model"])
def test_reverse_ancestral_sampling_matches_exact_joint(via):
    dcim = tiny_dcim(scale=1.5)
    (w1, w2, w3), b = [l.weight for l in dcim.links], list(dcim.biases)
    n = 30000
    ys = torch.full((n,), 1, dtype=torch.long)
    with torch.no_grad():
        if via == "module":
            s = dcim.sample_down(ys)
            h2, h1, x = s[2], s[1], s[0]
        else:
            tr = pyro.poutine.trace(dcim.model).get_trace(None, ys)
            h2, h1, x = (tr.nodes[k]["value"] for k in ("h2", "h1", "x"))
        s2, s1, s0 = binary_states(2), binary_states(3), binary_states(3)
        p2 = bern_prob(s2, torch.sigmoid(w3[1] + b[2]))
        p12 = bern_prob(s1, torch.sigmoid(s2 @ w2 + b[1]))
        p01 = bern_prob(s0, torch.sigmoid(s1 @ w1 + b[0]))
        joint = p2[:, None, None] * p12[:, :, None] * p01[None, :, :]
    pw = torch.tensor([4, 2, 1])
    code = (h2.long() @ torch.tensor([2, 1])) * 64 + (h1.long() @ pw) * 8 + x.long() @ pw
    counts = torch.bincount(code, minlength=256)
    assert chi2_pvalue(counts.numpy(), joint.reshape(-1).numpy()) > 1e-3


def test_pyro_model_samples_labels_from_softmax_of_the_top_bias():
    dcim = tiny_dcim()
    with torch.no_grad():
        y = pyro.poutine.trace(dcim.model).get_trace(None, None, 20000).nodes["y"]["value"]
    probs = torch.softmax(dcim.biases[-1], -1).detach().numpy()
    assert chi2_pvalue(torch.bincount(y, minlength=3).numpy(), probs) > 1e-3


# ------------------------------------------------------- the Pyro pair
def exact_elbo(dcim, x, y):
    """E_q(h|x)[log p(y) p(h|y) p(x|h) - log q(h|x)] by enumerating h1 (3 units) and h2 (2)."""
    (w1, w2, w3), b = [l.weight for l in dcim.links], list(dcim.biases)
    s1, s2 = binary_states(3), binary_states(2)
    lb = lambda s, logits: (s * logits - torch.nn.functional.softplus(logits)).sum(-1)  # noqa: E731
    q1 = lb(s1, w1 @ x + b[1])  # (8,)
    q21 = lb(s2[None], s1[:, None] @ w2.t() + b[2])  # (8, 4)
    log_q = q1[:, None] + q21
    log_py = torch.log_softmax(b[3], -1)[y]
    p2 = lb(s2, w3[y] + b[2])  # (4,)
    p12 = lb(s1[:, None], s2[None] @ w2 + b[1])  # (8, 4)
    p01 = lb(x, s1 @ w1 + b[0])  # (8,)
    log_p = log_py + p2[None] + p12 + p01[:, None]
    return (log_q.exp() * (log_p - log_q)).sum()


def test_trace_elbo_on_the_pair_matches_the_exact_elbo():
    dcim = tiny_dcim(scale=1.0)
    x = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    n = 20000
    loss = pyro.infer.Trace_ELBO().loss(dcim.model, dcim.guide, x.expand(n, 3), torch.full((n,), 2))
    exact = float(exact_elbo(dcim, x, 2).detach())
    assert abs(-loss / n - exact) < 0.05  # per-image MC sd ~1.2 nats -> sd of the mean ~0.01


@pytest.mark.parametrize("elbo", [pyro.infer.Trace_ELBO, pyro.infer.TraceGraph_ELBO])
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("labelled", [True, False])
def test_pyro_elbos_give_finite_loss_and_gradients(elbo, arch, labelled):
    if arch == "dense":
        dcim = DCIM(dense_spec([6, 5], input_dim=12, n_classes=3))
    else:
        dcim = DCIM(from_dict(DCIMSpec, {"input_shape": [1, 4, 3], "n_classes": 3,
                                         "hidden": [{"kind": "conv", "units": 2, "window": 2}, {"units": 5}]}))
    x = torch.bernoulli(torch.full((8, 12), 0.4))
    y = torch.randint(0, 3, (8,)) if labelled else None
    loss = elbo().loss_and_grads(dcim.model, dcim.guide, x, y)
    assert math.isfinite(loss)
    for name, p in dcim.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert dcim.links[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------- bad input
def test_bad_images_and_labels_are_one_line_data_errors():
    dcim = tiny_dcim()
    x = torch.zeros(4, 3, dtype=torch.float64)
    cases = [
        (lambda: dcim.check_images(torch.zeros(4, 5)), "x must have shape (N, 3)"),
        (lambda: dcim.model(x, torch.tensor([0, 1, 3, 0])), "class indices in 0..2, found 3"),
        (lambda: dcim.guide(x, torch.tensor([0, -1, 1, 0])), "class indices in 0..2, found -1"),
        (lambda: dcim.model(x, torch.tensor([0.0, 1.0, 1.0, 0.0])), "1-d integer tensor"),
        (lambda: dcim.model(x, torch.tensor([0, 1])), "one label per image (4), got 2"),
        (lambda: dcim.model(None, None), "needs labels y or batch_size"),
        (lambda: dcim.down_means(torch.tensor([5])), "found 5"),
    ]
    for call, fragment in cases:
        with pytest.raises(DataError) as e:
            call()
        assert fragment in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SpecError, match="from_layer must be a layer index in 1..3"):
        dcim.image_logits(torch.zeros(1, 3), from_layer=0)
