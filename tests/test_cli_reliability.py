"""The CLI as a user meets it: every failure one line on stderr with exit status 2 and no traceback, nothing
already written changed, results written where asked and only there, a locked run directory, readable files.

Each case records the bytes of every file under the working directory before the call and checks them
after it (``unchanged``), so "nothing lost" is tested, not assumed.
"""

import errno
import json
import os
import stat

import pytest

from ppl_models import catalogue
from ppl_models.catalogue.run_directory import RunDirectory
from ppl_models.errors import SpecError
from ppl_models.cli import main
from tests.cli_util import run_cli

TINY = ["--dataset", "digits", "--epochs", "1", "--eval-particles", "5", "--no-progress",
        "--set", "model.hidden=[8]", "--set", "z_dim=2"]
RBM_TINY = ["--dataset", "digits", "--epochs", "1", "--no-progress", "--set", "model.num_hidden=6",
            "--set", "train.ais_temperatures=50", "--set", "train.sample_sweeps=5", "--eval-particles", "6"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "vae")
    assert main(["train", "vae", *TINY, "--out", out]) == 0
    return out


def snapshot(root) -> dict:
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def one_line_error(code, err, message=""):
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and "Traceback" not in err and message in err


def _parse_exit(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_argument_errors_are_one_line_with_the_flag(capsys, trained):
    before = snapshot(trained)
    for argv, message in [
        (["evaluate", trained, "--particles", "-5"], "--particles: must be a positive integer, got '-5'"),
        (["evaluate", trained, "--particles", "0"], "--particles: must be a positive integer, got '0'"),
        (["sample", trained, "-n", "zero"], "-n: must be a positive integer"),
        # found by the long fuzz run: 10**20 particles ran its chunks for ever instead of being refused
        (["evaluate", trained, "--particles", "99999999999999999999"], "--particles: must be at most 2147483647"),
        (["query", trained, "log_prob", "--particles", "2147483648"], "--particles: must be at most 2147483647"),
        (["train", "vae", "--epochs", "many"], "--epochs: invalid int value"),
        (["train"], "the following arguments are required: model"),
        (["frobnicate"], "invalid choice"),
        (["evaluate", trained, "--temperatures", "100", "--no-progress"], "vae evaluation takes no --temperatures"),
    ]:
        code, _, err = _parse_exit(capsys, argv)
        assert one_line_error(code, err, message), (argv, err)
    assert snapshot(trained) == before


def test_paths_of_the_wrong_kind(capsys, tmp_path, trained):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    spec_list = tmp_path / "spec.json"
    spec_list.write_text("[1, 2]")
    before = snapshot(tmp_path) | snapshot(trained)
    for argv, message in [
        (["train", "vae", *TINY, "--out", str(a_file)], "is a file, not a run directory"),
        (["sample", trained, "-o", str(tmp_path)], "is a directory"),
        (["sample", trained, "-o", str(tmp_path / "grid.bmp")], "unknown format '.bmp'"),
        (["evaluate", trained, "-o", str(tmp_path), "--no-progress"], "is a directory"),
        (["train", "vae", *TINY, "--spec", str(spec_list), "--out", str(tmp_path / "x")], "a spec must be a mapping"),
        (["evaluate", str(tmp_path / "missing")], "does not exist"),
    ]:
        code, _, err = _parse_exit(capsys, argv)
        assert one_line_error(code, err, message), (argv, err)
    assert snapshot(tmp_path) | snapshot(trained) == before
    assert not (tmp_path / "x").exists()


def test_weights_of_another_architecture(capsys, tmp_path, trained):
    other = str(tmp_path / "other")
    assert main(["train", "vae", *TINY, "--set", "z_dim=3", "--out", other]) == 0
    swapped = str(tmp_path / "swapped")
    os.makedirs(swapped)
    for name in ("spec.json", "metrics.json"):
        open(os.path.join(swapped, name), "wb").write(open(os.path.join(trained, name), "rb").read())
    open(os.path.join(swapped, "model.pt"), "wb").write(open(os.path.join(other, "model.pt"), "rb").read())
    before = snapshot(swapped)
    for argv in (["evaluate", swapped, "--no-progress"], ["sample", swapped, "-o", str(tmp_path / "s.png")]):
        code, _, err = run_cli(capsys, *argv)
        assert one_line_error(code, err, "does not fit this version's VAE"), err
    assert snapshot(swapped) == before


def test_a_read_only_file_system_is_one_line_and_evaluate_still_scores(capsys, tmp_path, trained, monkeypatch):
    import inference.fileio
    import ppl_models.catalogue.run_directory as run_directory

    before = snapshot(trained)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir") or trained)

    monkeypatch.setattr(inference.fileio.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(run_directory.os, "access", lambda path, mode: False)
    code, out, err = run_cli(capsys, "evaluate", trained, "--no-progress")
    assert code == 0 and "test NLL" in out and "not writable" in out, err
    for argv in (["sample", trained, "-o", os.path.join(trained, "again.png")],
                 ["train", "vae", *TINY, "--out", str(tmp_path / "new")]):
        code, _, err = run_cli(capsys, *argv)
        assert one_line_error(code, err, "Read-only file system"), (argv, err)
    monkeypatch.undo()
    assert snapshot(trained) == before


def test_evaluate_writes_where_asked_and_only_there(capsys, tmp_path, trained):
    before = snapshot(trained)
    out = tmp_path / "scores.json"
    code, stdout, err = run_cli(capsys, "evaluate", trained, "--particles", "3", "--seed", "5", "-o", str(out),
                                "--no-progress")
    assert code == 0, err
    assert json.loads(out.read_text())["eval_particles"] == 3
    assert snapshot(trained) == before  # the run itself untouched


def test_image_formats_by_extension_and_readable_modes(capsys, tmp_path, trained):
    old = os.umask(0o022)
    try:
        for name, magic in (("s.png", b"\x89PNG"), ("s.jpg", b"\xff\xd8"), ("s.pdf", b"%PDF"), ("s.svg", b"<?xml")):
            path = tmp_path / name
            code, _, err = run_cli(capsys, "sample", trained, "-n", "4", "-o", str(path))
            assert code == 0, err
            assert path.read_bytes()[: len(magic)] == magic, name
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(os.path.join(trained, "metrics.json")).st_mode) & 0o044  # others can read


def test_a_second_writer_is_refused_with_the_holders_pid(capsys, tmp_path):
    out = str(tmp_path / "run")
    with RunDirectory(out).lock():
        code, _, err = run_cli(capsys, "train", "vae", *TINY, "--out", out)
    assert one_line_error(code, err, f"being written by another process (PID {os.getpid()})"), err
    assert run_cli(capsys, "train", "vae", *TINY, "--out", out)[0] == 0  # free again


def test_resume_and_rerun_say_what_they_do(capsys, tmp_path):
    out = str(tmp_path / "run")
    code, stdout, _ = run_cli(capsys, "train", "vae", *TINY, "--out", out)
    assert code == 0 and "for 1 epoch ->" in stdout  # not "1 epochs"
    metrics = open(os.path.join(out, "metrics.json"), "rb").read()
    code, stdout, _ = run_cli(capsys, "train", "vae", *TINY, "--out", out)
    assert code == 0 and "already holds this model" in stdout and "training vae" not in stdout
    assert open(os.path.join(out, "metrics.json"), "rb").read() == metrics  # not evaluated again
    code, stdout, _ = run_cli(capsys, "train", "vae", *[a if a != "1" else "2" for a in TINY], "--out", out)
    assert code == 0 and "resuming from the checkpoint of epoch 1" in stdout and "1 epoch to go" in stdout


def test_unstable_ais_advice_can_be_followed_as_printed(capsys, tmp_path):
    out = str(tmp_path / "rbm")
    assert run_cli(capsys, "train", "rbm", *RBM_TINY, "--out", out)[0] == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    line = catalogue.summary({**metrics, "ais_stable": False}, out)  # as printed for an unstable estimate
    advice = line.split("run `", 1)[1].split("`", 1)[0]
    assert advice == f"ppl-models evaluate {out} --temperatures {4 * metrics['ais_temperatures']}"
    code, stdout, err = run_cli(capsys, *advice.split()[1:], "--no-progress")
    assert code == 0 and f"{4 * metrics['ais_temperatures']} temperatures" in stdout, err


def test_wording_names_flags_and_modes(capsys, trained, tmp_path):
    code, _, err = run_cli(capsys, "train", "vae", "--dataset", "mnist", "--out", str(tmp_path / "m"), "--no-progress")
    assert code == 2 and ("--data-path" in err or "PPL_MODELS_MNIST_DIR" in err) and "pass path=" not in err
    code, help_text, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    lines = help_text.splitlines()
    for flag in ("--epochs", "--lr", "--batch-size"):
        at = next(i for i, x in enumerate(lines) if x.strip().startswith(flag))
        block = lines[at].split()[2:] + (lines[at + 1].split() if not lines[at + 1].strip().startswith("-") else [])
        assert len(block) > 2, f"{flag} has no help text"
    with pytest.raises(SpecError, match=r"\['both', 'ancestral', 'top', 'mean'\]"):
        catalogue.family("dcim").sample_grid(None, 4, str(tmp_path / "x.png"), mode="best")
    grey = str(tmp_path / "grey")
    code, stdout, err = run_cli(capsys, "train", "vae", *TINY, "--set", "data.binarize=none",
                                "--set", "model.likelihood=gaussian", "--out", grey)
    assert code == 0 and "a density of grey levels, so it can be negative" in stdout, err
