"""AIS log Z against exact log Z (hidden or visible layer enumerated); groups and the stability rule."""

import math

import pytest
import torch

from inference.ais import (
    ais_log_partition,
    base_rate_visible,
    default_schedule,
    estimate_is_stable,
    mean_log_likelihood,
)
from inference.contrastive_divergence import ContrastiveDivergence
from inference.exact_enumeration import log_partition
from inference.training import fit
from ppl_models.errors import DataError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM


def _random_rbm(V, H, scale=1.0):
    rbm = RBM(V, H, weight_scale=scale)
    with torch.no_grad():
        rbm.visible_bias.normal_(0, 1)
        rbm.hidden_bias.normal_(0, 1)
    return rbm


def test_zero_weights_and_exact_base_give_exact_log_z_with_zero_spread():
    # Every intermediate distribution equals the base: all weights are 1, the estimate is exact.
    rbm = RBM(12, 5, weight_scale=0.0)
    with torch.no_grad():
        rbm.visible_bias.normal_()
    result = ais_log_partition(rbm, base=rbm.visible_bias.detach(), num_runs=10, num_temperatures=50)
    assert result.log_z == pytest.approx(float(log_partition(rbm)), abs=1e-5)
    assert result.log_z_std == pytest.approx(0.0, abs=1e-6)


def test_binary_rbm_log_z_within_tolerance_of_exact():
    rbm = _random_rbm(20, 8)
    exact = float(log_partition(rbm))  # enumerates the 2^8 hidden states
    data = torch.bernoulli(torch.full((50, 20), 0.3))
    result = ais_log_partition(rbm, data, num_runs=100, num_temperatures=2000)
    assert abs(result.log_z - exact) < 0.1, (result.log_z, exact)
    assert result.log_z_lower <= exact <= result.log_z_upper
    assert result.log_weights.shape == (100,) and result.num_temperatures == 2000


def test_gaussian_bernoulli_log_z_within_tolerance_of_exact():
    gb = GaussianBernoulliRBM(10, 6, sigma=torch.linspace(0.5, 1.5, 10), weight_scale=1.0)
    with torch.no_grad():
        gb.visible_bias.normal_()
        gb.hidden_bias.normal_()
    exact = float(log_partition(gb))
    result = ais_log_partition(gb, torch.randn(100, 10), num_runs=100, num_temperatures=2000)
    assert abs(result.log_z - exact) < 0.15, (result.log_z, exact)


def _mnist5k_train():
    from ppl_models.data import load_dataset

    return load_dataset("mnist5k", binarize="threshold").train.x


def _mnist_rbm_784x15():
    x = _mnist5k_train()
    torch.manual_seed(0)
    rbm = RBM(784, 15)
    fit(ContrastiveDivergence(rbm, k=1, persistent=True), (x,), module=rbm, epochs=2, batch_size=20,
        optimizer="sgd", lr=0.05, momentum=0.5, seed=0, progress=False)
    return rbm, x


def test_ais_on_mnist_trained_784x15_rbm_within_tolerance_of_exact():
    """784 visible x 15 hidden, PCD-trained on real MNIST-5k: exact log Z enumerates 2^15 hidden states.

    Tolerance 0.25 nats on log Z (so on the average test log-likelihood) with 100 runs x 2000
    temperatures; the +-3 sigma interval must contain the truth.
    """
    rbm, x = _mnist_rbm_784x15()
    exact = float(log_partition(rbm))
    result = ais_log_partition(rbm, x, num_runs=100, num_temperatures=2000)
    assert abs(result.log_z - exact) < 0.25, (result.log_z, exact)
    assert result.log_z_lower <= exact <= result.log_z_upper
    # a trained model: well above the uniform model's -784 log 2 = -543 nats
    assert mean_log_likelihood(rbm, x[:500], exact) > -250


@pytest.mark.slow
def test_ais_on_mnist_784x15_full_schedule_is_tight():
    rbm, x = _mnist_rbm_784x15()
    exact = float(log_partition(rbm))
    result = ais_log_partition(rbm, x, num_runs=100, num_temperatures=14500)
    assert abs(result.log_z - exact) < 0.08, (result.log_z, exact)


def test_default_schedule_is_increasing_from_0_to_1():
    betas = default_schedule(1450)
    assert betas.shape == (1450,) and betas[0] == 0 and betas[-1] == 1
    assert bool((betas[1:] > betas[:-1]).all())


@pytest.mark.parametrize(
    "schedule",
    [[0.0, 0.5, 0.4, 1.0], [0.1, 0.5, 1.0], [0.0, 0.5, 1.2], [0.0, 0.5, 0.5, 1.0], [0.0, float("nan"), 1.0], [1.0]],
)
def test_bad_schedule_rejected_with_one_line(schedule):
    with pytest.raises(SpecError) as e:
        ais_log_partition(RBM(4, 3), schedule=schedule, num_runs=2)
    assert "schedule" in str(e.value) and "\n" not in str(e.value)


def test_bad_input_rejected():
    with pytest.raises(DataError):
        base_rate_visible(RBM(4, 3), torch.full((5, 4), 0.5))  # grey levels, binary model
    with pytest.raises(SpecError):
        ais_log_partition(RBM(4, 3), num_runs=0)
    rbm = RBM(4, 3)
    with torch.no_grad():
        rbm.weight[0, 0] = float("nan")
    with pytest.raises(SpecError):
        ais_log_partition(rbm, num_runs=2, num_temperatures=10)


def test_base_rate_uses_smoothed_data_marginals():
    data = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    logits = base_rate_visible(RBM(2, 1), data, smoothing=0.5)
    assert torch.allclose(torch.sigmoid(logits), torch.tensor([4.5 / 5, 1.5 / 5]))
    assert math.isfinite(float(logits.sum()))
    assert torch.equal(RBM(2, 1).base_rate(data, smoothing=0.5), logits)  # the wrapper only adds the 0/1 check


def test_model_base_rate_takes_grey_means_and_defaults():
    # grey levels (probabilities of binary pixels, as under dynamic binarisation): only their means enter
    grey = torch.tensor([[0.5, 0.2], [0.7, 0.0]])
    logits = RBM(2, 1).base_rate(grey, smoothing=0.5)
    assert torch.allclose(torch.sigmoid(logits), torch.tensor([(1.2 + 0.5) / 3, (0.2 + 0.5) / 3]))
    assert torch.equal(RBM(3, 1).base_rate(), torch.zeros(3))  # no data: the uniform base model
    gb = GaussianBernoulliRBM(2, 1)
    with torch.no_grad():
        gb.visible_bias.copy_(torch.tensor([0.3, -0.2]))
    assert torch.equal(gb.base_rate(), gb.visible_bias)
    assert torch.allclose(gb.base_rate(torch.tensor([[1.0, 2.0], [3.0, -4.0]])), torch.tensor([2.0, -1.0]))
    with pytest.raises(DataError) as e:
        RBM(2, 1).base_rate(torch.tensor([[0.5, 1.5]]))
    assert "[0, 1]" in str(e.value) and "1.5" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError):
        RBM(2, 1).base_rate(torch.ones(3, 4))
    with pytest.raises(SpecError):
        RBM(2, 1).base_rate(grey, smoothing=0.0)
    with pytest.raises(SpecError):
        ais_log_partition(RBM(2, 1), base=torch.zeros(3), num_runs=2, num_temperatures=10)


def _tiny_gb():
    gb = GaussianBernoulliRBM(5, 4, sigma=torch.linspace(0.6, 1.4, 5), weight_scale=0.7)
    with torch.no_grad():
        gb.visible_bias.normal_()
        gb.hidden_bias.normal_()
    return gb


@pytest.mark.parametrize("make, tolerance", [(lambda: _random_rbm(10, 6), 0.1), (_tiny_gb, 0.15)],
                         ids=["binary", "gaussian"])
def test_two_groups_against_exact_log_z(make, tolerance):
    """groups=2 on tiny models: the combined estimate within ``tolerance`` nats of the exact log Z
    (0.1 binary, 0.15 Gaussian as above), each group's own within 0.2, the 3-sigma interval covering
    it, and the estimate judged stable."""
    torch.manual_seed(0)
    model = make()
    exact = float(log_partition(model))
    data = torch.bernoulli(torch.full((50, 10), 0.4)) if model.visible_type == "bernoulli" else torch.randn(50, 5)
    result = ais_log_partition(model, data, num_runs=101, num_temperatures=2000, groups=2)
    assert abs(result.log_z - exact) < tolerance, (result.log_z, exact)
    assert len(result.group_log_z) == 2 and all(abs(g - exact) < 0.2 for g in result.group_log_z), result.group_log_z
    assert result.log_z_lower <= exact <= result.log_z_upper
    assert result.stable is True
    # the combined numbers come from all 101 runs; each group's from its own (51 then 50 runs)
    log_w = result.log_weights
    assert log_w.shape == (101,) and log_w.dtype == torch.float64
    assert result.log_z == pytest.approx(result.log_z_base + float(torch.logsumexp(log_w, 0)) - math.log(101), abs=1e-12)
    for g, part in zip(result.group_log_z, (log_w[:51], log_w[51:])):
        assert g == pytest.approx(result.log_z_base + float(torch.logsumexp(part, 0)) - math.log(len(part)), abs=1e-12)
    w = (log_w - torch.logsumexp(log_w, 0) + math.log(101)).exp()
    assert result.log_z_std == pytest.approx(float(w.std() / math.sqrt(101)), rel=1e-9)


def test_groups_are_independent_runs_one_after_the_other():
    # same seed: groups=2 gives exactly the runs of two groups=1 calls in a row (the RNG order is kept)
    rbm = _random_rbm(8, 4)
    base = rbm.base_rate(torch.bernoulli(torch.full((20, 8), 0.5)))
    torch.manual_seed(3)
    both = ais_log_partition(rbm, base=base, num_runs=7, num_temperatures=50, groups=2)
    torch.manual_seed(3)
    first = ais_log_partition(rbm, base=base, num_runs=4, num_temperatures=50)
    second = ais_log_partition(rbm, base=base, num_runs=3, num_temperatures=50)
    assert torch.equal(both.log_weights, torch.cat([first.log_weights, second.log_weights]))
    assert both.group_log_z == [first.log_z, second.log_z]
    assert first.group_log_z == [first.log_z]


def test_fixed_seed_estimate_is_pinned():
    """The refactoring onto inference.energy kept the numbers: these values were computed by the
    RBM-specific AIS before it (same seed, same RNG call order)."""
    torch.manual_seed(123)
    rbm = RBM(20, 8, weight_scale=1.0)
    with torch.no_grad():
        rbm.visible_bias.normal_()
        rbm.hidden_bias.normal_()
    data = torch.bernoulli(torch.full((50, 20), 0.3))
    torch.manual_seed(7)
    result = ais_log_partition(rbm, data, num_runs=50, num_temperatures=500)
    # (a changed RNG order or path moves these by ~0.1; the tolerance only absorbs BLAS rounding)
    assert result.log_z == pytest.approx(33.775562133188934, abs=1e-4)
    assert result.log_z_std == pytest.approx(0.08993228565693852, rel=1e-3)


def test_short_schedule_on_strongly_coupled_model_is_not_stable():
    # two temperatures (0 and 1: plain importance sampling from the base) for a strongly coupled model:
    # the weights are heavy-tailed, the relative spread is far above 1/3
    torch.manual_seed(0)
    rbm = _random_rbm(20, 10, scale=3.0)
    result = ais_log_partition(rbm, num_runs=100, schedule=[0.0, 1.0], groups=2)
    assert result.log_z_std > 1 / 3 and result.log_z_lower == float("-inf")
    assert result.stable is False


def test_stability_rule():
    assert estimate_is_stable(0.1, [10.0, 10.4]) and estimate_is_stable(0.1, [10.0]) and estimate_is_stable(0.1, [1.0, 1.2, 1.49])
    assert not estimate_is_stable(0.1, [10.0, 10.6])  # groups disagree by 0.6 nats
    assert not estimate_is_stable(0.1, [1.0, 1.2, 1.5])  # all pairs must agree within 0.5
    assert not estimate_is_stable(0.34, [10.0, 10.1])  # spread: the -3 sigma bound is -inf
    assert not estimate_is_stable(float("nan"), [10.0])  # a single run has no spread estimate
    assert not estimate_is_stable(0.1, [10.0, float("inf")]) and not estimate_is_stable(0.1, [10.0, float("nan")])


@pytest.mark.parametrize("groups", [0, 3, 1.0, True])
def test_bad_groups_rejected(groups):
    with pytest.raises(SpecError) as e:
        ais_log_partition(RBM(4, 3), num_runs=2, num_temperatures=10, groups=groups)
    assert "groups" in str(e.value) and "\n" not in str(e.value)


def test_gaussian_bernoulli_trained_on_grey_digits_ais_and_training():
    """GB-RBM with learned variances, 64 grey-level pixels (sklearn digits, scaled to [0, 1]) x 12 hidden.

    PCD raises the exact log-likelihood (hidden layer enumerated), and AIS agrees with the exact
    log Z within 0.3 nats (100 runs x 2000 temperatures).
    """
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data[:1000] / 16.0, dtype=torch.float32)
    torch.manual_seed(0)
    gb = GaussianBernoulliRBM(64, 12, sigma=0.3, learn_sigma=True)
    with torch.no_grad():
        gb.visible_bias.copy_(x.mean(0))
    before = mean_log_likelihood(gb, x, float(log_partition(gb)))
    fit(ContrastiveDivergence(gb, k=1, persistent=True), (x,), module=gb, epochs=5, batch_size=20,
        optimizer="sgd", lr=0.005, momentum=0.5, seed=0, progress=False)
    exact = float(log_partition(gb))
    after = mean_log_likelihood(gb, x, exact)
    assert after > before + 5, (before, after)
    result = ais_log_partition(gb, x, num_runs=100, num_temperatures=2000)
    assert abs(result.log_z - exact) < 0.3, (result.log_z, exact)


def test_every_schedule_length_starts_at_0_ends_at_1_and_increases():
    for n in list(range(3, 60)) + [14500, 14501]:
        betas = default_schedule(n)
        assert len(betas) == n and betas[0] == 0 and betas[-1] == 1, n
        assert bool((betas[1:] > betas[:-1]).all()), n
