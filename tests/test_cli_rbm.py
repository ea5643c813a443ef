"""The rbm and gbrbm families through the catalogue and the command line, tiny settings on the digits data set.

Exact answers where there is one: with 10 hidden units log Z is enumerable, so
the AIS test log-likelihood that ``evaluate`` reports is checked against the
exact one; completions keep the clamped half of every image exactly; the
Gaussian-Bernoulli scaling round-trips. Every bad input reachable from the
command line is a one-line error.
"""

import json
import math
import os

import pytest
import torch

import ppl_models
from inference.ais import estimate_is_stable
from ppl_models import catalogue
from ppl_models.catalogue.energy import EnergyFamily, top_half_mask
from ppl_models.cli import main
from tests.cli_util import run_cli
from ppl_models.data import load_dataset

TINY = ["--dataset", "digits", "--no-progress", "--set", "model.num_hidden=10", "--set", "train.ais_temperatures=500",
        "--set", "train.sample_sweeps=50", "--eval-particles", "40"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "rbm")
    assert main(["train", "rbm", *TINY, "--epochs", "4", "--lr", "0.05", "--out", out]) == 0
    return out


def test_list_and_spec(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "rbm" in out and "gbrbm" in out
    code, out, _ = run_cli(capsys, "spec", "gbrbm", "--json")
    spec = json.loads(out)
    assert spec["data"]["binarize"] == "none" and spec["model"]["standardize"] is True
    assert spec["objective"]["name"] == "pcd" and spec["train"]["ais_temperatures"] == 14500


def test_train_writes_a_complete_model_directory(trained):
    assert sorted(os.listdir(trained)) == ["checkpoint.pt", "completion.png", "metrics.json", "model.pt",
                                           "samples.png", "spec.json", "training_curve.png"]
    assert json.load(open(os.path.join(trained, "spec.json")))["model"]["num_visible"] == 64  # from the data
    m = json.load(open(os.path.join(trained, "metrics.json")))
    assert m["family"] == "rbm" and m["image_shape"] == [8, 8] and len(m["history"]) == 4
    assert m["test_images"] == 297 and m["ais_runs"] == 40 and m["ais_temperatures"] == 500
    # every monitor is there and the exact validation log-likelihood rose during training
    assert all({"recon_error", "pseudo_ll", "valid_pseudo_ll", "valid_exact_ll", "seconds"} <= set(h) for h in m["history"])
    assert m["history"][-1]["valid_exact_ll"] > m["history"][0]["valid_exact_ll"]
    for png in ("samples.png", "training_curve.png", "completion.png"):
        assert open(os.path.join(trained, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_ais_agrees_with_exact_log_likelihood(trained, capsys):
    code, out, _ = run_cli(capsys, "evaluate", trained, "--particles", "60", "--no-progress")
    assert code == 0 and "AIS log Z" in out and "60 runs x 500 temperatures" in out and "exact" in out
    m = json.load(open(os.path.join(trained, "metrics.json")))
    model = ppl_models.load(trained).module
    from inference.exact_enumeration import log_partition

    exact = float(log_partition(model))
    assert m["exact_log_z"] == pytest.approx(exact, abs=1e-6)
    model.requires_grad_(False)
    # 64x10 RBM: AIS (60 runs x 500 temperatures) within 0.1 nats of the exact log Z, both halves too
    assert abs(m["ais_log_z"] - exact) < 0.1 and all(abs(h - exact) < 0.15 for h in m["ais_log_z_halves"])
    assert abs(m["test_log_likelihood"] - m["test_log_likelihood_exact"]) < 0.1
    test = load_dataset("digits").test.x
    assert m["test_log_likelihood_exact"] == pytest.approx(
        float((-model.free_energy(test).double() - exact).mean()), abs=1e-6)
    assert -64 * math.log(2) < m["test_log_likelihood_exact"] < 0  # better than a coin per pixel
    assert m["test_pseudo_likelihood"] < 0 and m["test_log_likelihood_stderr"] > 0
    assert m["ais_stable"] is True and "WARNING" not in out


def test_unstable_ais_is_flagged():
    # the 784x500 README model: 14,500 temperatures gave halves 310.5 / 313.8 with spread 0.96 (unstable),
    # 50,000 gave 309.19 / 309.15 with spread 0.14 (stable)
    assert not estimate_is_stable(0.96, [310.52, 313.84])
    assert not estimate_is_stable(0.05, [310.0, 311.0])
    assert estimate_is_stable(0.136, [309.19, 309.15])
    line = catalogue.family("rbm").summary_line({"test_log_likelihood": -100.0, "test_log_likelihood_stderr": 1.0, "test_images": 10,
                                  "log_likelihood_units": "nats", "ais_log_z": 300.0, "ais_log_z_std": 0.9,
                                  "ais_runs": 100, "ais_temperatures": 14500, "ais_seconds": 40.0,
                                  "ais_log_z_halves": [299.0, 302.0], "ais_stable": False})
    assert "WARNING: AIS not stable" in line and "--temperatures" in line


def test_samples_and_completions(trained, capsys, tmp_path):
    for mode in ("samples", "completion"):
        png = str(tmp_path / f"{mode}.png")
        code, out, err = run_cli(capsys, "sample", trained, "-n", "12", "-o", png, "--mode", mode)
        assert code == 0, err
        assert open(png, "rb").read(4) == b"\x89PNG"
    model = ppl_models.load(trained)
    torch.manual_seed(0)
    images = model.sample(30, sweeps=20)
    assert images.shape == (30, 64) and 0 <= float(images.min()) and float(images.max()) <= 1
    completed = model.sample(5, mode="completion", sweeps=20)
    test = load_dataset("digits").test.x[:5]
    top = top_half_mask((8, 8), test)
    assert int(top.sum()) == 32 and bool(top[:32].all())  # rows 0..3 of the 8x8 image
    torch.testing.assert_close(completed[:, top], test[:, top])  # the clamped half is the image itself
    assert not torch.equal(completed[:, ~top], test[:, ~top])


def test_resume_continues_exactly(tmp_path, capsys):
    # a constant learning rate: the linear schedule is stretched when epochs are raised
    args = ["train", "rbm", *TINY, "--lr", "0.05", "--set", "train.eval_particles=4", "--set", "lr_schedule=constant"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli(capsys, *args, "--epochs", "2", "--out", a)[0] == 0
    assert run_cli(capsys, *args, "--epochs", "1", "--out", b)[0] == 0
    assert run_cli(capsys, *args, "--epochs", "2", "--out", b)[0] == 0  # resumes from epoch 1
    wa = torch.load(os.path.join(a, "model.pt"))
    wb = torch.load(os.path.join(b, "model.pt"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(json.load(open(os.path.join(b, "metrics.json")))["history"]) == 2


def test_gbrbm_on_grey_digits(tmp_path, capsys):
    out = str(tmp_path / "gb")
    code, stdout, err = run_cli(capsys, "train", "gbrbm", *TINY, "--epochs", "3", "--lr", "0.005", "--out", out)
    assert code == 0, err
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["family"] == "gbrbm" and "pixel units" in m["log_likelihood_units"]
    # hidden layer enumerated: AIS within 0.15 nats of exact (Gaussian units, 40 runs x 500 temperatures)
    assert abs(m["ais_log_z"] - m["exact_log_z"]) < 0.15
    assert m["history"][-1]["valid_exact_ll"] > m["history"][0]["valid_exact_ll"]
    model = ppl_models.load(out)
    grey = load_dataset("digits", binarize="none")
    module = model.module
    torch.testing.assert_close(module.data_offset, grey.train.x.mean(0))
    assert float(module.data_scale.min()) == pytest.approx(0.1)  # constant border pixels get the floor
    u = module.to_visible(grey.test.x)
    torch.testing.assert_close(module.to_pixels(u), grey.test.x)
    completed = model.sample(4, mode="completion", sweeps=10)
    top = top_half_mask((8, 8), completed)
    torch.testing.assert_close(completed[:, top], grey.test.x[:4, top])


@pytest.mark.parametrize("argv, message", [
    (["train", "rbm", "--dataset", "digits", "--set", "data.binarize=none"], "needs binary data but data.binarize is none"),
    (["train", "rbm", "--dataset", "digits", "--set", "objective.k=0"], "objective.k must be >= 1"),
    (["train", "rbm", "--dataset", "digits", "--set", "train.ais_schedule=[0, 0.5, 0.4, 1]"],
     "train.ais_schedule must be strictly increasing in [0, 1], got 0.5 then 0.4 at index 2"),
    (["train", "rbm", "--dataset", "digits", "--set", "train.ais_schedule=[0.1, 1]"], "must start at 0 and end at 1"),
    (["train", "rbm", "--dataset", "digits", "--set", "train.momentum=1.0"], "train.momentum must lie in [0, 1)"),
    (["train", "gbrbm", "--set", "model.sigma=0"], "model.sigma must be > 0.0"),
    (["train", "rbm", "--arch", "dense"], "unknown spec key 'model.arch'"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path):
    code, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "x"), "--no-progress")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "x")  # nothing written


def test_bad_sample_options_and_nan_weights(trained, capsys, tmp_path):
    code, _, err = run_cli(capsys, "sample", trained, "--mode", "ancestral", "-o", str(tmp_path / "s.png"))
    assert code == 2 and "mode must be one of ['samples', 'completion']" in err
    model = ppl_models.load(trained)
    with pytest.raises(ppl_models.errors.SpecError, match="take the options mode and sweeps"):
        model.sample(2, **{"class": 3})
    with pytest.raises(ppl_models.errors.SpecError, match="sweeps .* positive integer, got 0"):
        model.sample(2, sweeps=0)
    # NaN in the saved weights: evaluate says which parameter, in one line
    broken = str(tmp_path / "broken")
    os.makedirs(broken)
    for name in ("spec.json", "metrics.json"):
        open(os.path.join(broken, name), "w").write(open(os.path.join(trained, name)).read())
    weights = torch.load(os.path.join(trained, "model.pt"))
    weights["weight"][0, 0] = float("nan")
    torch.save(weights, os.path.join(broken, "model.pt"))
    code, _, err = run_cli(capsys, "evaluate", broken, "--no-progress")
    assert code == 2 and "parameter weight must be finite, found nan" in err and len(err.strip().splitlines()) == 1
    assert isinstance(catalogue.family("gbrbm"), EnergyFamily)
