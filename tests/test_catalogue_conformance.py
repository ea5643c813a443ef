"""Every registered family honours the family interface end to end, with tiny settings on the digits data.

For each family: train; a run killed after its first epoch and resumed ends with the same parameters, bit
for bit, as an uninterrupted one; evaluate, sample (PNG and tensors), load, posterior and log-likelihood
through the loaded model; the spec round-trips through JSON and ``--describe`` shows the family's own
defaults; bad input is a one-line error that writes nothing. A family missing from TINY fails the suite.
"""

import json
import os

import pytest
import torch

import ppl_models
import ppl_models.catalogue.directed as directed_base
import ppl_models.catalogue.energy as energy_base
from ppl_models import catalogue
from ppl_models.data import load_dataset
from ppl_models.specs import to_dict
from tests.cli_util import run_cli

COMMON = ["--dataset", "digits", "--no-progress", "--seed", "3"]
TINY = {
    "vae": ["--set", "model.hidden=[16]", "--set", "z_dim=2", "--eval-particles", "10"],
    "iwae": ["--set", "model.hidden=[16]", "--set", "z_dim=2", "--eval-particles", "10"],
    "dcim": ["--lr", "0.02", "--set", "model.hidden=[12,8]", "--objective", "rws"],
    "rbm": ["--set", "model.num_hidden=6", "--set", "train.ais_temperatures=200", "--set", "train.sample_sweeps=10",
            "--eval-particles", "10", "--set", "train.lr_schedule=constant"],
    "gbrbm": ["--set", "model.num_hidden=6", "--set", "train.ais_temperatures=200", "--set", "train.sample_sweeps=10",
              "--eval-particles", "10", "--set", "train.lr_schedule=constant"],
    "mixture": ["--set", "model.num_components=4"],
    # NVIL: its baseline network and running statistics ride in the checkpoint; 9 hidden bits: scored exactly too
    "sbn": ["--set", "model.hidden=[6,3]", "--lr", "0.01", "--eval-particles", "10"],
    "nade": ["--set", "model.hidden=3", "--lr", "0.01"],
    "fvsbn": ["--lr", "0.01"],
    # implicit models: the discriminator rides in the checkpoint; latent AIS with a fixed sigma, few temperatures
    "gan": ["--set", "model.generator_hidden=[8]", "--set", "model.discriminator_hidden=[8]", "--set", "z_dim=3",
            "--eval-particles", "2", "--set", "train.ais_temperatures=10", "--set", "train.ais_images=5",
            "--set", "train.ais_sigma=0.2", "--set", "train.mmd_images=50", "--set", "train.mmd_permutations=20"],
    "gmmn": ["--set", "model.hidden=[8]", "--set", "z_dim=3", "--batch-size", "100", "--eval-particles", "2",
             "--set", "train.ais_temperatures=10", "--set", "train.ais_images=5", "--set", "train.ais_sigma=0.2",
             "--set", "train.mmd_images=50", "--set", "train.mmd_permutations=20"],
    "dbn": ["--set", "model.hidden=[6,4]", "--set", "train.ais_temperatures=200", "--set", "train.sample_sweeps=10",
            "--eval-particles", "10", "--set", "train.lr_schedule=constant"],
    "fvbm": ["--set", "train.ais_temperatures=200", "--set", "train.sample_sweeps=10", "--eval-particles", "10",
             "--set", "train.lr_schedule=constant"],
    # pretraining (two resumable RBM checkpoints) then joint training; 6 odd-layer units: scored exactly too
    "dbm": ["--set", "model.hidden=[6,4]", "--set", "pretrain.epochs=[1,1]", "--set", "train.ais_temperatures=200",
            "--set", "train.sample_sweeps=10", "--eval-particles", "10", "--set", "train.lr_schedule=constant"],
    "dae": ["--set", "model.hidden=[8]", "--eval-particles", "20", "--set", "train.chain_steps=5",
            "--set", "train.mmd_permutations=20"],
}


def test_every_registered_family_is_checked_here():
    assert set(TINY) == set(catalogue.FAMILIES), "add the new family to TINY with settings that train in seconds"


def _train(capsys, name, out, epochs):
    code, stdout, err = run_cli(capsys, "train", name, *COMMON, *TINY[name], "--epochs", str(epochs), "--out", out)
    assert code == 0, err
    return stdout


def _weights(directory):
    return torch.load(os.path.join(directory, "model.pt"), weights_only=False)


@pytest.mark.parametrize("name", sorted(TINY))
def test_train_resume_evaluate_sample_load(name, capsys, tmp_path, monkeypatch):
    fam = catalogue.family(name)
    whole = str(tmp_path / "whole")
    stdout = _train(capsys, name, whole, 3)
    assert fam.summary_line(json.load(open(os.path.join(whole, "metrics.json")))) in stdout

    # killed at the end of epoch 2, before its checkpoint: resumes from epoch 1
    killed = str(tmp_path / "killed")
    for base in (directed_base, energy_base):
        real_fit = base.fit

        def fit_killed(*args, real_fit=real_fit, **kwargs):
            def stop(metrics):
                if metrics["epoch"] == 2:
                    raise KeyboardInterrupt
            return real_fit(*args, **{**kwargs, "on_epoch_end": stop})

        monkeypatch.setattr(base, "fit", fit_killed)
    code, _, err = run_cli(capsys, "train", name, *COMMON, *TINY[name], "--epochs", "3", "--out", killed)
    assert code == 130 and "run the same command again to resume" in err
    assert not os.path.exists(os.path.join(killed, "model.pt"))
    monkeypatch.undo()
    _train(capsys, name, killed, 3)
    a, b = _weights(whole), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    history = json.load(open(os.path.join(killed, "metrics.json")))["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    # evaluate and sample through the CLI
    code, out, err = run_cli(capsys, "evaluate", whole, "--no-progress")
    assert code == 0 and out.strip(), err
    png = str(tmp_path / "s.png")
    code, out, err = run_cli(capsys, "sample", whole, "-n", "6", "-o", png)
    assert code == 0 and open(png, "rb").read(4) == b"\x89PNG", err

    # the loaded model answers the same questions from Python
    trained = ppl_models.load(whole)
    assert trained.family is fam and isinstance(trained.module, torch.nn.Module)
    test = load_dataset("digits", binarize=trained.spec.data.binarize).test.x[:5]
    images = trained.sample(4)
    assert images.shape == (4, 64) and float(images.min()) >= 0 and float(images.max()) <= 1
    ll = trained.log_likelihood(test)
    assert ll.shape == (5,) and bool(torch.isfinite(ll).all())
    if trained.spec.data.binarize != "none":
        assert float(ll.max()) <= 1e-6  # log-probabilities of binary images
    if name in ("gan", "gmmn"):  # an implicit model has no likelihood of its own: no posterior, said in one line
        with pytest.raises(ppl_models.SpecError, match="has no posterior"):
            trained.posterior(test)
    else:
        posterior = trained.posterior(test)
        assert posterior and all(torch.is_tensor(v) and 5 in tuple(v.shape[:2]) for v in posterior.values())

    # the spec round-trips, and --describe shows this family's defaults
    spec = catalogue.make_spec(spec=json.load(open(os.path.join(whole, "spec.json"))))
    assert to_dict(spec) == to_dict(trained.spec)
    code, out, _ = run_cli(capsys, "spec", name, "--json")
    default = json.loads(out)
    assert to_dict(catalogue.make_spec(spec=default)) == default
    code, out, _ = run_cli(capsys, "spec", name, "--describe")
    for line in out.splitlines():
        key, value = line.split()[:2]
        node = default
        for part in key.split("."):
            node = node[part]
        assert json.loads(value) == node, (name, key)


@pytest.mark.parametrize("name", sorted(TINY))
def test_bad_input_is_a_one_line_error_that_writes_nothing(name, capsys, tmp_path):
    cases = [
        (["--set", "model.no_such_key=1"], "unknown spec key"),
        (["--batch-size", "0"], "train.batch_size must be >= 1"),
        (["--lr", "nan"], "train.lr must be finite"),
        (["--device", "tpu"], "unknown device"),
        (["--dataset", "cifar"], "data.dataset must be one of"),
        (["--set", "train.momentum=1.5"], "train.momentum must lie in [0, 1)"),
    ]
    for i, (argv, message) in enumerate(cases):
        out = str(tmp_path / f"bad{i}")
        code, _, err = run_cli(capsys, "train", name, *COMMON, *TINY[name], *argv, "--epochs", "1", "--out", out)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (name, argv, err)
        assert not os.path.exists(out)


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_damaged_run_directory_is_a_one_line_error(name, capsys, tmp_path):
    run = str(tmp_path / "run")
    _train(capsys, name, run, 1)
    with open(os.path.join(run, "model.pt"), "wb") as f:
        f.write(b"\x00" * 10)
    code, _, err = run_cli(capsys, "evaluate", run, "--no-progress")
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "sample", run, "-n", "0")
    assert code == 2 and "positive" in err
    with open(os.path.join(run, "checkpoint.pt"), "wb") as f:
        torch.save({"epoch": 1}, f)  # a checkpoint from before the versioned format
    code, _, err = run_cli(capsys, "train", name, *COMMON, *TINY[name], "--epochs", "2", "--out", run)
    assert code == 2 and "delete it to train from scratch" in err and len(err.strip().splitlines()) == 1


def test_dbm_passes_objective_fused_sgd_to_both_of_its_contrastive_divergences(capsys, tmp_path, monkeypatch):
    """The dbm family builds its CDs inline (each pretraining RBM's, then the joint one): all take the switch."""
    import ppl_models.catalogue.dbm as dbm_family
    from inference.contrastive_divergence import ContrastiveDivergence

    seen = []

    class Recording(ContrastiveDivergence):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.fused_sgd)

    monkeypatch.setattr(dbm_family, "ContrastiveDivergence", Recording)
    for value in ("true", "false"):
        seen.clear()
        code, _, err = run_cli(capsys, "train", "dbm", *COMMON, *TINY["dbm"], "--epochs", "1", "--set", "train.momentum=0",
                               "--set", "train.weight_decay=0", "--set", f"objective.fused_sgd={value}",
                               "--out", str(tmp_path / value))
        assert code == 0, err
        assert seen == [value == "true"] * 3, (value, seen)  # two pretraining RBMs, then joint training


@pytest.mark.parametrize("name, overrides, folded", [
    ("gbrbm", (), True),  # momentum 0.9, no weight decay: the momentum is folded too
    ("rbm", (), False),  # weight decay on the couplings: the optimiser's step
    ("rbm", ("train.weight_decay=0",), True),
    ("rbm", ("train.weight_decay=0", "objective.fused_sgd=false"), False),
])
def test_family_defaults_take_the_folded_step_exactly_when_sgd_has_no_weight_decay(capsys, tmp_path, monkeypatch,
                                                                                   name, overrides, folded):
    from inference.contrastive_divergence import ContrastiveDivergence

    calls = []
    step = ContrastiveDivergence.sgd_step
    monkeypatch.setattr(ContrastiveDivergence, "sgd_step", lambda self, *a, **k: calls.append(k) or step(self, *a, **k))
    sets = [arg for o in overrides for arg in ("--set", o)]
    code, _, err = run_cli(capsys, "train", name, *COMMON, *TINY[name], "--epochs", "1", *sets, "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert bool(calls) is folded, (name, overrides)
    if folded and name == "gbrbm":
        assert calls[0]["momentum"] == 0.9


@pytest.mark.parametrize("name", ["rbm", "gbrbm", "fvbm", "dbn"])
def test_objective_fused_sgd_reaches_contrastive_divergence(name):
    """``objective.fused_sgd`` (on by default) is what the family's CD objective is built with: the model
    file's switch between the folded plain-SGD update and the optimiser's."""
    for overrides, expected in (((), True), (("objective.fused_sgd=false",), False)):
        spec = catalogue.make_spec(name, overrides=("model.num_visible=6", *overrides))
        fam = catalogue.family(name)
        module = fam.build(spec) if name != "dbn" else fam.build(spec).rbms[0]
        assert fam.make_objective(spec, module).fused_sgd is expected, (name, overrides)
