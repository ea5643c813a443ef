"""The one query interface: every family x every query kind answered or refused in one line, and the answers
checked against exact ones on models small enough to enumerate.

Exact references: completions of a 5x3 RBM and of a 4-pixel sigmoid belief net against p(x_missing | x_observed)
by enumeration (chi-square, with a wrong sampler shown to fail the same test); log p(x) by importance sampling and
by AIS within their reported standard errors of the exact value; the exact posterior of a trained 9-bit SBN
against a hand enumeration, and importance-resampled posterior draws against it.
"""

import contextlib
import io
import itertools
import json
import os

import arviz
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import chisquare

from ppl_models import catalogue
from ppl_models.catalogue import QUERY_KINDS, TrainedModel
from ppl_models.cli import main
from ppl_models.errors import DataError, SpecError
from ppl_models.rbm import RBM
from ppl_models.sbn import SBNArchitecture, SigmoidBeliefNet
from tests.cli_util import run_cli
from tests.test_catalogue_conformance import COMMON, TINY

DIRECTED = ("sample", "log_prob", "posterior", "complete")
ENERGY = ("sample", "log_prob", "posterior", "complete")
#: what each registered family answers; a family missing here fails the suite
ANSWERS = {"vae": DIRECTED, "iwae": DIRECTED, "sbn": DIRECTED, "mixture": DIRECTED, "dcim": DIRECTED + ("classify",),
           "rbm": ENERGY, "gbrbm": ENERGY, "nade": ("sample", "log_prob", "complete"), "fvsbn": ("sample", "log_prob", "complete"),
           "gan": ("sample", "log_prob"), "gmmn": ("sample", "log_prob"),
           "fvbm": ("sample", "log_prob", "complete"), "dbn": ("sample", "log_prob", "posterior"),
           "dbm": ENERGY, "dae": ("sample", "log_prob", "complete")}
#: small settings per (family kind, query), so that each answer takes a fraction of a second
FAST = {("directed", "sample"): ["-n", "4"], ("energy", "sample"): ["-n", "4", "--sweeps", "5", "--draws", "10"],
        ("directed", "log_prob"): [], ("energy", "log_prob"): [],
        ("directed", "posterior"): ["-n", "10"], ("energy", "posterior"): ["-n", "10"],
        ("directed", "complete"): ["-n", "2", "--particles", "50"],
        ("energy", "complete"): ["-n", "2", "--sweeps", "5", "--draws", "10"],
        ("directed", "classify"): ["-n", "10"], ("energy", "classify"): [],
        ("chain", "sample"): ["-n", "4", "--sweeps", "5", "--draws", "10"], ("chain", "log_prob"): ["--particles", "20"],
        ("chain", "posterior"): [], ("chain", "complete"): ["-n", "2", "--sweeps", "5", "--draws", "10"],
        ("chain", "classify"): [],
        # exact completion after a prefix: no particles
        ("nade", "complete"): ["-n", "2"], ("fvsbn", "complete"): ["-n", "2"]}
P_MIN = 1e-3  # a chi-square p-value below this fails


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every registered family trained for one epoch with the conformance test's tiny settings."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in catalogue.FAMILIES:
        out[name] = str(root / name)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["train", name, *COMMON, *TINY[name], "--epochs", "1", "--out", out[name]]) == 0, name
    return out


def test_every_registered_family_is_listed():
    assert set(ANSWERS) == set(catalogue.FAMILIES), "add the new family to ANSWERS with the queries it answers"


# -- every family x every kind ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", QUERY_KINDS)
@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_each_family_answers_or_refuses_each_kind(name, kind, runs, capsys, tmp_path):
    fam = catalogue.family(name)
    inputs = [] if kind == "sample" else ["--index", "0:3"]
    files = {"png": str(tmp_path / "p.png"), "nc": str(tmp_path / "d.nc")}
    outputs = (["--png", files["png"]] if kind in ("sample", "complete") else []) + \
              (["--netcdf", files["nc"]] if kind in ("sample", "posterior", "complete") else [])
    code, out, err = run_cli(capsys, "query", runs[name], kind, *inputs, *FAST.get((name, kind), FAST[(fam.kind, kind)]), *outputs)
    if kind not in ANSWERS[name]:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{name} cannot answer {kind} queries" in err and f"it answers: {', '.join(ANSWERS[name])}" in err
        assert not any(os.path.exists(f) for f in files.values())
        return
    assert code == 0, err
    answer = json.loads(out)
    assert answer["query"] == kind and answer["family"] == name and answer["estimator"]
    if kind == "log_prob":
        assert isinstance(answer["is_bound"], bool) and len(answer["inputs"]) == 3
        assert all(set(row) >= {"log_prob", "stderr"} for row in answer["inputs"])
    if kind == "complete":
        assert len(answer["inputs"]) == 3 and answer["mask"] == "the top half observed"
    if kind == "classify":
        assert all(len(row["probabilities"]) == len(row["stderr"]) for row in answer["inputs"])
        assert "accuracy" in answer  # images of a split come with their labels
    if kind in ("sample", "complete"):
        assert open(files["png"], "rb").read(4) == b"\x89PNG"
    if kind in ("sample", "posterior", "complete"):
        assert "posterior" in arviz.from_netcdf(files["nc"]).groups()
    if fam.kind == "energy" and kind in ("sample", "complete"):
        assert set(answer["diagnostics"]["r_hat_max"]) == {"free_energy", "visible_units"}


@pytest.mark.parametrize("argv, message", [
    (["log_prob", "--index", "0:400"], "--index 0:400 is out of range: the digits test split has 297 images"),
    (["log_prob", "--index", "a:b"], "--index must be START:STOP"),
    (["log_prob", "--split", "holdout"], "--split must be one of train, valid, test"),
    (["log_prob", "--mask", "top"], "sbn log_prob queries take no mask (--mask)"),
    (["log_prob", "--png", "{tmp}/x.png"], "a log_prob answer has no picture"),
    (["log_prob", "-o", "{tmp}/x.txt"], "unknown format '.txt'"),
    (["complete", "--mask", "diagonal"], "--mask must be one of top, bottom"),
    (["complete", "--mask", "random:2"], "needs a fraction F of observed pixels in [0, 1]"),
    (["complete", "--mask", "{tmp}/mask5.npy"], "mask {tmp}/mask5.npy has shape (5,)"),
    (["complete", "--fill", "dark"], "fill must be 'mean' or a number in [0, 1]"),
    (["posterior", "--input", "{tmp}/big.npy"], "has shape (2, 100), but the model's images are 8x8"),
    (["posterior", "--input", "{tmp}/grey.npy"], "has grey levels but the sbn model needs binary pixels"),
    (["posterior", "--input", "{tmp}/range.npy"], "pixel values must lie in [0, 1]"),
    (["posterior", "--estimator", "mcmc"], "estimator must be one of auto, exact, guide, importance_resampling"),
    (["sample", "--index", "0:3"], "sample queries draw from the model and take no"),
])
def test_bad_query_input_is_a_one_line_error_that_writes_nothing(argv, message, runs, capsys, tmp_path):
    import numpy as np

    np.save(tmp_path / "mask5.npy", np.ones(5))
    np.save(tmp_path / "big.npy", np.zeros((2, 100)))
    np.save(tmp_path / "grey.npy", np.full((1, 64), 0.3))
    np.save(tmp_path / "range.npy", np.full((1, 64), 2.0))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = str(tmp_path / "answer.json")
    code, stdout, err = run_cli(capsys, "query", runs["sbn"], *argv, *([] if "-o" in argv else ["-o", out]))
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(out) and not os.path.exists(tmp_path / "x.png") and stdout == ""


def test_inputs_from_files_and_from_python(runs, capsys, tmp_path):
    import numpy as np
    from PIL import Image

    trained = catalogue.load(runs["sbn"])
    x = trained.data().test.x[:3]
    np.save(tmp_path / "x.npy", x.reshape(3, 8, 8).numpy())
    Image.fromarray((x[0].reshape(8, 8).numpy() * 255).astype("uint8")).save(tmp_path / "a.png")
    code, out, err = run_cli(capsys, "query", runs["sbn"], "log_prob", "--input", str(tmp_path / "x.npy"),
                             str(tmp_path / "a.png"))
    assert code == 0, err
    rows = json.loads(out)["inputs"]
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == ["x.npy[0]", "x.npy[1]", "x.npy[2]", "a.png"]
    assert rows[0]["log_prob"] == pytest.approx(rows[3]["log_prob"])  # exact (9 bits): the same image, the same number
    answer = trained.query("log_prob", x)
    assert answer.tensors["log_prob"].shape == (3,)
    assert answer.tensors["log_prob"][0].item() == pytest.approx(rows[0]["log_prob"], abs=1e-5)
    with pytest.raises(DataError, match=r"inputs must be \(N, 64\) images"):
        trained.query("log_prob", torch.zeros(2, 10))
    with pytest.raises(DataError, match="needs binary pixels"):
        trained.query("posterior", torch.full((2, 64), 0.5))
    with pytest.raises(SpecError, match="sbn cannot answer classify queries"):
        trained.query("classify", x)


# -- exact answers ----------------------------------------------------------------------------------------
def states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def state_index(bits: torch.Tensor) -> torch.Tensor:
    return (bits.long() * 2 ** torch.arange(bits.shape[-1] - 1, -1, -1)).sum(-1)  # the order of states()


def gof_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value of binary rows ``samples`` against ``probs`` over states(); states expected
    fewer than 5 times are pooled."""
    counts = torch.bincount(state_index(samples), minlength=probs.numel()).double()
    expected = probs.double() * samples.shape[0]
    rare = expected < 5
    f_obs = torch.cat([counts[~rare], counts[rare].sum().reshape(1)]) if rare.any() else counts
    f_exp = torch.cat([expected[~rare], expected[rare].sum().reshape(1)]) if rare.any() else expected
    return float(chisquare(f_obs.numpy(), f_exp.numpy() * f_obs.sum().item() / f_exp.sum().item()).pvalue)


def tiny_trained(name: str, module, image_shape, **overrides) -> TrainedModel:
    spec = catalogue.make_spec(name, overrides=[f"{k}={v}" for k, v in overrides.items()])
    return TrainedModel("(tiny)", spec, module.eval(), {"image_shape": list(image_shape)}, catalogue.family(name))


def test_rbm_completion_follows_the_exact_conditional():
    torch.manual_seed(0)
    rbm = RBM(5, 3, weight_scale=1.5)
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.tensor([0.5, -1.0, 0.2, 1.0, -0.3]))
        rbm.hidden_bias.copy_(torch.tensor([-0.5, 0.8, 0.0]))
    trained = tiny_trained("rbm", rbm, (1, 5), **{"model.num_visible": 5, "model.num_hidden": 3})
    observed = torch.tensor([True, False, True, False, False])
    x = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]).expand(3000, 5)
    full = x[:1].expand(8, 5).clone()
    full[:, ~observed] = states(3)
    with torch.no_grad():
        exact = torch.softmax(-rbm.free_energy(full).double(), 0)  # p(v_missing | v_observed), states() order
    answer = trained.query("complete", x, mask=observed, num_samples=1, sweeps=30, draws=1)
    completions = answer.tensors["completions"][:, 0]
    assert torch.equal(completions[:, observed], x[:, observed])  # the observed pixels are kept
    assert gof_pvalue(completions[:, ~observed], exact) > P_MIN
    # the test can tell: draws of the model without clamping follow p(v_missing), not the conditional
    free = trained.query("sample", num_samples=3000, sweeps=30, draws=1).tensors["v"]
    assert gof_pvalue(free[:, ~observed], exact) < 1e-6


def _tiny_sbn(seed: int = 0) -> SigmoidBeliefNet:
    """A 4-pixel, 3-bit SBN with strong generative weights and a broad (untrained) recognition network: a
    proposal that covers the posterior without matching it (SIR's error at finite k grows with the
    weights' variance: at k = 500 the effective sample size here is 200 or more)."""
    torch.manual_seed(seed)
    sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=4, hidden=[3]))
    with torch.no_grad():
        for p in sbn.generative.parameters():
            p.copy_(2.0 * torch.randn_like(p))
        for p in sbn.recognition.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return sbn


def _sbn_log_joint(sbn, x):
    """log p(x, h) of a one-layer SBN for every row of x (M, D) and every h in states(3): (M, 8)."""
    h = states(3)
    prior = dist.Bernoulli(logits=sbn.generative.top_logits).log_prob(h).sum(-1)
    with torch.no_grad():
        return prior + dist.Bernoulli(logits=sbn.down[0](h)).log_prob(x[:, None, :]).sum(-1)


def test_sbn_completion_by_importance_resampling_follows_the_exact_conditional():
    sbn = _tiny_sbn()
    trained = tiny_trained("sbn", sbn, (1, 4), **{"model.x_dim": 4, "model.hidden": "[3]"})
    observed = torch.tensor([True, True, False, False])
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(3000, 4)
    full = x[:1].expand(4, 4).clone()
    full[:, ~observed] = states(2)
    exact = torch.softmax(torch.logsumexp(_sbn_log_joint(sbn, full), -1), 0)  # p(x_missing | x_observed)
    answer = trained.query("complete", x, mask=observed, num_samples=1, num_particles=500, fill=0.5)
    completions = answer.tensors["completions"][:, 0]
    assert torch.equal(completions[:, observed], x[:, observed])
    assert gof_pvalue(completions[:, ~observed], exact) > P_MIN
    assert "sampling importance resampling" in answer.numbers["estimator"] and "0.5" in answer.numbers["guide_input"]
    assert answer.numbers["inputs"][0]["effective_sample_size"] > 100  # of 500 particles
    # one particle is no resampling at all: the guide's own guess, which the test rejects
    wrong = trained.query("complete", x, mask=observed, num_samples=1, num_particles=1, fill=0.5)
    assert gof_pvalue(wrong.tensors["completions"][:, 0, ~observed], exact) < 1e-6


def test_importance_resampled_posterior_follows_the_exact_posterior():
    sbn = _tiny_sbn(1)
    trained = tiny_trained("sbn", sbn, (1, 4), **{"model.x_dim": 4, "model.hidden": "[3]"})
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    exact = torch.softmax(_sbn_log_joint(sbn, x)[0], 0)
    # independent draws: one per copy of the input (the draws of one input share its particles)
    resampled = trained.query("posterior", x.expand(3000, 4), estimator="importance_resampling", num_samples=1,
                              num_particles=500)
    assert gof_pvalue(resampled.tensors["h1"][0], exact) > P_MIN
    guide = trained.query("posterior", x.expand(3000, 4), estimator="guide", num_samples=1)
    assert gof_pvalue(guide.tensors["h1"][0], exact) < 1e-6  # the guide is not the posterior, and the test sees it
    enumerated = trained.query("posterior", x, estimator="exact", num_samples=3000)
    assert gof_pvalue(enumerated.tensors["h1"][:, 0], exact) > P_MIN
    marginal = (exact[:, None] * states(3)).sum(0)
    assert torch.allclose(enumerated.numbers["latents"]["h1"]["mean"][0].float(), marginal, atol=1e-5)


def test_posterior_of_a_trained_sbn_is_the_enumerated_one(runs):
    trained = catalogue.load(runs["sbn"])  # hidden [6, 3]: 9 bits
    module, x = trained.module, trained.data().test.x[:5]
    answer = trained.query("posterior", x)
    assert answer.numbers["estimator"].startswith("exact: enumeration of all 2^9")
    h1, h2 = states(6), states(3)
    with torch.no_grad():
        lp = (dist.Bernoulli(logits=module.generative.top_logits).log_prob(h2).sum(-1)[:, None]     # (8, 1)
              + dist.Bernoulli(logits=module.down[1](h2)[:, None, :]).log_prob(h1).sum(-1)          # (8, 64)
              + dist.Bernoulli(logits=module.down[0](h1)).log_prob(x[:, None, None, :]).sum(-1))     # (N, 8, 64)
    post = torch.softmax(lp.reshape(5, -1), -1).reshape(5, 8, 64)
    exact = answer.numbers["latents"]
    assert torch.allclose(exact["h1"]["mean"].float(), post.sum(1) @ h1, atol=1e-5)
    assert torch.allclose(exact["h2"]["mean"].float(), post.sum(2) @ h2, atol=1e-5)
    assert answer.inference_data.posterior["h1"].shape == (1, 100, 5, 6)


def test_importance_sampled_log_prob_is_within_its_stderr_of_the_exact_one(runs):
    trained = catalogue.load(runs["sbn"])
    x = trained.data().test.x[:16]
    exact = trained.query("log_prob", x, estimator="exact")
    assert exact.numbers["is_bound"] is False and float(exact.tensors["stderr"].abs().max()) == 0
    sampled = trained.query("log_prob", x, estimator="importance", num_particles=1000)
    assert sampled.numbers["is_bound"] is True and "lower bound" in sampled.numbers["bound"]
    z = (sampled.tensors["log_prob"] - exact.tensors["log_prob"]) / sampled.tensors["stderr"]
    assert float(z.abs().max()) < 4, z
    assert float(sampled.tensors["stderr"].max()) < 0.2  # and the error bar is not vacuous


def test_ais_log_prob_is_within_its_stderr_of_the_exact_one(runs):
    trained = catalogue.load(runs["rbm"])
    x = trained.data().test.x[:16]
    exact = trained.query("log_prob", x)  # 6 hidden units: exact by default
    assert exact.numbers["estimator"].startswith("exact")
    ais = trained.query("log_prob", x, estimator="ais", num_particles=100, temperatures=1000)
    assert ais.numbers["is_bound"] is False and ais.numbers["log_z_from"] == "this query"
    se = float(ais.tensors["stderr"][0])
    assert 0 < se < 0.05
    assert float((ais.tensors["log_prob"] - exact.tensors["log_prob"]).abs().max()) < 4 * se
    stored = trained.query("log_prob", x, estimator="ais")  # the run's own evaluation, no new AIS
    assert stored.numbers["log_z"]["value"] == trained.metrics["ais_log_z"]


def test_resampled_draws_report_their_effective_size():
    """S draws resampled from k weighted particles carry at most ESS particles' information: the standard error
    of their mean divides by sqrt(min(S, ESS)), and an answer whose ESS is below 10 says it is not reliable."""
    from ppl_models.catalogue.answers import draw_summary
    from ppl_models.catalogue.directed_queries import MIN_ESS, _ess_verdict

    draws = torch.tensor([0.0, 1.0] * 50).reshape(100, 1, 1).expand(100, 2, 1)  # sd 0.5 for both inputs
    plain = draw_summary(draws)["mean_stderr"].squeeze(-1)
    resampled = draw_summary(draws, effective_size=torch.tensor([4.0, 400.0]))["mean_stderr"].squeeze(-1)
    assert torch.allclose(resampled[0], plain[0] * (100 / 4) ** 0.5)  # ESS 4 < 100 draws: sqrt(4)
    assert torch.allclose(resampled[1], plain[1])  # ESS above the draws: the draws count
    assert _ess_verdict(torch.tensor([MIN_ESS + 1.0, 50.0]), 1000)["reliable"]
    verdict = _ess_verdict(torch.tensor([2.5, 50.0]), 1000)
    assert not verdict["reliable"] and "1 of 2 inputs" in verdict["message"] and "2.5" in verdict["message"]
