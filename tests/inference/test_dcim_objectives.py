"""DCIM objectives: RBM pseudo-likelihood identity, hand-derived and finite-difference
gradients, the alternative objective's expectation, SVI compatibility, bad input."""

import itertools
import math

import pyro
import pytest
import torch
import torch.nn.functional as F

from inference.dcim_objectives import (
    AlternativeGenerativeLoss,
    DiscriminativeLoss,
    GenerativeLoss,
    make_objective,
)
from ppl_models.dcim import DCIM, dense_spec
from ppl_models.errors import DataError, SpecError


def binary_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def random_dcim(hidden, input_dim=4, n_classes=3, scale=1.0, seed=0):
    torch.manual_seed(seed)
    dcim = DCIM(dense_spec(hidden, input_dim=input_dim, n_classes=n_classes)).double()
    with torch.no_grad():
        for p in dcim.parameters():
            p.copy_(scale * torch.randn_like(p))
    return dcim


def batch(n=6, input_dim=4, n_classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((n, input_dim), 0.5, dtype=torch.float64), generator=g)
    return x, torch.randint(0, n_classes, (n,), generator=g)


# ------------------------------------------------------- one layer: an RBM
def rbm_block_pseudo_log_likelihood(w, b0, b1, x, y):
    """log p(y|x) + log p(x|y) of the RBM E(x, y) = -e_y' W x - b0'x - b1'e_y, by enumeration."""
    def neg_energy(xs, ys):  # xs (..., D), ys (...,) -> (...)
        return (w[ys] * xs).sum(-1) + xs @ b0 + b1[ys]

    classes = torch.arange(w.shape[0])
    images = binary_states(w.shape[1])
    total = 0.0
    for xi, yi in zip(x, y):
        log_p_y = neg_energy(xi, yi) - torch.logsumexp(neg_energy(xi.expand(len(classes), -1), classes), 0)
        log_p_x = neg_energy(xi, yi) - torch.logsumexp(neg_energy(images, yi.expand(len(images))), 0)
        total = total + log_p_y + log_p_x
    return total


def test_one_layer_generative_loss_is_the_rbm_block_pseudo_likelihood():
    dcim = random_dcim([])
    assert dcim.n_layers == 1
    x, y = batch()
    w, b0, b1 = dcim.links[0].weight, dcim.biases[0], dcim.biases[1]
    exact = float(rbm_block_pseudo_log_likelihood(w, b0, b1, x, y).detach())
    full = GenerativeLoss(reverse_weight="sum", batch_reduction="sum").loss(dcim.model, dcim.guide, x, y)
    assert full == pytest.approx(-exact, abs=1e-10)
    # default weighting: class term plus the per-pixel mean of the image term, averaged over the batch
    objective = GenerativeLoss()
    mean = objective.loss(dcim.model, dcim.guide, x, y)
    terms = objective.last_terms
    assert mean == pytest.approx(terms["class_nll"] + terms["reverse_nll"] / 4, abs=1e-12)
    assert terms["class_nll"] + terms["reverse_nll"] == pytest.approx(-exact / len(y), abs=1e-10)


def test_one_layer_generative_gradient_matches_the_hand_derived_formula():
    dcim = random_dcim([])
    x, y = batch()
    GenerativeLoss(reverse_weight="sum", batch_reduction="sum").loss_and_grads(dcim.model, dcim.guide, x, y)
    with torch.no_grad():
        w, b0, b1 = dcim.links[0].weight, dcim.biases[0], dcim.biases[1]
        e_y = F.one_hot(y, 3).double()
        p_y = torch.softmax(x @ w.t() + b1, -1)  # forward class probabilities
        p_x = torch.sigmoid(e_y @ w + b0)  # reverse pixel probabilities
        # d/dW of -[log p(y|x) + log p(x|y)] = (p_y - e_y) x' - e_y (x - p_x)'
        grad_w = (p_y - e_y).t() @ x - e_y.t() @ (x - p_x)
        grad_b0 = -(x - p_x).sum(0)
        grad_b1 = (p_y - e_y).sum(0)
    assert torch.allclose(dcim.links[0].weight.grad, grad_w, atol=1e-10)
    assert torch.allclose(dcim.biases[0].grad, grad_b0, atol=1e-10)
    assert torch.allclose(dcim.biases[1].grad, grad_b1, atol=1e-10)


# ------------------------------------------------------- deeper nets
def test_discriminative_loss_is_a_sigmoid_dnns_cross_entropy():
    dcim = random_dcim([5, 4])
    x, y = batch()
    dnn = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 4),
                              torch.nn.Sigmoid(), torch.nn.Linear(4, 3)).double()
    with torch.no_grad():
        for lin, link, b in zip(dnn[::2], dcim.links, list(dcim.biases)[1:]):
            lin.weight.copy_(link.weight)
            lin.bias.copy_(b)
    expected = float(F.cross_entropy(dnn(x), y).detach())
    assert DiscriminativeLoss().loss(dcim.model, dcim.guide, x, y) == pytest.approx(expected, abs=1e-12)


def assert_gradients_match_finite_differences(objective, dcim, x, y, reseed=None, n_coords=6, eps=1e-6):
    if reseed is not None:  # the same uniforms, hence the same inner-layer sample, at every evaluation
        pyro.set_rng_seed(reseed)
    objective.loss_and_grads(dcim.model, dcim.guide, x, y)
    g = torch.Generator().manual_seed(0)
    for name, p in dcim.named_parameters():
        flat = p.data.view(-1)
        for i in torch.randint(0, flat.numel(), (n_coords,), generator=g).tolist():
            values = []
            for step in (eps, -eps):
                flat[i] += step
                if reseed is not None:
                    pyro.set_rng_seed(reseed)
                values.append(objective.loss(dcim.model, dcim.guide, x, y))
                flat[i] -= step
            numeric = (values[0] - values[1]) / (2 * eps)
            analytic = 0.0 if p.grad is None else p.grad.view(-1)[i].item()  # None: p unused (b0 by the DNN)
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (name, i)


@pytest.mark.parametrize("reverse_weight", ["pixel_mean", "sum", 0.3])
def test_generative_gradients_match_finite_differences(reverse_weight):
    dcim = random_dcim([5, 4])
    x, y = batch()
    assert_gradients_match_finite_differences(GenerativeLoss(reverse_weight=reverse_weight), dcim, x, y)


@pytest.mark.parametrize("sampling", ["marginal", "ancestral"])
@pytest.mark.parametrize("layer", [1, None])
def test_alternative_gradients_match_finite_differences_with_the_sample_held_fixed(sampling, layer):
    dcim = random_dcim([5, 4])
    x, y = batch()
    objective = AlternativeGenerativeLoss(reverse_weight="sum", layer=layer, sampling=sampling)
    assert_gradients_match_finite_differences(objective, dcim, x, y, reseed=3)


def test_discriminative_gradients_match_finite_differences():
    dcim = random_dcim([5, 4])
    x, y = batch()
    assert_gradients_match_finite_differences(DiscriminativeLoss(), dcim, x, y)


@pytest.mark.parametrize("sampling", ["marginal", "ancestral"])
def test_alternative_reverse_term_is_unbiased_for_its_exact_expectation(sampling):
    """E over the sampled last hidden layer h2 of -log p_rev(x | h2), enumerated over h2's 4 states."""
    dcim = random_dcim([3, 2], scale=1.5)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        s1, s2 = binary_states(3), binary_states(2)
        prob = lambda s, p: (s * p + (1 - s) * (1 - p)).prod(-1)  # noqa: E731
        if sampling == "marginal":
            p_h2 = prob(s2, dcim.up_means(x)[2][0])
        else:
            p_h1 = prob(s1, torch.sigmoid(dcim.logits_up(1, x))[0])
            p_h2 = p_h1 @ prob(s2[None], torch.sigmoid(dcim.logits_up(2, s1))[:, None])
        nll = F.binary_cross_entropy_with_logits(dcim.image_logits(s2, from_layer=2), x.expand(4, 4),
                                                 reduction="none").sum(-1)
        exact = float(p_h2 @ nll)
        n = 20000
        xs, ys = x.expand(n, 4), torch.zeros(n, dtype=torch.long)
        per_image = AlternativeGenerativeLoss(sampling=sampling).terms(dcim, xs, ys)["reverse_nll"]
    sd = float(per_image.std()) / math.sqrt(n)
    assert abs(float(per_image.mean()) - exact) < 4 * sd + 1e-9


# ------------------------------------------------------- use with Pyro's SVI
def prototype_data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = torch.tensor([[1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4])
    y = torch.randint(0, 2, (n,), generator=g)
    flips = torch.bernoulli(torch.full((n, 8), 0.1), generator=g)
    return (protos[y] - flips).abs(), y


@pytest.mark.parametrize("name", ["discriminative", "generative", "alternative"])
def test_objectives_train_with_pyro_svi(name):
    dcim = DCIM(dense_spec([6], input_dim=8, n_classes=2))
    x, y = prototype_data()
    svi = pyro.infer.SVI(dcim.model, dcim.guide, pyro.optim.Adam({"lr": 0.1}), make_objective(name))
    first = svi.evaluate_loss(x, y)
    before = dcim.links[0].weight.detach().clone()
    for _ in range(60):
        svi.step(x, y)
    assert not torch.equal(before, dcim.links[0].weight)  # SVI found and stepped the module's parameters
    assert svi.evaluate_loss(x, y) < 0.7 * first
    assert (dcim.class_logits(x).argmax(-1) == y).float().mean() > 0.95


def test_objective_takes_the_module_explicitly_and_runs_elbo_by_name():
    dcim = DCIM(dense_spec([6], input_dim=8, n_classes=2))
    x, y = prototype_data(8)
    loss = GenerativeLoss(module=dcim).loss_and_grads(lambda *a: None, lambda *a: None, x, y)
    assert math.isfinite(loss) and dcim.links[0].weight.grad.abs().sum() > 0
    elbo = make_objective("elbo")
    assert isinstance(elbo, pyro.infer.TraceGraph_ELBO)
    assert math.isfinite(elbo.loss_and_grads(dcim.model, dcim.guide, x, y))


def test_paper_cnn_objectives_run_on_mnist_shaped_input():
    from ppl_models.dcim import paper_cnn_spec

    dcim = DCIM(paper_cnn_spec())
    x, y = torch.rand(3, 784), torch.tensor([0, 4, 9])
    for name in ("generative", "alternative"):
        dcim.zero_grad()
        assert math.isfinite(make_objective(name).loss_and_grads(dcim.model, dcim.guide, x, y))
        assert all(torch.isfinite(p.grad).all() for p in dcim.parameters())


# ------------------------------------------------------- bad input
def test_bad_objective_input_is_a_one_line_error():
    dcim = random_dcim([3])
    x, y = batch()
    cases = [
        (DataError, lambda: GenerativeLoss().loss(dcim.model, dcim.guide, x), "the generative objective needs labels y"),
        (DataError, lambda: DiscriminativeLoss().loss(dcim.model, dcim.guide, x, y + 3), "class indices in 0..2, found"),
        (DataError, lambda: GenerativeLoss().loss(dcim.model, dcim.guide, x[:, :3], y), "x must have shape (N, 4)"),
        (SpecError, lambda: make_objective("contrastive"),
         "unknown objective 'contrastive'; expected one of: discriminative, generative, alternative, elbo"),
        (SpecError, lambda: make_objective("generative", reverse_weight="mean"), "reverse_weight must be"),
        (SpecError, lambda: make_objective("generative", lr=1.0), "bad option for objective 'generative'"),
        (SpecError, lambda: make_objective("alternative", sampling="mode"), "sampling must be one of"),
        (SpecError, lambda: AlternativeGenerativeLoss(layer=2).loss(dcim.model, dcim.guide, x, y),
         "layer must be a hidden layer index in 1..1"),
        (SpecError, lambda: DiscriminativeLoss(batch_reduction="max"), "batch_reduction must be one of"),
        (SpecError, lambda: DiscriminativeLoss().loss(lambda: 0, lambda: 0, x, y), "needs the DCIM"),
    ]
    for error, call, fragment in cases:
        with pytest.raises(error) as e:
            call()
        assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
