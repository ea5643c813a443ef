"""Property-based fuzzing of the CLI (Hypothesis): argument lists drawn from the real flag and spec-key
vocabulary with hostile values. Whatever is drawn, the command

1. exits 0 (it worked), 2 (the user's input) or 130 (interrupted), never 1 (our bug);
2. prints at most one line on stderr, never a traceback;
3. leaves every file that existed before it byte-identical when it fails.

The default run draws a few dozen cases per command (derandomised, the same every run); ``pytest -m slow``
draws a few hundred fresh ones. Every failure found this way is fixed and kept as a regular test
(``tests/test_cli_reliability.py``).
"""

import json
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ppl_models import catalogue  # noqa: E402
from ppl_models.cli import main  # noqa: E402
from ppl_models.specs import _leaf_paths  # noqa: E402

# Small enough that any valid draw trains in about a second (sizes are drawn from SMALL below).
BASE = {
    "vae": ["--set", "model.hidden=[4]", "--set", "z_dim=2", "--eval-particles", "2"],
    "iwae": ["--set", "model.hidden=[4]", "--set", "z_dim=2", "--eval-particles", "2"],
    "dcim": ["--set", "model.hidden=[6]"],
    "rbm": ["--set", "model.num_hidden=4", "--set", "train.ais_temperatures=20", "--set", "train.sample_sweeps=2",
            "--eval-particles", "4"],
    "gbrbm": ["--set", "model.num_hidden=4", "--set", "train.ais_temperatures=20", "--set", "train.sample_sweeps=2",
              "--eval-particles", "4"],
    "mixture": ["--set", "model.num_components=3"],
    "sbn": ["--set", "model.hidden=[3,2]", "--eval-particles", "2"],
    "nade": ["--set", "model.hidden=3"],
    "fvsbn": [],
    "gan": ["--set", "model.generator_hidden=[4]", "--set", "model.discriminator_hidden=[4]", "--set", "z_dim=2",
            "--eval-particles", "2", "--set", "train.ais_temperatures=5", "--set", "train.ais_images=2",
            "--set", "train.ais_sigma=0.2", "--set", "train.mmd_images=20", "--set", "train.mmd_permutations=5"],
    "gmmn": ["--set", "model.hidden=[4]", "--set", "z_dim=2", "--eval-particles", "2",
             "--set", "train.ais_temperatures=5", "--set", "train.ais_images=2", "--set", "train.ais_sigma=0.2",
             "--set", "train.mmd_images=20", "--set", "train.mmd_permutations=5"],
    "dbn": ["--set", "model.hidden=[3,2]", "--set", "train.ais_temperatures=20", "--set", "train.sample_sweeps=2",
            "--eval-particles", "4"],
    "fvbm": ["--set", "train.ais_temperatures=20", "--set", "train.sample_sweeps=2", "--eval-particles", "4"],
    "dbm": ["--set", "model.hidden=[3,2]", "--set", "pretrain.epochs=[1,1]", "--set", "train.ais_temperatures=20",
            "--set", "train.sample_sweeps=2", "--eval-particles", "4"],
    "dae": ["--set", "model.hidden=[4]", "--eval-particles", "4", "--set", "train.chain_steps=2",
            "--set", "train.mmd_permutations=5", "--set", "train.mmd_images=20"],
}
COMMON = ["--dataset", "digits", "--epochs", "1", "--no-progress"]

# Keys whose value sets the amount of work: hostile but small.
SIZES = {"epochs", "num_hidden", "hidden", "z_dim", "batch_size", "num_particles", "eval_particles",
         "ais_temperatures", "sample_sweeps", "num_chains", "k", "num_components", "layers", "input_shape",
         "n_classes", "valid_size", "test_size", "num_visible", "x_dim", "patience", "chain_steps", "walkback_steps",
         "mmd_images", "mmd_permutations"}
SMALL = ["-1", "0", "1", "2", "1.5", "true", "null", "\"3\"", "[]", "[2]", "[0]", "[-1]", "nan", "abc", ""]
HOSTILE = SMALL + ["1e309", "-1e309", "NaN", "Infinity", "-0.0", "1e-300", "99999999999999999999", "{}",
                   "{\"a\": 1}", "[1, \"x\"]", "\"\"", "\"cuda\"", "\"none\"", "\"sum\"", "\"pcd\"", "\"em\""]


def spec_keys(name):
    cls = catalogue.family(name).spec_class
    return [".".join(p) for p in _leaf_paths(cls) if p != ("family",)]


def set_arguments(name):
    keys = st.sampled_from(spec_keys(name) + ["model.no_such_key", "nokey", "train", "=", "model."])

    def value_for(key):
        return st.sampled_from(SMALL if key.split(".")[-1] in SIZES else HOSTILE)

    pair = keys.flatmap(lambda k: value_for(k).map(lambda v: ["--set", f"{k}={v}"]))
    return st.lists(pair, max_size=3).map(lambda xs: [a for x in xs for a in x])


def flag_arguments(paths):
    flags = {
        "--epochs": ["0", "-3", "1", "2", "x", "1.5"],
        "--batch-size": ["0", "-1", "1", "7", "x"],
        "--lr": ["0", "-1", "nan", "inf", "1e9", "0.01", "x"],
        "--seed": ["-1", "0", "7", "x", "99999999999999999999"],
        "--device": ["cpu", "auto", "cuda", "cuda:7", "tpu", ""],
        "--eval-particles": ["0", "-2", "1", "3", "x"],
        "--objective": ["elbo", "iwae", "generative", "rws", "pcd", "cd", "em", "enum_elbo", "nope", ""],
        "--arch": ["dense", "custom", "wide", ""],
        "--dataset": ["digits", "mnist", "fashion-mnist", "cifar", ""],
        "--data-path": [paths["dir"], paths["file"], paths["missing"], ""],
        "--spec": [paths["list_spec"], paths["bad_json"], paths["missing"], paths["dir"], paths["empty"],
                   paths["other_spec"]],
    }
    one = st.sampled_from(sorted(flags)).flatmap(lambda f: st.sampled_from(flags[f]).map(lambda v: [f, v]))
    return st.lists(one, max_size=3).map(lambda xs: [a for x in xs for a in x])


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "a_dir").mkdir()
    (root / "a_dir" / "keep.txt").write_text("mine")
    (root / "a_file").write_text("mine")
    (root / "list.json").write_text("[1, 2]")
    (root / "bad.json").write_text("{not json")
    (root / "empty.json").write_text("")
    (root / "other.json").write_text(json.dumps({"family": "rbm"}))
    return {"root": str(root), "dir": str(root / "a_dir"), "file": str(root / "a_file"),
            "missing": str(root / "missing"), "list_spec": str(root / "list.json"), "bad_json": str(root / "bad.json"),
            "empty": str(root / "empty.json"), "other_spec": str(root / "other.json")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = {}
    for name in ("vae", "rbm", "sbn"):
        out = str(tmp_path_factory.mktemp("trained") / name)
        assert main(["train", name, *COMMON, *BASE[name], "--out", out]) == 0
        runs[name] = out
    return runs


def snapshot(*roots) -> dict:
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read()
            for root in roots for d, _, files in os.walk(root) for f in files}


def check_invocation(capsys, argv, roots):
    before = snapshot(*roots)
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2, 130), (argv, code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, (argv, err)
    if code != 0:
        after = snapshot(*roots)
        changed = [p for p in before if after.get(p) != before[p]]
        assert not changed, (argv, changed)
    return code


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _train_case(capsys, tmp_path, paths, name, set_args, flag_args, out_kind):
    out = {"fresh": str(tmp_path / f"run-{len(os.listdir(tmp_path))}"), "file": paths["file"], "dir": paths["dir"],
           "devnull": os.devnull}[out_kind]
    return check_invocation(capsys, ["train", name, *COMMON, *BASE[name], *flag_args, *set_args, "--out", out],
                            [paths["root"]])


@settings(max_examples=40, derandomize=True, **FUZZ)
@given(data=st.data())
def test_train_fuzz(capsys, tmp_path, paths, data):
    name = data.draw(st.sampled_from(sorted(BASE)))
    code = _train_case(capsys, tmp_path, paths, name, data.draw(set_arguments(name)), data.draw(flag_arguments(paths)),
                       data.draw(st.sampled_from(["fresh", "fresh", "file", "dir", "devnull"])))
    assert code in (0, 2, 130)  # trained, or refused in one line with nothing written (checked in check_invocation)


def evaluate_or_sample(paths, trained):
    out_files = [os.path.join(paths["root"], "out.json"), paths["dir"], os.path.join(paths["root"], "x.txt"),
                 os.devnull, os.path.join(paths["root"], "pic.png"), os.path.join(paths["root"], "pic.jpg"),
                 os.path.join(paths["root"], "pic.bmp"), os.path.join(paths["root"], "noext")]
    numbers = ["-5", "0", "1", "3", "x", "1.5", "99999999999999999999"]
    run = st.sampled_from(sorted(trained.values()) + [paths["dir"], paths["file"], paths["missing"]])
    evaluate = st.tuples(st.just("evaluate"), run, st.lists(st.sampled_from([
        ["--particles", n] for n in numbers] + [["--temperatures", n] for n in numbers] +
        [["--seed", n] for n in numbers] + [["-o", f] for f in out_files]), max_size=3))
    sample = st.tuples(st.just("sample"), run, st.lists(st.sampled_from([
        ["-n", n] for n in numbers[:6]] + [["--sweeps", n] for n in numbers[:6]] +
        [["--mode", m] for m in ("samples", "completion", "both", "top", "ancestral", "mean", "x", "")] +
        [["--class", c] for c in ("0", "3", "10", "-1", "x")] + [["-o", f] for f in out_files]), max_size=3))
    return st.one_of(evaluate, sample).map(lambda t: [t[0], t[1], *[a for x in t[2] for a in x], "--no-progress"]
                                           if t[0] == "evaluate" else [t[0], t[1], *[a for x in t[2] for a in x]])


@settings(max_examples=40, derandomize=True, **FUZZ)
@given(data=st.data())
def test_evaluate_and_sample_fuzz(capsys, paths, trained, data):
    argv = data.draw(evaluate_or_sample(paths, trained))
    check_invocation(capsys, argv, [paths["root"], *trained.values()])


def query_invocation(paths, trained):
    """``ppl-models query`` with every kind (and a wrong one), every input way and hostile values."""
    numbers = ["-5", "0", "1", "3", "x", "1.5", "99999999999999999999"]
    outputs = [os.path.join(paths["root"], "q.json"), paths["dir"], os.devnull, os.path.join(paths["root"], "q.png"),
               os.path.join(paths["root"], "q.nc"), os.path.join(paths["root"], "q.bmp"), paths["file"]]
    options = ([["--split", v] for v in ("test", "train", "valid", "nope", "")] +
               [["--index", v] for v in ("0:2", "3", "1,2", "5:1", "0:99999", "-1", "x", "")] +
               [["--input", f] for f in (paths["npy"], paths["bad_npy"], paths["file"], paths["missing"], paths["dir"])] +
               [["--binarize"]] + [["-n", n] for n in numbers[:6]] + [["--particles", n] for n in numbers] +
               [["--estimator", e] for e in ("auto", "exact", "importance", "ais", "guide", "importance_resampling", "x")] +
               [["--mask", m] for m in ("top", "left", "random:0.5", "random:2", "random:x", paths["npy"], paths["file"], "")] +
               [["--fill", f] for f in ("mean", "0.5", "2", "x")] + [["--sweeps", n] for n in numbers[:6]] +
               [["--draws", n] for n in numbers[:6]] + [["--thin", n] for n in numbers[:6]] +
               [["--temperatures", n] for n in numbers[:6]] + [["--seed", n] for n in numbers] +
               [["--device", d] for d in ("cpu", "cuda", "tpu")] +
               [[flag, f] for flag in ("-o", "--png", "--netcdf") for f in outputs])
    kind = st.sampled_from(["sample", "log_prob", "posterior", "complete", "classify", "nope", ""])
    run = st.sampled_from(sorted(trained.values()) + [paths["dir"], paths["missing"]])
    return st.tuples(run, kind, st.lists(st.sampled_from(options), max_size=3)).map(
        lambda t: ["query", t[0], t[1], *[a for x in t[2] for a in x]])


@pytest.fixture(scope="module")
def query_paths(paths):
    import numpy as np

    np.save(os.path.join(paths["root"], "in.npy"), (np.random.default_rng(0).random((2, 64)) > 0.5).astype("float32"))
    np.save(os.path.join(paths["root"], "bad.npy"), np.full((3, 5), 7.0))
    return {**paths, "npy": os.path.join(paths["root"], "in.npy"), "bad_npy": os.path.join(paths["root"], "bad.npy")}


@settings(max_examples=40, derandomize=True, **FUZZ)
@given(data=st.data())
def test_query_fuzz(capsys, query_paths, trained, data):
    check_invocation(capsys, data.draw(query_invocation(query_paths, trained)), [query_paths["root"], *trained.values()])


@pytest.mark.slow
@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_query_fuzz_long(capsys, query_paths, trained, data):
    check_invocation(capsys, data.draw(query_invocation(query_paths, trained)), [query_paths["root"], *trained.values()])


@pytest.mark.slow
@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_train_fuzz_long(capsys, tmp_path, paths, data):
    name = data.draw(st.sampled_from(sorted(BASE)))
    code = _train_case(capsys, tmp_path, paths, name, data.draw(set_arguments(name)), data.draw(flag_arguments(paths)),
                       data.draw(st.sampled_from(["fresh", "fresh", "file", "dir", "devnull"])))
    assert code in (0, 2, 130)  # trained, or refused in one line with nothing written (checked in check_invocation)


@pytest.mark.slow
@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_evaluate_and_sample_fuzz_long(capsys, paths, trained, data):
    check_invocation(capsys, data.draw(evaluate_or_sample(paths, trained)), [paths["root"], *trained.values()])
