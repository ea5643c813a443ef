"""MCMC driver bookkeeping with kernels whose output is known."""

import math
import warnings

import pytest
import torch
from pyro.infer import MCMC
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.ops.stats import split_gelman_rubin

from inference.block_gibbs import BlockGibbs
from inference.mcmc_driver import (
    ChainsNotMixedWarning,
    DrawRecorder,
    chain_diagnostics,
    run_mcmc,
)
from ppl_models.errors import SpecError
from ppl_models.rbm import RBM


class CountingKernel(MCMCKernel):
    """Chain c at step t (warm-up included, from 1) holds x = (100 c + t, c): fully predictable."""

    def __init__(self, num_chains):
        self.num_chains = num_chains
        self.transforms = {}
        self.t = 0

    @property
    def initial_params(self):
        return {"x": torch.stack([100.0 * torch.arange(self.num_chains), torch.arange(self.num_chains).float()], -1)}

    @initial_params.setter
    def initial_params(self, params):
        raise AssertionError("not used")

    def sample(self, params):
        self.t += 1
        x = params["x"].clone()
        x[:, 0] = 100.0 * torch.arange(self.num_chains) + self.t
        return {"x": x}


class AR1Kernel(MCMCKernel):
    """x_t = mu_c + rho (x_{t-1} - mu_c) + sqrt(1 - rho^2) eps: stationary N(mu_c, 1), ESS per chain ~ n (1-rho)/(1+rho)."""

    def __init__(self, num_chains, rho, chain_means):
        self.num_chains, self.rho = num_chains, rho
        self.mu = torch.as_tensor(chain_means, dtype=torch.float64).expand(num_chains)
        self.transforms = {}

    @property
    def initial_params(self):
        return {"x": self.mu + torch.randn(self.num_chains, dtype=torch.float64)}

    @initial_params.setter
    def initial_params(self, params):
        raise AssertionError("not used")

    def sample(self, params):
        x = params["x"]
        return {"x": self.mu + self.rho * (x - self.mu) + math.sqrt(1 - self.rho**2) * torch.randn_like(x)}


def test_each_vectorised_chain_is_its_own_chain_and_warmup_is_dropped():
    result = run_mcmc(CountingKernel(3), num_samples=4, warmup_steps=2, disable_progbar=True, warn=False)
    x = result.samples["x"]
    assert x.shape == (3, 4, 2)
    for c in range(3):
        assert torch.equal(x[c, :, 1], torch.full((4,), float(c)))
        assert torch.equal(x[c, :, 0], 100.0 * c + torch.arange(3, 7).float())  # steps 3..6 after 2 warm-up
    posterior = result.inference_data.posterior
    assert dict(posterior["x"].sizes)["chain"] == 3 and dict(posterior["x"].sizes)["draw"] == 4
    assert float(posterior["x"].values[2, 0, 0]) == 203.0


def test_recorded_draws_are_pyros_saved_draws_and_the_kernel_is_left_as_found():
    kernel = BlockGibbs(RBM(4, 3, weight_scale=1.0), num_chains=5, k=2)
    start = {name: x.clone() for name, x in kernel.initial_params.items()}
    torch.manual_seed(1)
    recorded = run_mcmc(kernel, num_samples=6, warmup_steps=3, save_params=["v"], disable_progbar=True, warn=False)
    assert set(recorded.samples) == {"v"} and not hasattr(kernel, "save_params")
    torch.manual_seed(1)
    kernel.initial_params = start
    mcmc = MCMC(kernel, num_samples=6, warmup_steps=3, disable_progbar=True)  # Pyro's own saving, every site
    mcmc.run()
    saved = mcmc.get_samples()["v"]  # (draws, chains, units)
    assert torch.equal(recorded.samples["v"], saved.movedim(1, 0))


def test_recorder_without_chain_dimension_and_with_unknown_site():
    recorder = DrawRecorder(3, vectorised=False)
    for stage, i in (("Warmup", 0), ("Sample", 0), ("Sample", 1), ("Sample", 2)):
        recorder(None, {"x": torch.tensor([float(i), 1.0 if stage == "Sample" else -1.0])}, stage, i)
    assert recorder.draws["x"].shape == (1, 3, 2)
    assert torch.equal(recorder.draws["x"][0], torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]))
    with pytest.raises(SpecError, match="save_params must name sites"):
        DrawRecorder(3, ["y"])(None, {"x": torch.zeros(2, 2)}, "Sample", 0)


def test_mixed_chains_pass_and_ess_matches_ar1_theory():
    rho, chains, draws = 0.5, 8, 2000
    result = run_mcmc(AR1Kernel(chains, rho, 0.0), num_samples=draws, warmup_steps=50, disable_progbar=True)
    assert result.mixed and "mixed" in result.message
    assert result.r_hat["x"] < 1.01
    expected_ess = chains * draws * (1 - rho) / (1 + rho)
    assert result.ess["x"] == pytest.approx(expected_ess, rel=0.15)
    # the driver's R-hat is pyro's split R-hat on the (chains, draws) array it returns
    assert result.r_hat["x"] == pytest.approx(float(split_gelman_rubin(result.samples["x"], 0, 1)))


def test_unmixed_chains_are_reported_clearly():
    kernel = AR1Kernel(4, 0.5, torch.tensor([0.0, 0.0, 3.0, 3.0]))  # two groups of chains disagree
    with pytest.warns(ChainsNotMixedWarning, match="chains have not mixed: x has R-hat"):
        result = run_mcmc(kernel, num_samples=300, disable_progbar=True)
    assert not result.mixed and result.r_hat["x"] > 1.5
    assert "\n" not in result.message


@pytest.mark.parametrize("draws", [1, 2, 3])
def test_too_few_draws_are_not_diagnosed_rather_than_crashing(draws):
    # split R-hat halves each chain: below 4 draws Pyro asserts; the driver says it could not diagnose
    kernel = AR1Kernel(4, 0.5, torch.tensor([0.0, 0.0, 3.0, 3.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChainsNotMixedWarning)
        result = run_mcmc(kernel, num_samples=draws, disable_progbar=True)
    assert result.mixed is None and result.message.startswith("not diagnosed: ")
    assert math.isnan(result.r_hat["x"]) and math.isnan(result.ess["x"])


def test_block_gibbs_summaries_free_energy_and_unit_means():
    rbm = RBM(4, 3, weight_scale=1.0)
    mask = torch.tensor([True, False, False, False])
    kernel = BlockGibbs(rbm, num_chains=16, k=2, clamp_mask=mask, clamp_values=torch.ones(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChainsNotMixedWarning)
        result = run_mcmc(kernel, num_samples=50, warmup_steps=10, disable_progbar=True)
    v = result.samples["v"]
    assert v.shape == (16, 50, 4) and result.samples["h"].shape == (16, 50, 3)
    assert torch.allclose(result.summaries["free_energy"], rbm.free_energy(v).detach())
    assert result.summaries["visible_units"].shape == (16, 50, 3)  # the clamped unit is left out
    assert set(result.r_hat) == {"free_energy", "visible_units"}
    assert all(math.isfinite(r) for r in result.r_hat.values())
    assert result.kernel_diagnostics["num_chains"] == 16


def test_constant_elements_are_ignored_by_diagnostics():
    x = torch.randn(4, 100, 3)
    x[..., 1] = 1.0
    r_hat, ess = chain_diagnostics(x)
    assert math.isfinite(r_hat) and math.isfinite(ess)
    r_hat, ess = chain_diagnostics(torch.ones(4, 100))
    assert math.isnan(r_hat) and math.isnan(ess)


def test_bad_arguments_rejected():
    with pytest.raises(SpecError):
        run_mcmc(CountingKernel(2), num_samples=0)
    with pytest.raises(SpecError):
        run_mcmc(CountingKernel(2), num_samples=3, warmup_steps=-1)
