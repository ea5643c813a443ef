"""Single-site and coloured-block Gibbs against the exact distribution of small fully visible BMs.

Every sampler test is a chi-square goodness-of-fit test of many independent chains' last states
against :math:`p(v) \\propto e^{-E(v)}` enumerated over all states, and each is shown able to fail: a
sampler that draws all units at once from their conditionals given the old state (a classic mistake,
not a Gibbs sampler of a coupled model) is rejected by the same test.
"""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from inference.errors import SpecError
from inference.mcmc_driver import run_mcmc
from inference.single_site_gibbs import SingleSiteGibbs, check_colours, gibbs_sweep
from ppl_models.fvbm import FullyVisibleBM

P_MIN = 1e-3  # a chi-square p-value below this fails


def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def gof_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value of binary rows against ``probs`` over states() (rare states pooled)."""
    index = (samples.long() * 2 ** torch.arange(samples.shape[-1] - 1, -1, -1)).sum(-1)
    counts = torch.bincount(index, minlength=probs.numel()).double()
    expected = probs.double() * samples.shape[0]
    rare = expected < 5
    f_obs = torch.cat([counts[~rare], counts[rare].sum().reshape(1)]) if rare.any() else counts
    f_exp = torch.cat([expected[~rare], expected[rare].sum().reshape(1)]) if rare.any() else expected
    return float(chisquare(f_obs.numpy(), f_exp.numpy() * f_obs.sum().item() / f_exp.sum().item()).pvalue)


def strong_fvbm(d: int, seed: int = 0, mask=None) -> FullyVisibleBM:
    torch.manual_seed(seed)
    bm = FullyVisibleBM(d, weight_scale=1.2)
    with torch.no_grad():
        if mask is not None:
            bm.weight.mul_(mask)
        bm.visible_bias.copy_(torch.randn(d) * 0.7)
    return bm


def exact_probs(bm: FullyVisibleBM) -> torch.Tensor:
    """p(v) over states(), from the energy written out pair by pair (not the model's matrix form)."""
    W, b = bm.weight.detach().double(), bm.visible_bias.detach().double()
    s = states(bm.num_visible).double()
    d = bm.num_visible
    neg_e = s @ b + sum(W[i, j] * s[:, i] * s[:, j] for i in range(d) for j in range(i + 1, d))
    return torch.softmax(neg_e, 0)


def last_states(kernel, sweeps: int) -> torch.Tensor:
    return run_mcmc(kernel, num_samples=1, warmup_steps=sweeps - 1, disable_progbar=True, diagnose=False).samples["v"][:, -1]


def test_single_site_gibbs_matches_the_exact_distribution():
    bm = strong_fvbm(4)
    v = last_states(SingleSiteGibbs(bm, num_chains=6000, k=1), 25)
    assert gof_pvalue(v, exact_probs(bm)) > P_MIN


def test_the_test_rejects_a_parallel_update():
    bm = strong_fvbm(4)
    kernel = SingleSiteGibbs(bm, num_chains=6000, k=1)
    kernel.colours = [torch.arange(4)]  # every unit drawn at once given the old state: not Gibbs (the check refuses it)
    assert gof_pvalue(last_states(kernel, 25), exact_probs(bm)) < 1e-6


def test_coloured_blocks_on_a_ring_match_the_exact_distribution():
    d = 6
    ring = torch.zeros(d, d)
    for i in range(d):
        ring[i, (i + 1) % d] = ring[(i + 1) % d, i] = 1.0
    bm = strong_fvbm(d, seed=1, mask=ring)
    colours = [[0, 2, 4], [1, 3, 5]]  # a ring of even length is bipartite: two independent sets
    v = last_states(SingleSiteGibbs(bm, num_chains=6000, k=1, colours=colours), 25)
    assert gof_pvalue(v, exact_probs(bm)) > P_MIN
    with pytest.raises(SpecError, match="colour class 0 holds coupled units 0 and 1"):
        SingleSiteGibbs(bm, colours=[[0, 1, 2], [3, 4, 5]])
    with pytest.raises(SpecError, match="colours must partition the 6 units"):
        check_colours([[0, 2], [1, 3, 5]], bm.weight.detach())


def test_clamped_chains_follow_the_exact_conditional():
    bm = strong_fvbm(5, seed=2)
    observed = torch.tensor([True, False, True, False, False])
    given = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    probs = exact_probs(bm)
    s = states(5)
    keep = (s[:, observed] == given[observed]).all(1)
    conditional = probs[keep] / probs[keep].sum()  # over the free units, in states(3) order
    v = last_states(SingleSiteGibbs(bm, num_chains=6000, clamp_mask=observed, clamp_values=given), 25)
    assert torch.equal(v[:, observed], given[observed].expand(6000, 2))
    assert gof_pvalue(v[:, ~observed], conditional) > P_MIN


def test_under_the_driver_with_diagnostics_and_a_sweep_that_leaves_its_input():
    bm = strong_fvbm(4)
    result = run_mcmc(SingleSiteGibbs(bm, num_chains=50, k=2), num_samples=40, warmup_steps=10, disable_progbar=True)
    assert result.samples["v"].shape == (50, 40, 4)
    assert set(result.r_hat) == {"free_energy", "visible_units"} and result.mixed
    v = torch.zeros(3, 4)
    gibbs_sweep(bm, v)
    assert not v.any()


def test_bad_arguments_are_one_line_errors():
    bm = FullyVisibleBM(4)
    with pytest.raises(SpecError, match="num_chains must be a positive integer"):
        SingleSiteGibbs(bm, num_chains=0)
    with pytest.raises(SpecError, match="k .* must be a positive integer"):
        SingleSiteGibbs(bm, k=0)
    kernel = SingleSiteGibbs(bm, num_chains=3)
    with pytest.raises(SpecError, match=r"initial_params\['v'\] must have shape \(3, 4\)"):
        kernel.initial_params = {"v": torch.zeros(2, 4)}
    with pytest.raises(SpecError, match="clamp_mask must have shape"):
        kernel.clamp(torch.ones(5, dtype=torch.bool), torch.zeros(4))
