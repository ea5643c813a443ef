"""The DCIM family through the catalogue and the command line, tiny settings on the digits data set.

Exact answers where there is one: the reverse model's importance-sampled NLL
against enumeration of every hidden state of a tiny net; the "mean" samples
against the downward mean recursion. Every bad input a one-line error.
"""

import itertools
import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import ppl_models
from ppl_models import catalogue
from ppl_models.cli import main
from tests.cli_util import run_cli
from ppl_models.data import load_dataset
from ppl_models.errors import DataError, SpecError

TINY = ["--dataset", "digits", "--no-progress", "--lr", "0.02", "--set", "model.hidden=[32,16]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "dcim")
    assert main(["train", "dcim", *TINY, "--epochs", "4", "--objective", "generative", "--arch", "dense",
                 "--out", out]) == 0
    return out


def test_spec_lists_the_dcim_keys(capsys):
    code, out, _ = run_cli(capsys, "spec", "dcim", "--json")
    spec = json.loads(out)
    assert code == 0 and spec["family"] == "dcim" and spec["model"]["arch"] == "dense"
    assert spec["objective"]["name"] == "generative" and spec["objective"]["reverse_weight"] == "pixel_mean"
    code, out, _ = run_cli(capsys, "list")
    assert "dcim" in out


def test_train_writes_a_complete_model_directory(trained):
    assert sorted(os.listdir(trained)) == ["checkpoint.pt", "metrics.json", "model.pt", "samples.png",
                                           "spec.json", "training_curve.png"]
    spec = json.load(open(os.path.join(trained, "spec.json")))
    assert spec["model"]["input_shape"] == [64] and spec["model"]["n_classes"] == 10  # resolved from the data
    m = json.load(open(os.path.join(trained, "metrics.json")))
    assert m["family"] == "dcim" and m["image_shape"] == [8, 8] and len(m["history"]) == 4
    assert m["test_images"] == 297 and m["reverse_weighting"] == "pixel_mean"
    assert m["test_accuracy"] > 0.6  # 4 epochs of a 64-32-16-10 net; chance is 0.1
    assert 0 < m["test_reverse_loss_per_pixel"] < math.log(2)  # better than a fair coin per pixel
    assert m["test_reverse_loss_per_image"] == pytest.approx(64 * m["test_reverse_loss_per_pixel"])
    assert all(0 <= h["valid_accuracy"] <= 1 for h in m["history"])
    for png in ("samples.png", "training_curve.png"):
        assert open(os.path.join(trained, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_with_particles_and_class_samples(trained, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "evaluate", trained, "--particles", "20", "--no-progress")
    assert code == 0 and "test accuracy" in out and "nats/pixel" in out and "k=20" in out
    m = json.load(open(os.path.join(trained, "metrics.json")))
    # log p(x|y) >= its IS estimate in expectation; the mean recursion is not a bound, but both are
    # per-image reverse NLLs of binary 8x8 images and must lie in (0, 64 log 2)
    assert 0 < m["test_reverse_nll"] < 64 * math.log(2) and m["eval_particles"] == 20
    grid = str(tmp_path / "three.png")
    code, out, _ = run_cli(capsys, "sample", trained, "--class", "3", "-n", "16", "-o", grid)
    assert code == 0 and open(grid, "rb").read(4) == b"\x89PNG"
    model = ppl_models.load(trained)
    mean = model.sample(4, mode="mean", **{"class": 3})
    expected = model.module.down_means(torch.tensor([3]))[0].reshape(1, -1)
    torch.testing.assert_close(mean, expected.expand(4, -1))
    torch.manual_seed(0)
    top = model.sample(2000, **{"class": 3})  # last hidden layer sampled, probabilities down
    assert top.shape == (2000, 64) and 0 <= float(top.min()) and float(top.max()) <= 1
    assert not torch.allclose(top[0], top[1])  # the hidden sample varies


@pytest.mark.parametrize("objective", ["discriminative", "alternative", "elbo", "rws", "wake_sleep"])
def test_every_objective_trains(objective, tmp_path, capsys):
    out = str(tmp_path / objective)
    code, stdout, err = run_cli(capsys, "train", "dcim", *TINY, "--epochs", "1", "--objective", objective,
                                "--out", out)
    assert code == 0, err
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["objective"] == objective and math.isfinite(m["history"][0]["train_loss"])
    assert m["reverse_weighting"] == {"discriminative": "none (no reverse term)", "alternative": "pixel_mean",
                                      "elbo": "elbo", "rws": "rws", "wake_sleep": "wake_sleep"}[objective]
    code, stdout, err = run_cli(capsys, "evaluate", out)
    assert code == 0, err
    sampled = objective in ("elbo", "rws", "wake_sleep")  # these also classify by forward samples
    assert ("when classifying by 20 forward samples" in stdout) == sampled


def test_custom_conv_architecture_and_resume(tmp_path, capsys):
    out = str(tmp_path / "conv")
    layers = '[{"kind": "conv", "units": 4, "window": 3}, {"kind": "dense", "units": 8}]'
    args = ["train", "dcim", *TINY, "--arch", "custom", "--set", f"model.layers={layers}", "--out", out]
    assert run_cli(capsys, *args, "--epochs", "1")[0] == 0
    assert json.load(open(os.path.join(out, "spec.json")))["model"]["input_shape"] == [1, 8, 8]
    code, _, err = run_cli(capsys, *args, "--epochs", "2")
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert code == 0 and m["resumed_from_epoch"] == 1 and len(m["history"]) == 2


def test_rws_run_resumed_after_an_epoch_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, capsys):
    # RWS draws forward samples and dreams every step: the resumed run must continue the same random streams
    args = ["train", "dcim", *TINY, "--objective", "rws", "--set", "objective.insomnia=0.5"]
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    assert run_cli(capsys, *args, "--epochs", "2", "--out", whole)[0] == 0
    assert run_cli(capsys, *args, "--epochs", "1", "--out", split)[0] == 0
    assert run_cli(capsys, *args, "--epochs", "2", "--out", split)[0] == 0
    a = torch.load(os.path.join(whole, "model.pt"), weights_only=False)
    b = torch.load(os.path.join(split, "model.pt"), weights_only=False)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cnn_resolves_the_paper_shapes_on_mnist_sized_images():
    spec = catalogue.make_spec("dcim", overrides=["model.arch=cnn"])
    data = SimpleNamespace(train=SimpleNamespace(x=torch.zeros(3, 784), y=torch.tensor([0, 9, 4])),
                           valid=None, test=SimpleNamespace(x=torch.zeros(1, 784), y=torch.tensor([1])),
                           image_shape=(28, 28))
    catalogue.family("dcim").resolve(spec, data)
    assert spec.model.input_shape == [1, 28, 28] and spec.model.n_classes == 10
    shapes = catalogue.family("dcim").build(spec).layer_shapes
    assert shapes[1:] == [(32, 26, 26), (32, 24, 24), (32, 12, 12), (64, 10, 10), (64, 8, 8), (64, 4, 4), (50,), (10,)]


def test_reverse_nll_matches_enumeration():
    """IS with the forward model as proposal against exact -log p(x|y) summed over all 2^4 * 2^3 hidden states."""
    spec = catalogue.make_spec("dcim", overrides=["model.hidden=[4,3]", "dataset=digits", "train.device=cpu"])
    data = load_dataset("digits", test_size=20)
    catalogue.family("dcim").resolve(spec, data)
    torch.manual_seed(1)
    module = catalogue.family("dcim").build(spec)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(3.0)  # a peaked, far-from-uniform model
    trained = SimpleNamespace(spec=spec, module=module, metrics={})
    metrics = catalogue.family("dcim").evaluate(trained, data, num_particles=3000)
    x, y = data.test.x, data.test.y
    h1 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    h2 = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    with torch.no_grad():
        onehot = F.one_hot(y, 10).float()
        log_h2 = -F.binary_cross_entropy_with_logits(  # (N, 8)
            module.logits_down(3, onehot)[:, None, :].expand(-1, 8, -1), h2.expand(len(y), -1, -1),
            reduction="none").sum(-1)
        log_h1 = -F.binary_cross_entropy_with_logits(  # (8, 16)
            module.logits_down(2, h2)[:, None, :].expand(-1, 16, -1), h1.expand(8, -1, -1), reduction="none").sum(-1)
        log_x = -F.binary_cross_entropy_with_logits(  # (N, 16)
            module.logits_down(1, h1)[None].expand(len(y), -1, -1), x[:, None, :].expand(-1, 16, -1),
            reduction="none").sum(-1)
        exact = torch.logsumexp(log_h2[:, :, None] + log_h1[None] + log_x[:, None, :], dim=(1, 2))
    assert metrics["test_reverse_nll"] == pytest.approx(-float(exact.mean()), abs=0.05)
    assert metrics["test_reverse_nll"] >= -float(exact.mean()) - 0.01  # the IS estimate is a lower bound on log p


def test_bad_inputs_are_one_line_errors(capsys, tmp_path, trained):
    cases = [
        (["train", "dcim", "--objective", "ml"], "objective.name must be one of"),
        (["train", "dcim", "--dataset", "digits", "--arch", "cnn"], "model.arch=cnn on images of shape [1, 8, 8]"),
        (["train", "dcim", "--dataset", "digits", "--set", "model.n_classes=5"], "labels up to 9 but model.n_classes is 5"),
        (["train", "dcim", "--dataset", "digits", "--arch", "wide"], "model.arch must be one of"),
        (["train", "dcim", "--dataset", "digits", "--objective", "alternative", "--set", "model.hidden=[8]",
          "--set", "objective.layer=2"], "objective.layer must be a hidden layer index in 1..1"),
        (["train", "dcim", "--set", "objective.layer=1"], "used by the alternative objective only"),
        (["train", "dcim", "--set", "objective.num_particles=5"], "used by the elbo and rws objectives only"),
        (["train", "dcim", "--objective", "rws", "--set", "objective.insomnia=1.5"], "objective.insomnia must be <= 1.0"),
        (["train", "dcim", "--objective", "elbo", "--set", "objective.insomnia=0.5"], "rws and wake_sleep objectives only"),
        (["train", "dcim", "--set", "model.hidden=[]"], "at least one hidden layer"),
        (["train", "dcim", "--dataset", "digits", "--set", "model.input_shape=[7,9]"], "has 64 pixels per image"),
        (["sample", trained, "--class", "10"], "class must be a class index in 0..9, got 10"),
    ]
    for i, (argv, message) in enumerate(cases):
        out_dir = str(tmp_path / f"bad{i}")
        argv = argv + (["--out", out_dir, "--epochs", "1", "--no-progress"] if argv[0] == "train" else [])
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
        assert not os.path.exists(out_dir)  # nothing written before the error


def test_labels_missing_or_negative():
    spec = catalogue.make_spec("dcim")
    split = SimpleNamespace(x=torch.zeros(2, 784), y=None)
    with pytest.raises(DataError, match="has no labels in its train split"):
        catalogue.family("dcim").resolve(spec, SimpleNamespace(train=split, valid=None, test=split, image_shape=(28, 28)))
    split = SimpleNamespace(x=torch.zeros(2, 784), y=torch.tensor([0, -1]))
    with pytest.raises(DataError, match="negative label"):
        catalogue.family("dcim").resolve(spec, SimpleNamespace(train=split, valid=None, test=split, image_shape=(28, 28)))
    with pytest.raises(SpecError, match="mode must be one of"):
        catalogue.family("dcim").sample(SimpleNamespace(module=catalogue.family("dcim").build(spec)), 2, mode="best")
