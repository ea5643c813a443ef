"""Model files: a model as a YAML (or JSON) file.

Each family's default file ships in the package and is exactly ``ppl-models spec FAMILY`` (so it cannot drift
from the spec classes); every shipped file trains through the CLI; a run directory keeps the file's bytes; a spec
survives YAML and back; every bad file is one line on stderr, exit status 2, and no run directory.
"""

import json
import os

import pytest

import ppl_models.catalogue.directed as directed_base
from ppl_models import catalogue
from ppl_models.catalogue import model_files
from ppl_models.catalogue.write_model_files import main as write_model_files
from ppl_models.errors import SpecError
from ppl_models.specs import to_dict
from tests.cli_util import run_cli
from tests.test_catalogue_conformance import COMMON, TINY

FAMILIES = sorted(catalogue.FAMILIES)
REGENERATE = "python -m ppl_models.catalogue.write_model_files"


def one_line_error(code, err, *messages):
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and "Traceback" not in err and all(m in err for m in messages)


def tiny_vae_args():
    return ["--no-progress", "--dataset", "digits", "--epochs", "1", "--eval-particles", "5"]


# -- the shipped files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
def test_each_shipped_default_file_is_the_familys_current_spec(name, capsys):
    path = model_files.default_file(name)
    assert os.path.isfile(path), f"{path} is missing: run `{REGENERATE}`"
    text = open(path, encoding="utf-8").read()
    assert text == model_files.to_yaml(name), f"{path} differs from the {name} spec: run `{REGENERATE}`"
    code, out, _ = run_cli(capsys, "spec", name)
    assert code == 0 and out == text  # `ppl-models spec NAME > my.yaml` writes that file
    assert to_dict(catalogue.make_spec(spec=path)) == catalogue.default_spec(name)


def test_the_regenerating_script_writes_the_shipped_files(tmp_path, capsys):
    assert write_model_files([str(tmp_path)]) == 0
    written = sorted(os.listdir(tmp_path))
    assert written == sorted(f"{name}.yaml" for name in FAMILIES)
    for name in written:
        assert (tmp_path / name).read_bytes() == open(os.path.join(model_files.MODELS_DIR, name), "rb").read()
    shipped = {f for f in os.listdir(model_files.MODELS_DIR) if f.endswith(".yaml")}
    assert shipped == set(written), "a shipped default file names no family: remove it"


@pytest.mark.parametrize("name", FAMILIES)
def test_every_shipped_file_trains_and_the_run_keeps_its_bytes(name, capsys, tmp_path):
    path = model_files.default_file(name)
    out = str(tmp_path / "run")
    code, stdout, err = run_cli(capsys, "train", path, *COMMON, *TINY[name], "--epochs", "1", "--out", out)
    assert code == 0, err
    assert open(os.path.join(out, "model.yaml"), "rb").read() == open(path, "rb").read()
    assert not os.path.exists(os.path.join(out, "model.json"))
    spec = json.load(open(os.path.join(out, "spec.json")))
    assert spec["family"] == name and spec["train"]["epochs"] == 1 and spec["data"]["dataset"] == "digits"
    assert "test" in stdout


def test_the_examples_define_architectures_without_code():
    examples = {os.path.basename(p): catalogue.make_spec(spec=p) for p in model_files.example_files()}
    sbn = examples["sbn-200-200-200.yaml"]
    assert (sbn.family, sbn.model.hidden, sbn.objective.name, sbn.objective.k) == ("sbn", [200, 200, 200], "vimco", 5)
    assert sbn.train.lr == 3e-3  # written `3e-3`, which YAML 1.1 would read as text
    dcim = examples["dcim-conv-16-32-100.yaml"]
    assert dcim.model.arch == "custom" and [(l.kind, l.units) for l in dcim.model.layers] == [
        ("conv", 16), ("conv", 32), ("dense", 100)]
    iwae = examples["iwae-k50-dreg.yaml"]
    assert (iwae.objective.num_particles, iwae.objective.dreg, iwae.model.z_dim) == (50, True, 50)


@pytest.mark.parametrize("example", [os.path.basename(p) for p in model_files.example_files()])
def test_each_example_trains_as_written(example, capsys, tmp_path):
    path = os.path.join(model_files.EXAMPLES_DIR, example)
    out = str(tmp_path / "run")
    code, _, err = run_cli(capsys, "train", path, *tiny_vae_args(), "--out", out)
    assert code == 0, err
    assert open(os.path.join(out, "model.yaml"), "rb").read() == open(path, "rb").read()


# -- spec -> YAML -> spec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
def test_spec_yaml_spec_round_trip(name, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "spec", name)
    assert code == 0
    data = model_files.parse(out, "<spec>", as_yaml=True)
    assert data == catalogue.default_spec(name)  # the same values, types included (1e-05 stays a number)
    assert to_dict(catalogue.make_spec(spec=data)) == catalogue.default_spec(name)
    # every key is explained: the line before each leaf is a comment
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith(("#", "-")) and not line.endswith(":"):
            assert lines[i - 1].lstrip().startswith("#"), (name, line)
    # a spec changed from the defaults, written and read back, is the same spec
    spec = catalogue.make_spec(name, overrides=["train.lr=1e-05", "train.seed=7", "data.path=\"yes\""])
    path = tmp_path / "changed.yaml"
    path.write_text(model_files.to_yaml(spec))
    assert to_dict(catalogue.make_spec(spec=str(path))) == to_dict(spec)
    code, out, _ = run_cli(capsys, "spec", str(path), "--json")
    assert code == 0 and json.loads(out) == to_dict(spec)


@pytest.mark.parametrize("text", ["null", "", "yes", "no", "on", "true", "1e-3", "010", "~", "2024-01-01", "a: b",
                                  "#x", "- x", "[1]", "{a}", "'q'", "\"q\"", " lead", "tab\there", "é", "x\ny"])
def test_text_values_survive_yaml(text):
    spec = catalogue.make_spec("vae", overrides=[f"data.path={json.dumps(text)}", f"train.device={json.dumps(text)}"])
    back = model_files.parse(model_files.to_yaml(spec), "<spec>", as_yaml=True)
    assert back["data"]["path"] == text and back["train"]["device"] == text


def test_yaml_scalars_are_the_json_ones(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("family: vae\nmodel:\n  z_dim: 010\n  hidden: [+5, 7]\ntrain:\n  lr: 1e-3\n  lr_decay: .5\n"
                    "  clip_norm: 2E+1\ndata:\n  path: 2024-01-01\n  binarize: none\n")
    spec = catalogue.make_spec(spec=str(path))
    assert (spec.model.z_dim, spec.model.hidden) == (10, [5, 7])
    assert (spec.train.lr, spec.train.lr_decay, spec.train.clip_norm) == (1e-3, 0.5, 20.0)
    assert (spec.data.path, spec.data.binarize) == ("2024-01-01", "none")


def test_spec_of_a_model_file_fills_in_the_defaults(capsys, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("family: iwae\nmodel: {z_dim: 3}\n")
    code, out, err = run_cli(capsys, "spec", str(path), "--json")
    assert code == 0, err
    assert json.loads(out) == {**catalogue.default_spec("iwae"),
                               "model": {**catalogue.default_spec("iwae")["model"], "z_dim": 3}}
    code, out, _ = run_cli(capsys, "spec", str(path), "--describe")
    assert any(line.split()[:2] == ["model.z_dim", "3"] for line in out.splitlines())
    code, out, _ = run_cli(capsys, "spec", str(path))
    assert "z_dim: 3" in out and out.startswith("# iwae:")


# -- training from a file -----------------------------------------------------------------------------------

def test_set_overrides_the_file_and_the_run_keeps_the_file_as_given(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = b"family: vae  # my model\nmodel:\n  z_dim: 7\n  hidden: [8]\ntrain:\n  epochs: 5\n  lr: 2e-3\n"
    (tmp_path / "my-vae.yaml").write_bytes(source)
    code, _, err = run_cli(capsys, "train", "my-vae.yaml", *tiny_vae_args(), "--set", "z_dim=2")
    assert code == 0, err
    run = tmp_path / "runs" / "my-vae"  # the default run directory is named after the file
    spec = json.loads((run / "spec.json").read_text())
    assert (spec["model"]["z_dim"], spec["model"]["hidden"], spec["train"]["epochs"], spec["train"]["lr"]) == (
        2, [8], 1, 2e-3)
    assert (run / "model.yaml").read_bytes() == source


def test_a_json_model_file_is_kept_as_model_json(capsys, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"family": "vae", "model": {"z_dim": 2, "hidden": [8]}}))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", str(path), *tiny_vae_args(), "--out", str(out))
    assert code == 0, err
    assert (out / "model.json").read_bytes() == path.read_bytes() and not (out / "model.yaml").exists()
    # --spec FILE with the family named (as before) keeps the file too; the newer file replaces the older
    yaml_path = tmp_path / "m.yaml"
    yaml_path.write_text("family: vae\nmodel: {z_dim: 2, hidden: [8]}\ntrain: {epochs: 2}\n")
    code, _, err = run_cli(capsys, "train", "vae", "--spec", str(yaml_path), *tiny_vae_args(), "--epochs", "2",
                           "--out", str(out))
    assert code == 0, err
    assert (out / "model.yaml").read_bytes() == yaml_path.read_bytes() and not (out / "model.json").exists()
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2


def test_a_killed_run_from_a_file_resumes(capsys, tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    path.write_text("family: vae\nmodel: {z_dim: 2, hidden: [8]}\ntrain: {epochs: 3}\n")
    out = str(tmp_path / "run")
    real_fit = directed_base.fit

    def fit_killed(*args, **kwargs):
        def stop(metrics):
            if metrics["epoch"] == 2:
                raise KeyboardInterrupt
        return real_fit(*args, **{**kwargs, "on_epoch_end": stop})

    args = ["--no-progress", "--dataset", "digits", "--eval-particles", "5", "--out", out]
    monkeypatch.setattr(directed_base, "fit", fit_killed)
    code, _, err = run_cli(capsys, "train", str(path), *args)
    assert code == 130 and "run the same command again to resume" in err
    assert open(os.path.join(out, "model.yaml"), "rb").read() == path.read_bytes()
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "train", str(path), *args)
    assert code == 0, err
    assert [h["epoch"] for h in json.load(open(os.path.join(out, "metrics.json")))["history"]] == [1, 2, 3]
    # the same model by family name and flags is the same run: done, the file kept
    code, out_text, err = run_cli(capsys, "train", "vae", "--set", "z_dim=2", "--set", "hidden=[8]", *args,
                                  "--epochs", "3")
    assert code == 0 and "nothing to do" in out_text, err
    assert open(os.path.join(out, "model.yaml"), "rb").read() == path.read_bytes()
    # another model into the same directory is refused, and the kept file untouched
    other = tmp_path / "other.yaml"
    other.write_text("family: vae\nmodel: {z_dim: 3, hidden: [8]}\n")
    code, _, err = run_cli(capsys, "train", str(other), *args)
    assert one_line_error(code, err, "already holds a different model (model.z_dim: 2 there, 3 now)")
    assert open(os.path.join(out, "model.yaml"), "rb").read() == path.read_bytes()


# -- bad model files ------------------------------------------------------------------------------------------

BAD = [
    # (file name, content, what stderr must say)
    ("syntax.yaml", "family: vae\nmodel:\n  z_dim: 3\n  hidden: [200\ntrain:\n  epochs: 2\n",
     ["not valid YAML: line 5", "expected ',' or ']'"]),
    ("indent.yaml", "family: vae\nmodel:\n  z_dim: 3\n hidden: [200]\n", ["not valid YAML: line 4"]),
    ("tab.yaml", "family: vae\nmodel:\n\tz_dim: 3\n", ["not valid YAML: line 3", "'\\t'"]),
    ("quote.yaml", "family: \"vae\n", ["not valid YAML: line 2", "end of stream"]),
    ("two.yaml", "family: vae\n---\nfamily: iwae\n", ["not valid YAML: line 2", "single document"]),
    ("twice.yaml", "family: vae\ntrain:\n  lr: 0.1\ntrain:\n  epochs: 2\n",
     ["line 4", "key 'train' is given twice (first on line 2)"]),
    ("numkey.yaml", "family: vae\nmodel:\n  1: 2\n", ["line 3", "key 1 is not a name"]),
    ("control.yaml", "family: vae\n\x07\n", ["line 2", "#x0007"]),
    ("tagged.yaml", "family: vae\ntrain:\n  lr: !!float abc\n", ["line 3", "'abc' is not a number"]),
    ("bad.json", "{\"family\": \"vae\",\n oops}", ["not valid JSON: line 2"]),
    ("empty.yaml", "", ["is empty"]),
    ("comments.yaml", "# nothing but a comment\n", ["is empty"]),
    ("list.yaml", "- family: vae\n", ["a spec must be a mapping", "got a list"]),
    ("scalar.yaml", "vae\n", ["a spec must be a mapping", "got the text 'vae'"]),
    ("nofamily.yaml", "model:\n  z_dim: 2\n", ["has no 'family' key; expected one of: vae, iwae"]),
    ("flow.yaml", "family: flow\n", ["unknown model 'flow'; the catalogue has: vae, iwae"]),
    ("familylist.yaml", "family: [vae]\n", ["family must be a model name"]),
    ("unknown.yaml", "family: vae\nmodel:\n  z_dimm: 2\n",
     ["unknown key spec.model.z_dimm; expected one of: x_dim, z_dim"]),
    ("section.yaml", "family: vae\nmodle: {}\n", ["unknown key spec.modle; expected one of: family, model"]),
    ("type.yaml", "family: vae\nmodel:\n  z_dim: two\n", ["spec.model.z_dim must be an integer, got 'two'"]),
    ("float.yaml", "family: vae\ntrain:\n  batch_size: 2.5\n", ["spec.train.batch_size must be an integer, got 2.5"]),
    ("list-type.yaml", "family: vae\nmodel:\n  hidden: 200\n", ["spec.model.hidden must be a list"]),
    ("range.yaml", "family: vae\ntrain:\n  batch_size: 0\n", ["spec.train.batch_size must be >= 1, got 0"]),
    ("lr.yaml", "family: vae\ntrain:\n  lr: -1e-3\n", ["spec.train.lr must be > 0.0, got -0.001"]),
    ("nan.yaml", "family: vae\ntrain:\n  lr: .nan\n", ["spec.train.lr must be finite"]),
    ("choice.yaml", "family: vae\nmodel:\n  likelihood: poisson\n",
     ["spec.model.likelihood must be one of ['bernoulli', 'continuous_bernoulli', 'gaussian'], got 'poisson'"]),
    ("yes.yaml", "family: vae\nobjective:\n  name: iwae\n  dreg: yes\n",
     ["spec.objective.dreg must be true or false, got 'yes'"]),
    ("null-section.yaml", "family: vae\nmodel:\n", ["spec.model must be a mapping", "empty section"]),
    ("latin1.yaml", b"family: vae\n# caf\xe9\n", ["is not UTF-8 text"]),
]


@pytest.mark.parametrize("filename, content, messages", BAD, ids=[b[0] for b in BAD])
def test_a_bad_model_file_is_one_line_and_writes_nothing(filename, content, messages, capsys, tmp_path):
    path = tmp_path / filename
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", str(path), *tiny_vae_args(), "--out", str(out))
    assert one_line_error(code, err, *messages), err
    assert not out.exists() and not stdout
    if "spec." not in messages[0]:  # a problem of the file itself names the file
        assert str(path) in err
    code, stdout, err = run_cli(capsys, "spec", str(path))
    assert one_line_error(code, err, *messages) and not stdout, err


@pytest.mark.parametrize("argv, message", [
    (["missing.yaml"], "model file missing.yaml does not exist"),
    (["a_dir.yaml"], "model file a_dir.yaml is a directory"),
    (["notes.txt"], "notes.txt is not a model file: a model file's name ends in .yaml, .yml, .json"),
    (["m.yaml", "--spec", "m.yaml"], "given as MODEL and --spec m.yaml given too"),
    (["vae", "--spec", "m.yaml"], "model file m.yaml: family is 'iwae' but model 'vae' was asked for"),
    (["m.yaml", "--set", "z_dimm=2"], "unknown spec key 'z_dimm'"),
])
def test_bad_paths_and_combinations(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_dir.yaml").mkdir()
    (tmp_path / "notes.txt").write_text("family: vae\n")
    (tmp_path / "m.yaml").write_text("family: iwae\n")
    code, _, err = run_cli(capsys, "train", *argv, *tiny_vae_args(), "--out", "run")
    assert one_line_error(code, err, message), err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_read_errors_are_spec_errors(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("family: vae\nmodel: [\n")
    with pytest.raises(SpecError, match=r"m.yaml is not valid YAML: line 3"):
        model_files.read(str(path))
    with pytest.raises(SpecError, match="unknown model 'flow'"):
        model_files.to_yaml("flow")
