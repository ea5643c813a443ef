"""The command line end to end with tiny settings, and every bad input as a one-line error."""

import json
import os
import subprocess
import sys

import pytest
import torch

import ppl_models
from ppl_models.cli import main
from tests.cli_util import run_cli

TINY = ["--dataset", "digits", "--epochs", "2", "--eval-particles", "20", "--no-progress",
        "--set", "model.hidden=[16]", "--set", "z_dim=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "vae")
    assert main(["train", "vae", *TINY, "--out", out]) == 0
    return out


def test_list_and_spec(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "vae" in out and "iwae" in out
    code, out, _ = run_cli(capsys, "spec", "iwae", "--json")
    spec = json.loads(out)
    assert spec["family"] == "iwae" and spec["objective"] == {"name": "iwae", "num_particles": 5, "dreg": False, "replay": True}
    code, out, _ = run_cli(capsys, "spec", "vae", "--describe")
    assert "model.z_dim" in out and "train.epochs" in out


def test_train_writes_a_complete_model_directory(trained, capsys):
    assert sorted(os.listdir(trained)) == ["checkpoint.pt", "metrics.json", "model.pt", "samples.png",
                                           "spec.json", "test_log_likelihood.pt", "training_curve.png"]
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert metrics["eval_particles"] == 20 and metrics["test_images"] == 297
    assert 0 < metrics["test_nll"] < 64 * 0.7 and len(metrics["history"]) == 2  # below a fair coin per pixel
    for png in ("samples.png", "training_curve.png"):
        assert open(os.path.join(trained, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    model = ppl_models.load(trained)
    assert model.spec.model.z_dim == 2 and model.sample(5).shape == (5, 64)


def test_evaluate_and_sample(trained, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "evaluate", trained, "--particles", "30", "--no-progress")
    assert code == 0 and "k=30" in out and "nats/image" in out
    grid = str(tmp_path / "grid.png")
    code, out, _ = run_cli(capsys, "sample", trained, "-n", "9", "-o", grid)
    assert code == 0 and open(grid, "rb").read(4) == b"\x89PNG"


def test_rerun_same_command_resumes_without_retraining(trained, capsys):
    before = json.load(open(os.path.join(trained, "metrics.json")))["history"]
    code, out, _ = run_cli(capsys, "train", "vae", *TINY, "--out", trained)
    assert code == 0
    assert json.load(open(os.path.join(trained, "metrics.json")))["history"] == before


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "ppl_models", "train", "nosuchmodel"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("ppl-models: error: unknown model 'nosuchmodel'; the catalogue has: vae, iwae")


def write_corrupt_mnist(directory):
    os.makedirs(directory, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"\x1f\x8b\x08\x00garbage-not-deflate")


BAD = {
    "unknown model": (["train", "flow"], "unknown model 'flow'"),
    "unknown spec key": (["train", "vae", "--set", "model.zdim=3"], "unknown spec key 'model.zdim'"),
    "ill-typed value": (["train", "vae", "--set", "z_dim=abc"], "spec.model.z_dim must be an integer"),
    "unknown dataset": (["train", "vae", "--dataset", "cifar"], "spec.data.dataset must be one of"),
    "zero epochs": (["train", "vae", "--epochs", "0"], "spec.train.epochs must be >= 1"),
    "zero batch": (["train", "vae", "--batch-size", "0"], "spec.train.batch_size must be >= 1"),
    "negative batch": (["train", "vae", "--batch-size", "-5"], "spec.train.batch_size must be >= 1"),
    "missing data": (["train", "vae", "--dataset", "fashion-mnist", "--data-path", "/nonexistent/dir"], "/nonexistent/dir"),
    "grey data to bernoulli": (["train", "vae", "--dataset", "digits", "--set", "binarize=none"], "needs binary data"),
    "dreg without iwae": (["train", "vae", "--set", "objective.dreg=true"], "dreg=true needs objective.name=iwae"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_error(case, capsys, tmp_path):
    argv, message = BAD[case]
    code, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "run"), "--no-progress")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ppl-models: error: ") and message in err, err
    assert not os.path.exists(tmp_path / "run" / "model.pt")


def test_corrupt_gzip_is_one_line_error(capsys, tmp_path):
    write_corrupt_mnist(tmp_path / "mnist")
    code, _, err = run_cli(capsys, "train", "vae", "--dataset", "mnist", "--data-path", str(tmp_path / "mnist"),
                           "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1 and "t10k-images-idx3-ubyte.gz" in err, err


def test_directory_with_another_model_is_refused_and_untouched(trained, capsys):
    files = {f: open(os.path.join(trained, f), "rb").read() for f in os.listdir(trained)}
    code, _, err = run_cli(capsys, "train", "vae", *TINY, "--set", "z_dim=3", "--out", trained)
    assert code == 2 and "already holds a different model (model.z_dim: 2 there, 3 now)" in err
    assert {f: open(os.path.join(trained, f), "rb").read() for f in os.listdir(trained)} == files


def test_foreign_directory_is_refused(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "vae", *TINY, "--out", str(tmp_path))
    assert code == 2 and "not a ppl-models run directory" in err
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_corrupt_weights_and_spec_are_one_line_errors(trained, capsys, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(trained, copy)
    with open(os.path.join(copy, "model.pt"), "wb") as f:
        f.write(b"\x00" * 10)
    code, _, err = run_cli(capsys, "evaluate", copy)
    assert code == 2 and "corrupt" in err and err.count("\n") == 1
    with open(os.path.join(copy, "spec.json"), "w") as f:
        f.write("{not json")
    code, _, err = run_cli(capsys, "sample", copy)
    assert code == 2 and "not valid JSON" in err


def test_killed_training_resumes_from_checkpoint_to_the_same_model(capsys, tmp_path, monkeypatch):
    import ppl_models.catalogue.directed as driver  # the directed base's reference to inference.training.fit

    full = str(tmp_path / "full")
    assert main(["train", "vae", *TINY, "--epochs", "3", "--out", full]) == 0
    killed = str(tmp_path / "killed")
    real_fit = driver.fit

    def fit_killed_after_two_epochs(*args, **kwargs):
        def stop(metrics):
            if metrics["epoch"] == 2:
                raise KeyboardInterrupt
        return real_fit(*args, **{**kwargs, "on_epoch_end": stop})

    monkeypatch.setattr(driver, "fit", fit_killed_after_two_epochs)
    code, _, err = run_cli(capsys, "train", "vae", *TINY, "--epochs", "3", "--out", killed)
    assert code == 130 and "run the same command again to resume" in err
    assert not os.path.exists(os.path.join(killed, "model.pt"))
    monkeypatch.setattr(driver, "fit", real_fit)
    assert main(["train", "vae", *TINY, "--epochs", "3", "--out", killed]) == 0
    a = torch.load(os.path.join(full, "model.pt"))
    b = torch.load(os.path.join(killed, "model.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_directory_from_before_the_unified_train_section_is_still_the_same_model(capsys, tmp_path, trained):
    """spec.json written before train.optimizer / momentum / weight_decay / lr_final existed: evaluate, sample and
    train again all accept it as the same model (its missing keys take the defaults it was trained with)."""
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(trained, old)
    spec = json.load(open(os.path.join(old, "spec.json")))
    for key in ("optimizer", "momentum", "weight_decay", "lr_final"):
        del spec["train"][key]
    json.dump(spec, open(os.path.join(old, "spec.json"), "w"))
    assert run_cli(capsys, "evaluate", old, "--no-progress")[0] == 0
    code, out, err = run_cli(capsys, "train", "vae", *TINY, "--out", old)
    assert code == 0 and "test NLL" in out, err


def _estimator_groups(help_text: str) -> dict:
    """{kind: [(choices, families text)]} of --estimator's help: 'log_prob: a|b (x, y); c|d (z); posterior: ...'."""
    import re
    groups = {}
    for kind, body in re.findall(r"(log_prob|posterior): (.*?)(?=; (?:log_prob|posterior):|; any other|$)", help_text):
        groups[kind] = [(tuple(c.split("|")), fams) for c, fams in re.findall(r"([a-z_]+(?:\|[a-z_]+)+) \(([^)]*)\)", body)]
    return groups


def test_estimator_help_names_each_familys_own_choices(capsys):
    """The help is checked against the families: each family's estimator choices (as its query refuses a wrong
    one) are those of the group that names it, or, for posterior, of the 'every other family' group."""
    import inspect
    import re

    from ppl_models import catalogue
    from ppl_models.cli import ESTIMATOR_HELP
    from ppl_models.errors import SpecError
    code, out, _ = run_cli(capsys, "query", "--help")
    assert code == 0 and "per family: log_prob:" in " ".join(out.split()), out
    groups = _estimator_groups(ESTIMATOR_HELP)
    assert set(groups) == {"log_prob", "posterior"}, groups
    for name, fam in catalogue.FAMILIES.items():
        for kind in ("log_prob", "posterior"):
            method = getattr(fam, f"query_{kind}")
            named = [c for c, fams in groups[kind] if re.search(rf"\b{name}\b", fams.split(";")[0])]
            if "estimator" not in inspect.signature(method).parameters:
                assert not named, f"{name} {kind} takes no estimator but the help names it"
                continue
            with pytest.raises(SpecError) as info:
                method(None, None, estimator="not-an-estimator")
            own = tuple(re.match(r"estimator must be one of (.*), got", str(info.value)).group(1).split(", "))
            if not named and kind == "posterior":
                named = [c for c, fams in groups[kind] if "every other family" in fams]
            assert named == [own], (name, kind, named, own)
