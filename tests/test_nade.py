"""NADE and the FVSBN against exact answers: normalisation by enumerating every binary image, the
vectorised chain rule against a per-pixel loop, the ``pyro.markov`` form against the one-site form,
ancestral samples against the exact distribution (chi-square), maximum-likelihood training through the
shared driver, and one-line errors."""

import itertools

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from scipy import stats

from inference.training import PyroObjective, fit
from ppl_models import catalogue
from ppl_models.data import load_dataset
from ppl_models.errors import DataError, SpecError
from ppl_models.nade import FVSBN, NADE, FVSBNArchitecture, NADEArchitecture


def all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))


def randomised(module, scale=1.5):
    """Parameters far from their zero / near-zero start, so that every dependence matters."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
    return module


def nade(d=5, h=3):
    return randomised(NADE(NADEArchitecture(x_dim=d, hidden=h)))


def fvsbn(d=5):
    return randomised(FVSBN(FVSBNArchitecture(x_dim=d)))


MODELS = {"nade": nade, "fvsbn": fvsbn}


def naive_log_prob(module, x):
    """log p(x) pixel by pixel, straight from the definitions (no shared cumulative sum)."""
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for n in range(x.shape[0]):
        for d in range(module.x_dim):
            if isinstance(module, NADE):
                h = torch.sigmoid(module.c + module.W[:, :d] @ x[n, :d])
                logit = module.bias[d] + module.V[d] @ h
            else:
                logit = module.bias[d] + module.weight[d, :d] @ x[n, :d]
            p = torch.sigmoid(logit)
            out[n] += torch.log(p if x[n, d] == 1 else 1 - p).double()
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("d", [4, 6])
def test_probabilities_of_all_binary_images_sum_to_one(name, d):
    module = MODELS[name](d)
    with torch.no_grad():
        total = module.log_prob(all_binary(d)).double().exp().sum()
    assert abs(total.item() - 1.0) < 1e-5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_vectorised_log_prob_equals_a_per_pixel_loop(name):
    module = MODELS[name](6)
    x = torch.bernoulli(torch.full((20, 6), 0.5))
    with torch.no_grad():
        assert torch.allclose(module.log_prob(x).double(), naive_log_prob(module, x), atol=1e-5)


def test_nade_blocks_of_rows_do_not_change_log_prob(monkeypatch):
    import ppl_models.nade as nade_module

    module, x = nade(6, 3), torch.bernoulli(torch.full((25, 6), 0.5))
    whole = module.log_prob(x)
    monkeypatch.setattr(nade_module, "BLOCK_ELEMENTS", 1)  # one image per block
    assert torch.allclose(module.log_prob(x), whole, atol=1e-6)
    assert module.log_prob(x[:0]).shape == (0,)


def test_nade_evaluation_loop_equals_the_training_blocks():
    # without autograd NADE scores pixel by pixel (in place); with it, by blocks of cumulative sums
    module, x = nade(7, 4), torch.bernoulli(torch.full((30, 7), 0.5))
    with torch.no_grad():
        module.W.mul_(40)  # weights far from zero, so that a wrong pre-activation shows
    with torch.no_grad():
        looped = module.log_prob(x)
    blocked = module.log_prob(x)
    assert blocked.requires_grad and not looped.requires_grad
    assert torch.allclose(looped, blocked.detach(), atol=1e-5)
    assert torch.allclose(looped.double(), naive_log_prob(module, x), atol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_markov_chain_of_pixel_sites_has_the_vectorised_log_density(name):
    module = MODELS[name](5)
    x = torch.bernoulli(torch.full((30, 5), 0.5))
    one_site = poutine.trace(module.model).get_trace(x)
    per_pixel = poutine.trace(module.sequential_model).get_trace(x)
    one_site.compute_log_prob()
    per_pixel.compute_log_prob()
    latent = [n for n, s in per_pixel.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "data"]
    assert latent == [] and len(per_pixel.observation_nodes) == 5
    pixels = sum(per_pixel.nodes[f"x_{d}"]["log_prob"] for d in range(5))
    assert torch.allclose(one_site.nodes["x"]["log_prob"], pixels, atol=1e-5)
    assert torch.allclose(one_site.nodes["x"]["log_prob"], module.log_prob(x), atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trace_elbo_with_the_empty_guide_is_the_exact_negative_log_likelihood(name):
    module = MODELS[name](5)
    x = torch.bernoulli(torch.full((12, 5), 0.5))
    loss = Trace_ELBO(max_plate_nesting=1).loss(module.model, module.guide, x)
    assert loss == pytest.approx(-module.log_prob(x).sum().item(), rel=1e-6)


def chi_square_p(samples: torch.Tensor, log_p: torch.Tensor) -> float:
    d = samples.shape[1]
    index = (samples * 2 ** torch.arange(d - 1, -1, -1)).sum(-1).long()  # itertools.product order
    observed = torch.bincount(index, minlength=2 ** d).double()
    expected = log_p.double().exp() * samples.shape[0]
    return stats.chisquare(observed.numpy(), expected.numpy() / expected.sum().item() * samples.shape[0]).pvalue


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("how", ["sample", "model", "sequential_model"])
def test_ancestral_samples_follow_the_exact_distribution(name, how):
    torch.manual_seed(1)
    module = MODELS[name](4)
    n = 20000
    with torch.no_grad():
        if how == "sample":
            samples, probs = module.sample(n)
            assert torch.allclose(probs, module.conditionals(samples), atol=1e-6)
        else:
            samples = poutine.trace(getattr(module, how)).get_trace(None, batch_size=n)
            samples = (samples.nodes["x"]["value"] if how == "model" else
                       torch.stack([samples.nodes[f"x_{d}"]["value"] for d in range(4)], -1))
        log_p = module.log_prob(all_binary(4))
        assert chi_square_p(samples, log_p) > 1e-3
        # the test has the power to see lost dependence: pixels drawn independently from the same marginals fail it
        marginals = (log_p.exp()[:, None] * all_binary(4)).sum(0)
        independent = torch.bernoulli(marginals.expand(n, 4))
        assert chi_square_p(independent, log_p) < 1e-6


@pytest.mark.parametrize("name", sorted(MODELS))
def test_maximum_likelihood_through_the_driver_lowers_the_exact_nll(name):
    x = load_dataset("digits", binarize="threshold").train.x[:300]
    module = (NADE(NADEArchitecture(x_dim=64, hidden=8, init_scale=0.1)) if name == "nade"
              else FVSBN(FVSBNArchitecture(x_dim=64)))
    module.initialise_visible_bias(x)
    with torch.no_grad():
        before = -module.log_prob(x).mean().item()
    objective = PyroObjective(Trace_ELBO(max_plate_nesting=1), module.model, module.guide)
    result = fit(objective, (x,), module=module, epochs=10, batch_size=50, lr=0.02, progress=False)
    with torch.no_grad():
        after = -module.log_prob(x).mean().item()
    assert after < before - 2.0, (before, after)  # from the pixel marginals (23.96 nats for NADE)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("name", ["nade", "fvsbn"])
def test_family_evaluates_exactly(name, tmp_path):
    overrides = ["data.dataset=digits", "train.epochs=2", "train.lr=0.01"] + (["model.hidden=4"] if name == "nade" else [])
    metrics = catalogue.train(catalogue.make_spec(name, overrides=overrides), str(tmp_path / name), progress=False,
                              log=lambda line: None)
    assert metrics["estimator"].startswith("exact") and "eval_particles" not in metrics
    trained = catalogue.load(str(tmp_path / name))
    test = trained.family.load_data(trained.spec).test.x
    assert metrics["test_nll"] == pytest.approx(-trained.module.log_prob(test).mean().item(), rel=1e-6)
    assert "exact" in catalogue.summary(metrics)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(SpecError, match=r"^spec.model.hidden must be >= 1, got 0$"):
        catalogue.make_spec("nade", overrides=["model.hidden=0"])
    with pytest.raises(SpecError, match="model.hidden must be >= 1"):
        NADE(NADEArchitecture(x_dim=4, hidden=0))
    with pytest.raises(SpecError, match="x_dim must be set"):
        FVSBN(FVSBNArchitecture())
    fam = catalogue.family("fvsbn")
    spec = catalogue.make_spec("fvsbn", overrides=["data.dataset=digits", "model.x_dim=10"])
    with pytest.raises(SpecError, match="model.x_dim is 10 but data set digits has 64 pixels"):
        fam.resolve(spec, fam.load_data(spec))
    module = fvsbn(4)
    with pytest.raises(DataError, match=r"x must be \(N, 4\) binary images"):
        module.log_prob(torch.zeros(3, 5))
    with pytest.raises(DataError, match="only 0 and 1"):
        module.log_prob(torch.full((3, 4), 0.5))
    with pyro.validation_enabled(True), pytest.raises(DataError):
        poutine.trace(module.model).get_trace(torch.full((3, 4), 0.5))


@pytest.mark.parametrize("name", ["nade", "fvsbn"])
def test_completion_after_a_prefix_is_the_exact_conditional(name, tmp_path):
    overrides = ["data.dataset=digits", "train.epochs=1"] + (["model.hidden=4"] if name == "nade" else [])
    catalogue.train(catalogue.make_spec(name, overrides=overrides), str(tmp_path / name), progress=False,
                    log=lambda line: None)
    trained = catalogue.load(str(tmp_path / name))
    torch.manual_seed(2)
    randomised(trained.module, scale=1.0)  # strong dependence of the last pixels on the prefix
    x = trained.family.load_data(trained.spec).test.x[:1]
    d, missing = x.shape[1], 4
    mask = torch.arange(d) < d - missing  # the first 60 of 64 pixels observed
    answer = trained.family.query(trained, "complete", x, seed=0, mask=mask, num_samples=20000)
    completions = answer.tensors["completions"][0]
    assert torch.equal(completions[:, :d - missing], x.expand(20000, -1)[:, :d - missing])
    # p(x_missing | prefix) by enumerating the 16 completions with the exact log p(x)
    tails = all_binary(missing)
    full = torch.cat([x[:, :d - missing].expand(len(tails), -1), tails], 1)
    with torch.no_grad():
        log_joint = trained.module.log_prob(full).double()
    prefix = torch.logsumexp(log_joint, 0).item()
    assert answer.numbers["inputs"][0]["log_prob_observed"]["value"] == pytest.approx(prefix, abs=1e-4)
    assert chi_square_p(completions[:, d - missing:], log_joint) > 1e-3
    # the same test sees a sampler that ignores the prefix: the tail drawn from the model's own marginals
    unconditional, _ = trained.module.sample(20000)
    assert chi_square_p(unconditional[:, d - missing:], log_joint) < 1e-6
    with pytest.raises(SpecError, match="not a prefix"):
        trained.family.query(trained, "complete", x, mask="bottom")
