"""The query interface from Python: what an answer holds and how a model is asked.

- a directed answer's per-input numbers are plain numbers, as its JSON (no 0-dim tensors);
- the exact posterior of a small directed model carries its marginals p(h_j = 1 | x) in ``tensors``;
- ``TrainedModel.query`` takes ``split=`` / ``index=`` as the CLI's ``--split`` / ``--index``;
- Gibbs pictures name the thinning of their draws;
- a spec read by ``make_spec(spec=path)`` and trained keeps its model file in the run directory.
"""

import contextlib
import io
import os

import pytest
import torch

from ppl_models import catalogue
from ppl_models.catalogue import energy_queries
from ppl_models.cli import main
from ppl_models.errors import DataError, SpecError
from tests.test_catalogue_conformance import COMMON, TINY


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny SBN (9 latent bits: exact answers), VAE and RBM, one epoch on the digits."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("sbn", "vae", "rbm"):
        out[name] = str(root / name)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["train", name, *COMMON, *TINY[name], "--epochs", "1", "--out", out[name]]) == 0, name
    return out


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


@pytest.mark.parametrize("name, kind, options", [
    ("vae", "log_prob", {"num_particles": 20}),
    ("sbn", "log_prob", {}),  # exact
    ("sbn", "log_prob", {"estimator": "importance", "num_particles": 20}),
    ("vae", "complete", {"num_particles": 20, "num_samples": 2}),
])
def test_directed_per_input_numbers_are_plain(runs, name, kind, options):
    answer = catalogue.load(runs[name]).query(kind, index="0:3", **options)
    assert len(answer.numbers["inputs"]) == 3
    assert _plain(answer.numbers["inputs"]), answer.numbers["inputs"][0]


def test_exact_posterior_marginals_are_tensors_of_the_answer(runs):
    trained = catalogue.load(runs["sbn"])  # hidden [6, 3]: 9 bits, exact by default
    answer = trained.query("posterior", index="0:4", num_samples=5)
    assert answer.numbers["estimator"].startswith("exact")
    for site, units in (("h1", 6), ("h2", 3)):
        probs = answer.tensors[f"{site}_probs"]
        assert probs.shape == (4, units)
        assert torch.equal(probs.double(), answer.numbers["latents"][site]["mean"].double())
        assert answer.tensors[site].shape == (5, 4, units)  # the draws are still there
    guide = trained.query("posterior", index="0:4", num_samples=5, estimator="guide")
    assert not any(k.endswith("_probs") for k in guide.tensors)  # no exact marginals claimed for the guide


def test_query_from_python_takes_split_and_index(runs):
    trained = catalogue.load(runs["sbn"])
    by_index = trained.query("log_prob", split="valid", index="2,5")
    x = trained.data().valid.x[[2, 5]]
    by_tensor = trained.query("log_prob", x)
    assert [i["input"] for i in by_index.numbers["inputs"]] == ["valid[2]", "valid[5]"]
    assert "valid split, images 2,5" in by_index.numbers["inputs_from"]
    assert torch.equal(by_index.tensors["log_prob"], by_tensor.tensors["log_prob"])
    default = trained.query("log_prob", index="0:2")  # split defaults to test, as on the command line
    assert [i["input"] for i in default.numbers["inputs"]] == ["test[0]", "test[1]"]
    with pytest.raises(SpecError, match="either images x or split/index"):
        trained.query("log_prob", x, index="0:2")
    with pytest.raises(SpecError, match="sample queries .* take no split or index"):
        trained.query("sample", split="test")
    with pytest.raises(DataError, match="out of range"):
        trained.query("log_prob", index="0:100000")


def test_gibbs_pictures_name_their_thinning(runs, tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(energy_queries, "save_gibbs_grid", lambda *a, title, **k: titles.append(title))
    monkeypatch.setattr(energy_queries, "save_completion_figure", lambda *a, title, **k: titles.append(title))
    trained = catalogue.load(runs["rbm"])
    trained.query("sample", num_samples=2, sweeps=6, draws=4, thin=3).picture(str(tmp_path / "s.png"))
    trained.query("complete", index="0:1", num_samples=2, sweeps=6, draws=4, thin=3).picture(str(tmp_path / "c.png"))
    trained.query("sample", num_samples=2, sweeps=6, draws=4).picture(str(tmp_path / "t.png"))
    assert "4 draws every 3 sweeps" in titles[0] and "6 sweeps" in titles[0]
    assert "4 draws every 3 sweeps" in titles[1]
    assert "4 draws every sweep" in titles[2]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_make_spec_from_a_path_keeps_the_model_file_when_trained(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    text = ("# my mixture\nfamily: mixture\nmodel:\n  num_components: 3   # few\ndata:\n  dataset: digits\n"
            "train:\n  epochs: 1\n") if suffix == ".yaml" else \
        '{"family": "mixture", "model": {"num_components": 3}, "data": {"dataset": "digits"}, "train": {"epochs": 1}}'
    path.write_text(text)
    spec = catalogue.make_spec(spec=str(path), overrides=["train.seed=1"])
    out = tmp_path / "run"
    catalogue.train(spec, str(out), progress=False, log=lambda message: None)
    kept = out / f"model{suffix}"
    assert kept.read_bytes() == path.read_bytes()  # the exact file, comments included
    assert "_model_file" not in (out / "spec.json").read_text()  # not a spec field
    # a spec built from a dict has no file to keep
    other = tmp_path / "run2"
    catalogue.train(catalogue.make_spec(spec={"family": "mixture", "model": {"num_components": 3},
                                              "data": {"dataset": "digits"}, "train": {"epochs": 1}}),
                    str(other), progress=False, log=lambda message: None)
    assert not any(os.path.exists(other / n) for n in ("model.yaml", "model.json"))
