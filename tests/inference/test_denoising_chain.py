"""The denoising-autoencoder chain on 3 binary pixels against its exact transition matrix
T(x' | x) = sum_x~ C(x~ | x) P(x' | x~): the chain's empirical stationary distribution against T's left
eigenvector by chi-square (and a wrong kernel failing the same test), the chain's estimate of log pi(x)
against the exact value, and the walkback objective against its exact expectation."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from inference.denoising_chain import DenoisingChain, stationary_log_prob
from inference.errors import SpecError
from inference.mcmc_driver import run_mcmc
from inference.walkback import WalkbackObjective
from ppl_models.dae import DAEArchitecture, DenoisingAutoencoder

D = 3
STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=torch.float64)  # (8, 3), row i = bits of i
POWERS = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
P_MIN = 1e-3


class TableDAE:
    """Bit-flip corruption with probability ``q`` and a denoiser given as a table of logits, one row per x~."""

    def __init__(self, q=0.2, seed=0, skip_corruption=False):
        self.q, self.skip = q, skip_corruption
        self.table = 2.0 * torch.randn(2 ** D, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def corrupt(self, x):
        if self.skip:
            return x
        return torch.where(torch.rand_like(x) < self.q, 1 - x, x)

    def denoise_logits(self, x_tilde):
        return self.table[(x_tilde @ POWERS.to(x_tilde)).long()].to(x_tilde)


def _bernoulli_rows(logits):
    """P(x' = state | logits) for every state: (rows, 8)."""
    p = torch.sigmoid(logits)
    return torch.stack([(p ** s * (1 - p) ** (1 - s)).prod(-1) for s in STATES], -1)


def exact_matrices(model):
    flips = (STATES.unsqueeze(1) != STATES.unsqueeze(0)).sum(-1).double()  # (x, x~)
    C = model.q ** flips * (1 - model.q) ** (D - flips)
    P = _bernoulli_rows(model.table)  # (x~, x')
    return C, P


def stationary(T):
    values, vectors = torch.linalg.eig(T.T)
    pi = vectors[:, torch.argmin((values - 1).abs())].real
    return pi / pi.sum()


def _index(x):
    return (x @ POWERS.to(x)).long()


def test_exact_transition_matrix_is_stochastic_and_pi_is_invariant():
    C, P = exact_matrices(TableDAE())
    T = C @ P
    pi = stationary(T)
    assert torch.allclose(T.sum(1), torch.ones(8, dtype=torch.float64)) and bool((pi > 0).all())
    assert torch.allclose(pi @ T, pi, atol=1e-12)


def _final_states(model, chains=20000, warmup=30):
    kernel = DenoisingChain(model, torch.zeros(chains, D, dtype=torch.float64), k=2)
    result = run_mcmc(kernel, num_samples=5, warmup_steps=warmup, disable_progbar=True, warn=False)
    return result, result.samples["x"][:, -1]  # the chains are independent: one draw each


def test_chain_matches_the_stationary_distribution_of_its_transition_matrix():
    model = TableDAE()
    C, P = exact_matrices(model)
    pi = stationary(C @ P)
    result, final = _final_states(model)
    counts = torch.bincount(_index(final), minlength=8).double()
    assert chisquare(counts.numpy(), (pi * counts.sum()).numpy()).pvalue > P_MIN
    # the driver's diagnostics and ArviZ data come with it
    assert set(result.r_hat) == {"on_pixels", "pixels"} and result.inference_data is not None
    assert result.samples["x_tilde"].shape == (20000, 5, D)


def test_a_wrong_kernel_fails_the_same_test():
    """Denoising without corrupting first is another chain, with another stationary distribution."""
    model = TableDAE()
    C, P = exact_matrices(model)
    pi = stationary(C @ P)
    _, final = _final_states(TableDAE(skip_corruption=True))
    counts = torch.bincount(_index(final), minlength=8).double()
    assert chisquare(counts.numpy(), (pi * counts.sum()).numpy()).pvalue < P_MIN


def test_clamped_pixels_stay_at_their_values():
    model = TableDAE()
    kernel = DenoisingChain(model, torch.zeros(100, D, dtype=torch.float64),
                            clamp_mask=torch.tensor([True, False, False]), clamp_values=torch.tensor([1.0, 0.0, 0.0]))
    x = run_mcmc(kernel, num_samples=10, warmup_steps=2, disable_progbar=True, warn=False).samples["x"]
    assert bool((x[..., 0] == 1).all()) and bool((x[..., 1:] == 0).any()) and bool((x[..., 1:] == 1).any())


def test_stationary_log_prob_estimate_against_exact():
    model = TableDAE()
    C, P = exact_matrices(model)
    pi = stationary(C @ P)
    kernel = DenoisingChain(model, torch.zeros(200, D, dtype=torch.float64))
    result = run_mcmc(kernel, num_samples=200, warmup_steps=30, disable_progbar=True, diagnose=False)
    x_tilde = result.samples["x_tilde"]
    log_pi, se = stationary_log_prob(model, STATES, x_tilde)
    assert bool(((log_pi - pi.log()).abs() < 4 * se + 0.01).all()), (log_pi - pi.log(), se)


def test_walkback_objective_against_its_exact_expectation():
    """K = 1: E[-log P(x | x~)] under C(x~ | x); K = 2 adds x~_2 ~ C P C from x. Exact by the matrices of a
    tiny DAE with bit-flip noise, against the mean of many single-draw losses."""
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(DAEArchitecture(x_dim=D, hidden=[4], corruption="bit_flip", noise=0.3)).double()
    q = dae.flip_probability
    flips = (STATES.unsqueeze(1) != STATES.unsqueeze(0)).sum(-1).double()
    C = q ** flips * (1 - q) ** (D - flips)
    with torch.no_grad():
        P = _bernoulli_rows(dae.denoise_logits(STATES))
        log_P = P.log()  # log P(x = state j | x~ = state i)
    x_index = 5
    term1 = -(C[x_index] * log_P[:, x_index]).sum()
    term2 = -((C @ P @ C)[x_index] * log_P[:, x_index]).sum()
    x = STATES[x_index].expand(100000, D).contiguous()
    for k, exact in ((1, term1), (2, (term1 + term2) / 2)):
        mean_loss = WalkbackObjective(dae, k).loss(x) / x.shape[0]  # the loss is summed over the batch
        assert abs(mean_loss - float(exact)) < 0.03, (k, mean_loss, float(exact))
    # the gradient flows into the denoiser
    dae.zero_grad()
    WalkbackObjective(dae, 2).loss_and_grads(x[:10])
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in dae.parameters())


def test_salt_and_pepper_corruption_matches_its_log_prob():
    dae = DenoisingAutoencoder(DAEArchitecture(x_dim=D, hidden=[2], corruption="salt_and_pepper", noise=0.5))
    x = torch.tensor([[1.0, 0.0, 1.0]]).expand(20000, D)
    counts = torch.bincount(_index(dae.corrupt(x).double()), minlength=8).double()
    probs = dae.corruption_log_prob(STATES.float(), x[:1]).double().exp()
    assert abs(float(probs.sum()) - 1) < 1e-6
    assert chisquare(counts.numpy(), (probs / probs.sum() * counts.sum()).numpy()).pvalue > P_MIN


def test_bad_arguments_are_one_line_errors():
    model = TableDAE()
    with pytest.raises(SpecError, match="must have corrupt"):
        DenoisingChain(object(), torch.zeros(2, D))
    with pytest.raises(SpecError, match="only 0 and 1"):
        DenoisingChain(model, torch.full((2, D), 0.5))
    with pytest.raises(SpecError, match="clamp_mask must have shape"):
        DenoisingChain(model, torch.zeros(2, D), clamp_mask=torch.ones(5, dtype=torch.bool), clamp_values=0.0)
    with pytest.raises(SpecError, match="walkback_steps must be a positive integer"):
        WalkbackObjective(model, 0)
