"""Sampling importance resampling against exact answers on the enumerable sigmoid belief net of tests/tiny_sbn.py."""

import re

import pytest
import torch
from scipy.stats import chisquare

from inference.errors import SpecError
from inference.importance_resampling import importance_resample
from tests.tiny_sbn import TinySBN, all_states


def _broad_guide(sbn: TinySBN) -> TinySBN:
    with torch.no_grad():  # an untrained, broad recognition model: it covers the posterior without matching it
        sbn.V.mul_(0.3)
        sbn.c.mul_(0.3)
    return sbn


def _p_value(rows: torch.Tensor, probs: torch.Tensor) -> float:
    index = (rows.long() * 2 ** torch.arange(rows.shape[1] - 1, -1, -1)).sum(-1)  # all_states order
    counts = torch.bincount(index, minlength=probs.numel()).double()
    return float(chisquare(counts.numpy(), (probs.double() * rows.shape[0]).numpy()).pvalue)


def test_completions_follow_the_exact_conditional_and_the_mean_weight_is_p_of_the_observed_pixels():
    torch.manual_seed(0)
    sbn = _broad_guide(TinySBN(x_dim=4, h_dim=3, seed=2))
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([False, True, True, False])
    full = x.expand(4, 4).clone()
    full[:, ~mask] = all_states(2)
    log_joint = sbn.log_marginal(full).detach()  # log p(x_observed, x_missing) for each completion
    r = importance_resample(sbn.model, sbn.guide, x.expand(4000, 4), mask, num_particles=300)
    assert r.x.shape == (4000, 1, 4) and torch.equal(r.x[:, 0, mask], x.expand(4000, 4)[:, mask])
    assert _p_value(r.x[:, 0, ~mask], torch.softmax(log_joint, 0)) > 1e-3
    exact = torch.logsumexp(log_joint, 0)
    z = (r.log_marginal - exact) / r.log_marginal_stderr
    assert float(z.abs().max()) < 4.5 and float(z.mean().abs()) < 0.2  # 4000 independent estimates
    assert bool((r.effective_sample_size > 100).all())


def test_with_every_pixel_observed_the_latents_follow_the_exact_posterior():
    torch.manual_seed(1)
    sbn = _broad_guide(TinySBN(x_dim=4, h_dim=3, seed=3))
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    r = importance_resample(sbn.model, sbn.guide, x.expand(4000, 4), torch.ones(4, dtype=torch.bool), num_particles=300)
    assert torch.equal(r.x[:, 0], x.expand(4000, 4))  # nothing to complete
    assert _p_value(r.latents["h"][:, 0], sbn.posterior(x)[0].detach()) > 1e-3
    one = importance_resample(sbn.model, sbn.guide, x.expand(4000, 4), torch.ones(4, dtype=torch.bool), num_particles=1)
    assert _p_value(one.latents["h"][:, 0], sbn.posterior(x)[0].detach()) < 1e-6  # k = 1: the guide, not the posterior


def test_per_input_masks_keep_each_inputs_observed_pixels_whatever_the_batches():
    sbn = TinySBN(x_dim=4, h_dim=3, seed=0)
    x = all_states(4)[[3, 12]]
    mask = torch.tensor([[True, True, False, False], [False, False, True, True]])
    for max_elements in (2 ** 24, 200):  # both inputs in one pass; one input per pass
        r = importance_resample(sbn.model, sbn.guide, x, mask, num_particles=50, num_draws=7, max_elements=max_elements)
        assert r.x.shape == (2, 7, 4) and r.latents["h"].shape == (2, 7, 3) and r.log_weights.shape == (50, 2)
        for n in range(2):
            assert torch.equal(r.x[n][:, mask[n]], x[n, mask[n]].expand(7, 2))
            assert torch.equal(r.x_mean[n][:, mask[n]], x[n, mask[n]].expand(7, 2))
            assert bool(((r.x_mean[n][:, ~mask[n]] > 0) & (r.x_mean[n][:, ~mask[n]] < 1)).all())


@pytest.mark.parametrize("kwargs, message", [
    ({"num_particles": 0}, "num_particles must be a positive integer"),
    ({"num_draws": 1.5}, "num_draws must be a positive integer"),
    ({"mask": torch.ones(4, dtype=torch.bool)}, "mask (D,) or (N, D)"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    sbn = TinySBN()
    args = {"mask": torch.tensor([True, False, True]), **kwargs}
    with pytest.raises(SpecError, match=re.escape(message)):
        importance_resample(sbn.model, sbn.guide, torch.zeros(2, 3, dtype=torch.float64), **args)
