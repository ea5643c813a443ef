"""The VAE's log p(x) by latent AIS (Wu et al. 2017) beside importance sampling with its guide, on a tiny
trained VAE: two estimators of the same number by different routes, so they must agree within their errors."""

import json

import pytest
import torch

import ppl_models
from tests.cli_util import run_cli
from tests.test_catalogue_conformance import COMMON


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vae") / "run")
    import contextlib
    import io

    from ppl_models.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "vae", *COMMON, "--set", "model.hidden=[16]", "--set", "z_dim=2",
                     "--eval-particles", "10", "--epochs", "5", "--out", out]) == 0
    return out


def test_latent_ais_agrees_with_importance_sampling(tiny_vae):
    trained = ppl_models.load(tiny_vae)
    x = trained.data().test.x[:20]
    ais = trained.family.query(trained, "log_prob", x, estimator="latent_ais", num_particles=16, temperatures=300)
    iw = trained.family.query(trained, "log_prob", x, estimator="importance", num_particles=5000)
    a, sa = ais.tensors["log_prob"].double(), ais.tensors["stderr"].double()
    b, sb = iw.tensors["log_prob"].double(), iw.tensors["stderr"].double()
    # a 2-d latent: IS with 5000 guide draws is all but exact, and AIS must land within its errors of it
    assert bool(((a - b).abs() < 4 * (sa ** 2 + sb ** 2).sqrt() + 0.05).all()), (a - b, sa, sb)
    assert abs(float((a - b).mean())) < 0.05
    assert ais.numbers["is_bound"] and "Wu et al. 2017" in ais.numbers["estimator"]
    assert ais.numbers["settings"]["temperatures"] == 300 and 0.3 < ais.numbers["hmc_acceptance"] < 0.95


def test_latent_ais_through_the_cli_and_its_refusals(tiny_vae, capsys, tmp_path):
    code, out, err = run_cli(capsys, "query", tiny_vae, "log_prob", "--index", "0:2", "--estimator", "latent_ais",
                             "--particles", "4", "--temperatures", "20")
    assert code == 0, err
    answer = json.loads(out)
    assert len(answer["inputs"]) == 2 and all(torch.isfinite(torch.tensor(r["log_prob"])) for r in answer["inputs"])
    code, _, err = run_cli(capsys, "query", tiny_vae, "log_prob", "--temperatures", "20")
    assert code == 2 and "option of --estimator latent_ais only" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_the_vae_decoder_hook_against_quadrature(likelihood):
    """Each likelihood the VAE has, on an untrained 2-d latent: latent AIS through the family's hook against
    log p(x) by a 701 x 701 grid over z in [-7, 7]^2."""
    import math

    from inference.latent_ais import latent_ais
    from ppl_models.catalogue.vae import VAEFamily
    from ppl_models.vae import VAE, VAEArchitecture

    torch.manual_seed(0)
    vae = VAE(VAEArchitecture(x_dim=10, z_dim=2, hidden=[8], likelihood=likelihood))
    x = torch.rand(4, 10)
    x = (x > 0.5).float() if likelihood == "bernoulli" else x
    z_dim, log_likelihood_of = VAEFamily().latent_decoder(vae)
    grid = torch.linspace(-7, 7, 701)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2).expand(-1, 4, 2).contiguous()
    with torch.no_grad():
        log_joint = log_likelihood_of(x)(z) - 0.5 * (z ** 2).sum(-1) - math.log(2 * math.pi)
        exact = torch.logsumexp(log_joint.double(), 0) + 2 * math.log(float(grid[1] - grid[0]))
    r = latent_ais(log_likelihood_of(x), 4, z_dim, num_temperatures=200, num_runs=16, leapfrog_steps=5)
    assert bool(((r.log_prob - exact).abs() < 4 * r.stderr + 0.02).all()), (r.log_prob - exact, r.stderr)
