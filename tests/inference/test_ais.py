"""AIS log Z against exact log Z (hidden or visible layer enumerated)."""

import math

import pytest
import torch

from inference.ais import ais_log_partition, base_rate_visible, default_schedule, mean_log_likelihood
from inference.contrastive_divergence import fit
from inference.exact_enumeration import log_partition
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
    fit(rbm, x, {"epochs": 2, "batch_size": 20, "lr": 0.05, "seed": 0}, progress=False)
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
    fit(gb, x, {"epochs": 5, "batch_size": 20, "lr": 0.005, "seed": 0}, progress=False)
    exact = float(log_partition(gb))
    after = mean_log_likelihood(gb, x, exact)
    assert after > before + 5, (before, after)
    result = ais_log_partition(gb, x, num_runs=100, num_temperatures=2000)
    assert abs(result.log_z - exact) < 0.3, (result.log_z, exact)
