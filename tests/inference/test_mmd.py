"""The kernel MMD estimator against its closed form for two Gaussians, its unbiasedness, and the permutation test's
p-values: uniform under the null (Kolmogorov-Smirnov), small under an alternative."""

import math

import pytest
import torch
from scipy.stats import kstest

from inference.errors import SpecError
from inference.mmd import (
    check_bandwidths,
    kernel_matrix,
    mmd2_unbiased,
    mmd_permutation_test,
)

BANDWIDTHS = (0.5, 1.0, 2.0)


def gaussian_kernel_mean(mean: torch.Tensor, cov: torch.Tensor, sigma: float) -> float:
    r""":math:`E \exp(-\lVert u\rVert^2 / 2\sigma^2)` for :math:`u \sim \mathcal{N}(m, S)`:
    :math:`\det(I + S/\sigma^2)^{-1/2} \exp(-\tfrac12 m^\top (S + \sigma^2 I)^{-1} m)` (a Gaussian integral)."""
    eye = torch.eye(len(mean), dtype=torch.float64)
    det = torch.det(eye + cov / sigma**2)
    quad = mean @ torch.linalg.solve(cov + sigma**2 * eye, mean)
    return float(det.rsqrt() * torch.exp(-0.5 * quad))


def closed_form_mmd2(mu1, cov1, mu2, cov2, bandwidths) -> float:
    """MMD² between N(mu1, cov1) and N(mu2, cov2): x - x' ~ N(0, 2 cov1), y - y' ~ N(0, 2 cov2),
    x - y ~ N(mu1 - mu2, cov1 + cov2)."""
    zero = torch.zeros_like(mu1)
    return sum(gaussian_kernel_mean(zero, 2 * cov1, s) + gaussian_kernel_mean(zero, 2 * cov2, s)
               - 2 * gaussian_kernel_mean(mu1 - mu2, cov1 + cov2, s) for s in bandwidths)


MU1, MU2 = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([0.7, -0.3], dtype=torch.float64)
COV1 = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
COV2 = torch.tensor([[0.6, -0.2], [-0.2, 1.2]], dtype=torch.float64)


def draw(mu, cov, n, generator):
    return mu + torch.randn(n, 2, dtype=torch.float64, generator=generator) @ torch.linalg.cholesky(cov).T


def biased_mmd2(x, y, bandwidths):
    """The V-statistic (diagonal kept): biased upward by O(1/n). A deliberately wrong estimator."""
    return kernel_matrix(x, x, bandwidths).mean() + kernel_matrix(y, y, bandwidths).mean() \
        - 2 * kernel_matrix(x, y, bandwidths).mean()


@pytest.mark.parametrize("same", [False, True])
def test_u_statistic_is_unbiased_for_the_closed_form(same):
    """The mean over many small-sample estimates (m = 6, n = 4, where the V-statistic's bias is large) is the closed
    form within 4 standard errors; the V-statistic fails the same test. With P = Q the truth is 0."""
    mu2, cov2 = (MU1, COV1) if same else (MU2, COV2)
    truth = closed_form_mmd2(MU1, COV1, mu2, cov2, BANDWIDTHS)
    assert (truth == pytest.approx(0.0, abs=1e-12)) == same
    g = torch.Generator().manual_seed(0)
    estimates, wrong = [], []
    for _ in range(2000):
        x, y = draw(MU1, COV1, 6, g), draw(mu2, cov2, 4, g)
        estimates.append(float(mmd2_unbiased(x, y, BANDWIDTHS)))
        wrong.append(float(biased_mmd2(x, y, BANDWIDTHS)))
    est, bad = torch.tensor(estimates), torch.tensor(wrong)
    se = float(est.std()) / math.sqrt(len(est))
    assert abs(float(est.mean()) - truth) < 4 * se, (float(est.mean()), truth, se)
    assert abs(float(bad.mean()) - truth) > 10 * float(bad.std()) / math.sqrt(len(bad))


def test_large_sample_estimate_matches_the_closed_form():
    g = torch.Generator().manual_seed(1)
    x, y = draw(MU1, COV1, 800, g), draw(MU2, COV2, 800, g)
    truth = closed_form_mmd2(MU1, COV1, MU2, COV2, BANDWIDTHS)
    assert float(mmd2_unbiased(x, y, BANDWIDTHS)) == pytest.approx(truth, rel=0.25)  # sd of one estimate at n = 800: about 0.1 of the truth


def test_kernel_matrix_against_a_direct_sum():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    direct = torch.tensor([[sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in BANDWIDTHS)
                            for b in y] for a in x], dtype=torch.float64)
    assert torch.allclose(kernel_matrix(x, y, BANDWIDTHS), direct, atol=1e-12)


def test_permutation_p_values_are_uniform_under_the_null():
    g = torch.Generator().manual_seed(3)
    p_values = []
    for _ in range(300):
        x, y = draw(MU1, COV1, 15, g), draw(MU1, COV1, 15, g)
        p_values.append(mmd_permutation_test(x, y, BANDWIDTHS, num_permutations=199, generator=g).p_value)
    # p takes the values k / 200; uniform on (0, 1] up to that grain
    assert kstest(p_values, "uniform").pvalue > 1e-3
    rejected = sum(p <= 0.05 for p in p_values) / len(p_values)
    assert 0.01 < rejected < 0.10  # the test's level: about 5% of null samples rejected at 0.05


def test_permutation_p_values_are_small_under_an_alternative():
    g = torch.Generator().manual_seed(4)
    p_values = [mmd_permutation_test(draw(MU1, COV1, 40, g), draw(MU2, COV2, 40, g), BANDWIDTHS,
                                     num_permutations=199, generator=g).p_value for _ in range(20)]
    assert sorted(p_values)[10] < 0.05  # the median test rejects
    result = mmd_permutation_test(draw(MU1, COV1, 300, g), draw(MU2, COV2, 300, g), BANDWIDTHS,
                                  num_permutations=199, generator=g)
    assert result.p_value == pytest.approx(1 / 200) and result.mmd2 > 0


@pytest.mark.parametrize("bad, message", [
    ([], "at least one kernel bandwidth"),
    ([1.0, 0.0], "finite numbers > 0"),
    ([-2.0], "finite numbers > 0"),
    ([float("nan")], "finite numbers > 0"),
    (["a"], "finite numbers > 0"),
    (3.0, "must be a list"),
])
def test_bad_bandwidths_are_one_line_errors(bad, message):
    with pytest.raises(SpecError, match=message):
        check_bandwidths(bad)
    with pytest.raises(SpecError, match=message):
        mmd2_unbiased(torch.zeros(3, 2), torch.ones(3, 2), bad)


def test_bad_samples_are_one_line_errors():
    with pytest.raises(SpecError, match="same D"):
        mmd2_unbiased(torch.zeros(3, 2), torch.zeros(3, 4), BANDWIDTHS)
    with pytest.raises(SpecError, match="at least 2 points"):
        mmd_permutation_test(torch.zeros(1, 2), torch.zeros(3, 2), BANDWIDTHS)
    with pytest.raises(SpecError, match="num_permutations"):
        mmd_permutation_test(torch.zeros(3, 2), torch.zeros(3, 2), BANDWIDTHS, num_permutations=0)
