"""DCIM queries: classification, reverse loss, class-conditional generation against exact answers."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from inference.dcim_objectives import GenerativeLoss
from inference.dcim_queries import accuracy, class_probabilities, generate, predict, reverse_loss
from ppl_models.dcim import DCIM, dense_spec
from ppl_models.errors import DataError, SpecError


def random_dcim(scale=1.5, seed=0):
    torch.manual_seed(seed)
    dcim = DCIM(dense_spec([3, 2], input_dim=4, n_classes=3)).double()
    with torch.no_grad():
        for p in dcim.parameters():
            p.copy_(scale * torch.randn_like(p))
    return dcim


def test_classification_queries_agree_with_the_forward_mean_recursion():
    dcim = random_dcim()
    x = torch.bernoulli(torch.full((50, 4), 0.5, dtype=torch.float64))
    probs = class_probabilities(dcim, x)
    assert torch.allclose(probs.sum(-1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(probs, dcim.up_means(x)[3])
    labels = predict(dcim, x)
    assert torch.equal(labels, probs.argmax(-1))
    assert accuracy(dcim, x, labels) == 1.0
    assert accuracy(dcim, x, (labels + 1) % 3) == 0.0


def exact_forward_class_probabilities(dcim, x):
    """p_fwd(y | x) = sum over h1, h2 of q(h1 | x) q(h2 | h1) softmax(W3 h2 + b3), by enumeration."""
    h1s = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    h2s = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)), dtype=torch.float64)
    bern = lambda logits, h: torch.distributions.Bernoulli(logits=logits).log_prob(h).sum(-1).exp()
    with torch.no_grad():
        q1 = bern(dcim.logits_up(1, x)[:, None, :], h1s)                # (N, 8)
        q2 = bern(dcim.logits_up(2, h1s)[:, None, :], h2s)              # (8, 4)
        py = torch.softmax(dcim.logits_up(3, h2s), -1)                 # (4, C)
    return q1 @ q2 @ py


def test_sampled_class_probabilities_match_the_enumerated_forward_model():
    dcim = random_dcim(scale=2.5, seed=1)  # a net whose mean recursion is far from exact
    x = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.float64))
    exact = exact_forward_class_probabilities(dcim, x)
    sampled = class_probabilities(dcim, x, num_samples=4000)
    assert (sampled - exact).abs().max() < 0.04  # each entry's standard error is below 0.5 / sqrt(4000) = 0.008
    # the mean recursion is a different (approximate) answer, which the test can tell apart
    assert (class_probabilities(dcim, x) - exact).abs().max() > 0.1
    with pytest.raises(SpecError, match="num_samples must be a positive integer or None"):
        class_probabilities(dcim, x, num_samples=0)


def test_reverse_loss_per_image_per_pixel_and_map_agree_with_the_objective():
    dcim = random_dcim()
    x = torch.bernoulli(torch.full((8, 4), 0.5, dtype=torch.float64))
    y = torch.randint(0, 3, (8,))
    pixel_map = reverse_loss(dcim, x, y, per="none")
    assert pixel_map.shape == (8, 4)
    per_image = reverse_loss(dcim, x, y, per="image")
    assert torch.allclose(per_image, pixel_map.sum(-1))
    assert torch.allclose(reverse_loss(dcim, x, y), per_image / 4)
    objective = GenerativeLoss()
    objective.loss(dcim.model, dcim.guide, x, y)
    assert objective.last_terms["reverse_nll"] == pytest.approx(float(per_image.mean()), abs=1e-12)
    # by hand: -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)], p = E[x | y] by the mean recursion
    p = dcim.down_means(y)[0].detach()
    assert torch.allclose(per_image, -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1))


def exact_image_marginal(dcim, label):
    """E[x | y] of the reverse model by enumerating h2 (2 units) and h1 (3 units)."""
    with torch.no_grad():
        (w1, w2, w3), b = [link.weight for link in dcim.links], list(dcim.biases)
        s2 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)), dtype=torch.float64)
        s1 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
        prob = lambda s, p: (s * p + (1 - s) * (1 - p)).prod(-1)  # noqa: E731
        p_h2 = prob(s2, torch.sigmoid(w3[label] + b[2]))
        p_h1 = p_h2 @ prob(s1[None], torch.sigmoid(s2 @ w2 + b[1])[:, None])
        return p_h1 @ torch.sigmoid(s1 @ w1 + b[0])


def test_ancestral_generation_averages_to_the_exact_image_marginal():
    dcim = random_dcim()
    n = 20000
    images = generate(dcim, torch.full((n,), 2), sample_to=1)
    exact = exact_image_marginal(dcim, 2)
    sd = images.std(0) / math.sqrt(n)
    assert ((images.mean(0) - exact).abs() < 4 * sd + 1e-9).all()
    binary = generate(dcim, torch.full((n,), 2), sample_to=1, binary=True)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert ((binary.mean(0) - exact).abs() < 4 * binary.std(0) / math.sqrt(n)).all()


def test_generation_without_sampling_is_the_class_mean_image_and_propagation_sits_between():
    dcim = random_dcim()
    y = torch.tensor([0, 1, 2])
    mean_image = generate(dcim, y, sample_to=None)
    assert torch.allclose(mean_image, torch.sigmoid(dcim.image_logits(y)).detach())
    assert torch.allclose(generate(dcim, y, sample_to=3), mean_image)
    # sample_to=2: h2 ~ p(h2 | y) exactly, then the mean recursion; check its average by enumerating h2
    n = 20000
    images = generate(dcim, torch.full((n,), 0), sample_to=2)
    with torch.no_grad():
        s2 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)), dtype=torch.float64)
        p_h2 = torch.sigmoid(dcim.logits_down(3, F.one_hot(torch.tensor(0), 3).double()))
        weights = (s2 * p_h2 + (1 - s2) * (1 - p_h2)).prod(-1)
        expected = weights @ torch.sigmoid(dcim.image_logits(s2, from_layer=2))
    assert ((images.mean(0) - expected).abs() < 4 * images.std(0) / math.sqrt(n) + 1e-9).all()


def test_bad_query_input_is_a_one_line_error():
    dcim = random_dcim()
    x = torch.zeros(2, 4, dtype=torch.float64)
    for error, call, fragment in [
        (SpecError, lambda: generate(dcim, torch.tensor([0]), sample_to=0), "sample_to must be a layer index in 1..3"),
        (DataError, lambda: generate(dcim, torch.tensor([3])), "class indices in 0..2, found 3"),
        (DataError, lambda: reverse_loss(dcim, x, None), "reverse_loss needs labels y"),
        (SpecError, lambda: reverse_loss(dcim, x, torch.tensor([0, 1]), per="batch"), "per must be one of"),
        (DataError, lambda: class_probabilities(dcim, torch.zeros(2, 5)), "x must have shape (N, 4)"),
    ]:
        with pytest.raises(error) as e:
            call()
        assert fragment in str(e.value) and "\n" not in str(e.value)
