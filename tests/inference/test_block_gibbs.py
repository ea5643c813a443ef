"""BlockGibbs against exact distributions of tiny RBMs (every state enumerated)."""

import pytest
import torch
from pyro.infer import MCMC
from scipy.stats import chisquare

from inference.block_gibbs import BlockGibbs
from inference.exact_enumeration import binary_states
from ppl_models.errors import DataError, SpecError
from ppl_models.rbm import RBM, GaussianBernoulliRBM

# Each test draws one state per chain after a long warm-up, so its draws are
# independent and Pearson's chi-square applies; a p-value below this fails.
P_MIN = 1e-3


def multinomial_goodness_of_fit(probs: torch.Tensor, counts: torch.Tensor) -> float:
    """Pearson chi-square p-value; states expected fewer than 5 times are pooled into one bin."""
    expected = probs.double() * counts.sum()
    rare = expected < 5
    f_exp = torch.cat([expected[~rare], expected[rare].sum().reshape(1)])
    f_obs = torch.cat([counts.double()[~rare], counts.double()[rare].sum().reshape(1)])
    if not bool(rare.any()):
        f_exp, f_obs = f_exp[:-1], f_obs[:-1]
    return float(chisquare(f_obs.numpy(), f_exp.numpy()).pvalue)


def _rbm_4x3():
    rbm = RBM(4, 3, weight_scale=1.2)
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.tensor([0.5, -1.0, 0.2, 1.0]))
        rbm.hidden_bias.copy_(torch.tensor([-0.5, 0.8, 0.0]))
    return rbm


def _state_index(bits: torch.Tensor) -> torch.Tensor:
    weights = 2 ** torch.arange(bits.shape[-1] - 1, -1, -1)
    return (bits.long() * weights).sum(-1)


def _exact_joint(rbm):
    vs, hs = binary_states(4), binary_states(3)
    with torch.no_grad():
        logits = -rbm.energy(vs[:, None, :], hs[None, :, :]).double()
    return torch.softmax(logits.flatten(), 0)  # index = 8 * v_index + h_index


def _advance(kernel, num_samples):
    """``num_samples`` calls of ``kernel.sample`` from the kernel's own state (``k`` sweeps each)."""
    state = kernel.initial_params
    for _ in range(num_samples):
        state = kernel.sample(state)
    return state


def _final_states(kernel, warmup=60):
    mcmc = MCMC(kernel, num_samples=1, warmup_steps=warmup, disable_progbar=True)
    mcmc.run()
    samples = mcmc.get_samples()
    return samples["v"][0], samples["h"][0]


def test_samples_fit_exact_joint_of_4x3_rbm():
    rbm = _rbm_4x3()
    v, h = _final_states(BlockGibbs(rbm, num_chains=20000, k=2))
    counts = torch.bincount(8 * _state_index(v) + _state_index(h), minlength=128).double()
    assert multinomial_goodness_of_fit(_exact_joint(rbm), counts) > P_MIN


def test_goodness_of_fit_has_power_against_a_wrong_model():
    rbm, other = _rbm_4x3(), _rbm_4x3()
    with torch.no_grad():
        other.weight.mul_(1.15)  # a 15% change of the weights must be detected
    v, h = _final_states(BlockGibbs(other, num_chains=20000, k=2))
    counts = torch.bincount(8 * _state_index(v) + _state_index(h), minlength=128).double()
    assert multinomial_goodness_of_fit(_exact_joint(rbm), counts) < P_MIN


def test_clamped_sampling_fits_exact_conditional():
    rbm = _rbm_4x3()
    mask = torch.tensor([True, False, True, False])
    observed = torch.tensor([1.0, 0.0, 0.0, 0.0])
    kernel = BlockGibbs(rbm, num_chains=20000, k=2, clamp_mask=mask, clamp_values=observed)
    v, h = _final_states(kernel)
    assert torch.all(v[:, 0] == 1) and torch.all(v[:, 2] == 0)
    joint = _exact_joint(rbm).reshape(16, 8)
    vs = binary_states(4)
    keep = (vs[:, 0] == 1) & (vs[:, 2] == 0)
    conditional = joint[keep]  # (4 free-v states, 8 h states), v1 v3 in counting order
    conditional = (conditional / conditional.sum()).flatten()
    index = 8 * (2 * v[:, 1] + v[:, 3]).long() + _state_index(h)
    counts = torch.bincount(index, minlength=32).double()
    assert multinomial_goodness_of_fit(conditional, counts) > P_MIN


def test_per_chain_clamp_mask():
    rbm = _rbm_4x3()
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 0] = mask[2, 3] = True
    kernel = BlockGibbs(rbm, num_chains=3, k=1, clamp_mask=mask, clamp_values=torch.ones(4))
    state = _advance(kernel, 20)
    assert state["v"][0, 0] == 1 and state["v"][2, 3] == 1


def test_gaussian_bernoulli_sample_moments_match_exact_mixture():
    gb = GaussianBernoulliRBM(2, 3, sigma=torch.tensor([0.6, 1.4]), weight_scale=1.0)
    with torch.no_grad():
        gb.visible_bias.copy_(torch.tensor([0.5, -1.0]))
        gb.hidden_bias.copy_(torch.tensor([0.3, -0.4, 1.0]))
    hs = binary_states(3)
    with torch.no_grad():
        p_h = torch.softmax(-gb.hidden_free_energy(hs).double(), 0)  # exact marginal of h
        mu = gb.visible_mean(hs).double()  # v | h ~ N(mu_h, s^2)
    s2 = gb.sigma.double() ** 2
    mean = p_h @ mu
    second = torch.diag(s2) + torch.einsum("k,ki,kj->ij", p_h, mu, mu)
    n = 20000
    v, h = _final_states(BlockGibbs(gb, num_chains=n, k=2))
    v = v.double()
    # z-scores of the sample mean and sample second moments, with exact standard errors
    cov = second - torch.outer(mean, mean)
    z_mean = (v.mean(0) - mean) / (cov.diagonal() / n).sqrt()
    assert z_mean.abs().max() < 4.5, z_mean
    prods = v[:, :, None] * v[:, None, :]
    z_second = (prods.mean(0) - second) / (prods.var(0) / n).sqrt()
    assert z_second.abs().max() < 4.5, z_second
    # and the hidden marginal against p(h)
    assert multinomial_goodness_of_fit(p_h, torch.bincount(_state_index(h), minlength=8).double()) > P_MIN


def test_runs_under_pyro_mcmc_with_vectorised_chains_and_logging():
    kernel = BlockGibbs(_rbm_4x3(), num_chains=7, k=3, log_every=1)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=2, disable_progbar=True)
    mcmc.run()
    samples = mcmc.get_samples()
    assert samples["v"].shape == (5, 7, 4) and samples["h"].shape == (5, 7, 3)
    assert samples["v"].dtype == torch.float32
    log = kernel.logging()
    assert set(log) == {"free energy"} and float(log["free energy"]) == pytest.approx(kernel.mean_free_energy(), rel=1e-3)
    assert isinstance(kernel.diagnostics(), dict)
    # last_hidden_probs is p(h | v) of the state just returned, last_hidden_logits its hidden inputs
    state = kernel.sample(kernel.initial_params)
    assert torch.allclose(kernel.last_hidden_probs, kernel.model.hidden_probs(state["v"]).detach())
    with torch.no_grad():
        assert torch.equal(kernel.last_hidden_logits, kernel.model.hidden_logits(state["v"]))
    assert torch.equal(kernel.last_hidden_probs, torch.sigmoid(kernel.last_hidden_logits))


@pytest.mark.parametrize("make", [_rbm_4x3, lambda: GaussianBernoulliRBM(3, 2, sigma=0.7, weight_scale=1.0)])
def test_last_hidden_logits_belong_to_the_returned_state(make):
    model = make()
    kernel = BlockGibbs(model, num_chains=5, k=3, clamp_mask=torch.tensor([True] + [False] * (model.num_visible - 1)),
                        clamp_values=torch.ones(model.num_visible))
    assert kernel.last_hidden_logits is None and kernel.last_hidden_probs is None
    for _ in range(2):
        state = kernel.sample(kernel.initial_params)
        with torch.no_grad():
            assert torch.equal(kernel.last_hidden_logits, model.hidden_logits(state["v"]))
            assert torch.equal(kernel.last_hidden_probs, model.hidden_probs(state["v"]))
        assert kernel.last_hidden_logits.shape == (5, model.num_hidden)


def test_given_initial_params_are_used():
    rbm = _rbm_4x3()
    kernel = BlockGibbs(rbm, num_chains=2)
    start = {"v": torch.ones(2, 4), "h": torch.zeros(2, 3)}
    kernel.initial_params = start
    assert kernel.initial_params["v"] is start["v"]


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_positive_integer(k):
    with pytest.raises(SpecError) as e:
        BlockGibbs(_rbm_4x3(), k=k)
    assert "\n" not in str(e.value) and "k" in str(e.value)


def test_initial_params_of_wrong_shape_rejected():
    kernel = BlockGibbs(_rbm_4x3(), num_chains=5)
    with pytest.raises(SpecError) as e:
        kernel.initial_params = {"v": torch.zeros(4, 4), "h": torch.zeros(5, 3)}
    assert "(5, 4)" in str(e.value) and "(4, 4)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SpecError):
        kernel.initial_params = {"v": torch.zeros(5, 4)}
    with pytest.raises(DataError):
        kernel.initial_params = {"v": torch.full((5, 4), 0.5), "h": torch.zeros(5, 3)}


def test_clamp_mask_of_wrong_shape_rejected():
    with pytest.raises(SpecError) as e:
        BlockGibbs(_rbm_4x3(), num_chains=5, clamp_mask=torch.ones(3, dtype=torch.bool), clamp_values=torch.ones(4))
    assert "clamp_mask" in str(e.value) and "(3,)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError):
        BlockGibbs(_rbm_4x3(), clamp_mask=torch.ones(4, dtype=torch.bool), clamp_values=torch.full((4,), 0.3))


def test_nan_weights_rejected_at_setup():
    rbm = _rbm_4x3()
    with torch.no_grad():
        rbm.hidden_bias[0] = float("nan")
    with pytest.raises(SpecError):
        MCMC(BlockGibbs(rbm), num_samples=2, disable_progbar=True).run()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_follows_model_device_and_dtype(device, dtype):
    rbm = _rbm_4x3().to(device=device, dtype=dtype)
    mask = torch.tensor([True, False, False, False], device=device)
    kernel = BlockGibbs(rbm, num_chains=3, k=2, clamp_mask=mask, clamp_values=torch.ones(4, device=device))
    state = _advance(kernel, 3)
    for x in state.values():
        assert x.device.type == device and x.dtype == dtype
    assert bool((state["v"][:, 0] == 1).all())
