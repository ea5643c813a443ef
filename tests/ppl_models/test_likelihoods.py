"""BernoulliPixels scores like Bernoulli(logits).to_event(1): value and gradient, binary and grey values,
broadcast over particle dimensions; and it samples and expands like it."""

import pyro.distributions as dist
import pytest
import torch

from ppl_models.likelihoods import BernoulliPixels


@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.parametrize("logit_shape,value_shape", [((7, 5), (7, 5)), ((3, 7, 5), (7, 5)), ((2, 3, 7, 5), (3, 7, 5))])
def test_log_prob_and_gradient_equal_the_bernoulli(logit_shape, value_shape, grey):
    torch.manual_seed(0)
    logits = (4 * torch.randn(logit_shape, dtype=torch.float64)).requires_grad_()
    value = torch.rand(value_shape, dtype=torch.float64)
    value = value if grey else torch.bernoulli(value)
    ours = BernoulliPixels(logits).log_prob(value)
    ref = dist.Bernoulli(logits=logits, validate_args=False).to_event(1).log_prob(value)
    assert ours.shape == ref.shape == logit_shape[:-1]
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-10)
    weights = torch.randn(ours.shape, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((weights * ours).sum(), logits)
    (g_ref,) = torch.autograd.grad((weights * ref).sum(), logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-10)
    # and the hand-derived gradient: d/dl [x l - softplus(l)] = x - sigmoid(l)
    torch.testing.assert_close(g_ours, weights.unsqueeze(-1) * (value - torch.sigmoid(logits)).detach())


def test_float32_agrees_to_rounding_at_image_size():
    torch.manual_seed(1)
    logits = 3 * torch.randn(50, 20, 784)
    x = torch.bernoulli(torch.rand(20, 784))
    ref = dist.Bernoulli(logits=logits, validate_args=False).to_event(1).log_prob(x)
    torch.testing.assert_close(BernoulliPixels(logits).log_prob(x), ref, rtol=1e-5, atol=1e-3)


def test_samples_mean_and_expand_are_the_bernoullis():
    logits = torch.tensor([[-20.0, 20.0, 0.0]])
    d = BernoulliPixels(logits)
    assert d.event_shape == (3,) and d.batch_shape == (1,)
    torch.testing.assert_close(d.mean, torch.sigmoid(logits))
    s = d.sample((4000,))
    assert s.shape == (4000, 1, 3) and s[..., 0].sum() == 0 and s[..., 1].sum() == 4000
    assert abs(s[..., 2].mean().item() - 0.5) < 0.04
    e = d.expand((6, 1))
    assert isinstance(e, BernoulliPixels) and e.batch_shape == (6, 1)
    torch.testing.assert_close(e.log_prob(torch.ones(3)), d.log_prob(torch.ones(3)).expand(6, 1))


def test_validation_rejects_values_outside_the_support():
    with pytest.raises(ValueError):
        BernoulliPixels(torch.zeros(2, 3), validate_args=True).log_prob(torch.full((2, 3), 2.0))


def test_scoring_and_training_forms_agree():
    torch.manual_seed(3)
    logits = torch.randn(4, 6, 9, dtype=torch.float64, requires_grad=True)
    x = torch.bernoulli(torch.rand(6, 9, dtype=torch.float64))
    trained = BernoulliPixels(logits).log_prob(x)  # the elementwise form (autograd on)
    with torch.no_grad():
        scored = BernoulliPixels(logits).log_prob(x)  # the einsum form
    torch.testing.assert_close(scored, trained.detach(), rtol=1e-12, atol=1e-10)
