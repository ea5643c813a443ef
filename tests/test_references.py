"""Reference answers (posteriordb-style) and ``ppl-models check``.

Every registered family keeps its README figures as records in ``ppl_models/references`` (a family without
one fails); every record's fields are valid, its protocols are specs the catalogue accepts, and its value is
the one its source (a results JSON, or the README) holds.
``ppl-models check`` re-runs the mixture's reduced protocol here (seconds) and fails once the reference is
moved out of its tolerance; ``-m slow`` runs the reduced check of every family.
"""

import json
import math
import os
import shutil

import pytest
import yaml

from ppl_models import catalogue
from ppl_models.catalogue import check as check_module
from ppl_models.catalogue import references
from ppl_models.errors import SpecError
from tests.cli_util import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = references.all_records()
ALL = [r for records in RECORDS.values() for r in records]


@pytest.mark.parametrize("name", sorted(catalogue.FAMILIES))
def test_every_registered_family_has_a_reference_record(name):
    assert RECORDS.get(name), (f"{name} has no reference record in ppl_models/references/{name}.yaml: add one for "
                               "each of its README figures")


def test_no_record_names_an_unknown_family():
    assert set(RECORDS) <= set(catalogue.FAMILIES)


def _read(path: str, load=json.load):
    with open(path, encoding="utf-8") as f:
        return load(f)


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


@pytest.mark.parametrize("record", ALL, ids=[r.name for r in ALL])
def test_every_record_is_valid_and_its_value_is_its_sources(record):
    # each protocol is a spec the catalogue accepts, and the reduced one is not the full one
    for protocol in (record.full, record.reduced):
        if protocol is not None:
            catalogue.make_spec(record.family, overrides=list(protocol.overrides))
    if record.full is not None and record.reduced is not None:
        assert (record.full.overrides, record.full.evaluate) != (record.reduced.overrides, record.reduced.evaluate)
    if record.full is None:
        assert record.full_not_by_check and "`" in record.full_not_by_check  # it names what re-runs it
    # the figure quotes the value, as the README prints it (rounded, maybe without its sign)
    assert any(f"{abs(record.value):.{d}f}" in record.figure for d in range(5)), record.figure
    # the value (and its standard error) is the one its source holds: a results JSON, or the README's text
    source = record.source.split(":")[0].split(" (")[0].split(",")[0]
    path = os.path.join(ROOT, source)
    assert os.path.exists(path), f"{record.name}: source {source} does not exist"
    if path.endswith(".json"):
        found = list(_numbers(_read(path)))
        for v in (record.value, record.stderr):
            if v is not None:
                assert any(math.isclose(round(x, 4), v, abs_tol=1e-9) for x in found), f"{record.name}: {v} not in {source}"
    else:
        readme = _read(path, lambda f: f.read())
        for v in (record.value, record.stderr):
            if v is not None:
                assert any(f"{abs(v):.{d}f}" in readme for d in (1, 2)), f"{record.name}: {v} not in {source}"
    assert record.reduced is None or record.reduced.tolerance > 0


def _record(**changes):
    raw = _read(os.path.join(references.REFERENCES_DIR, "mixture.yaml"), yaml.safe_load)[0]
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize("changes, message", [
    ({"colour": "red"}, "colour is not a field"),
    ({"value": None}, "value must be a finite number, got None"),
    ({"value": "142"}, "value must be a finite number"),
    ({"stderr": -1}, "stderr must be >= 0"),
    ({"date": "yesterday"}, "date must be a date YYYY-MM-DD"),
    ({"family": "vae"}, "family is 'vae' but the file holds the mixture family's records"),
    ({"name": "Mixture EM"}, "name must be lower-case"),
    ({"metric": {"key": "test_nll"}}, "metric.stderr_key is missing"),
    ({"full": {"overrides": "train.epochs=5"}}, "full.overrides must be a list of KEY=VALUE texts"),
    ({"full": {"overrides": [], "evaluate": {"particles": 0}}}, "full.evaluate.particles must be a positive integer"),
    ({"reduced": {"overrides": ["train.epochs=5"]}}, "reduced.value is missing"),
])
def test_a_bad_record_is_one_error_naming_the_field(changes, message):
    with pytest.raises(SpecError, match="reference file f.yaml, record .*" + message.replace("(", r"\(")):
        references.parse_record(_record(**changes), "f.yaml", 0, "mixture")


@pytest.mark.parametrize("argv, message", [
    (["gann"], "unknown model 'gann'; the families with references are: dae, dbm, dbn, dcim, fvbm, fvsbn, gan"),
    (["vae", "--record", "vae-cifar"], ("vae has no reference record 'vae-cifar'; its records are: vae-mnist5k, "
                                        "vae-quickstart")),
])
def test_check_refuses_an_unknown_model_or_record_in_one_line(capsys, argv, message):
    code, _, err = run_cli(capsys, "check", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_check_of_a_registered_family_without_records_says_so(capsys, tmp_path, monkeypatch):
    # every family has records today; one registered before its record is refused by name, not as unknown
    folder = tmp_path / "references"
    folder.mkdir()
    shutil.copy(os.path.join(references.REFERENCES_DIR, "mixture.yaml"), folder)
    monkeypatch.setattr(references, "REFERENCES_DIR", str(folder))
    code, _, err = run_cli(capsys, "check", "vae")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "vae has no reference records yet (no README figure); the families with references are: mixture" in err


def test_check_reruns_a_reduced_protocol_and_fails_a_perturbed_reference(capsys, tmp_path, monkeypatch):
    """The mixture's reduced protocol (5 EM iterations on MNIST-5k) reproduces its recorded value; the same
    run against a reference moved by twice its tolerance is out of tolerance, exit status 3."""
    runs = []
    real = check_module.run_protocol

    def counted(family, protocol):
        runs.append(real(family, protocol))
        return runs[-1]

    monkeypatch.setattr(check_module, "run_protocol", counted)
    code, out, err = run_cli(capsys, "check", "mixture", "--record", "mixture-em-mnist5k")
    assert code == 0, out + err
    line = out.splitlines()[0]
    assert line.startswith("mixture-em-mnist5k (reduced, test_nll): today ") and line.endswith(": ok"), line
    assert "reference" in line and " se;" in line and "tolerance ±" in line
    assert "1 of 1 reduced checks ok" in out

    # the same metrics, judged against a reference moved out of tolerance
    folder = tmp_path / "references"
    folder.mkdir()
    raw = _read(os.path.join(references.REFERENCES_DIR, "mixture.yaml"), yaml.safe_load)
    raw[0]["reduced"]["value"] += 2 * raw[0]["reduced"]["tolerance"]
    (folder / "mixture.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(references, "REFERENCES_DIR", str(folder))
    monkeypatch.setattr(check_module, "run_protocol", lambda family, protocol: runs[0])
    code, out, err = run_cli(capsys, "check", "mixture", "--record", "mixture-em-mnist5k")
    assert code == 3, out + err
    assert "OUT OF TOLERANCE" in out and "out of tolerance: mixture-em-mnist5k" in out


def test_a_full_check_judges_in_the_references_standard_errors():
    record = RECORDS["vae"][0]
    near = check_module.check_record(record, full=True, run=lambda f, p: {"test_nll": record.value + 2 * record.stderr,
                                                                          "test_nll_stderr": 0.9})
    far = check_module.check_record(record, full=True, run=lambda f, p: {"test_nll": record.value + 4 * record.stderr,
                                                                         "test_nll_stderr": 0.9})
    assert near.ok and math.isclose(near.in_standard_errors, 2.0) and not far.ok
    dcim = next(r for r in RECORDS["dcim"] if r.full is None)
    skipped = check_module.check_record(dcim, full=True)
    assert skipped.ok is None and "benchmarks/dcim_paper.py" in skipped.line()


def test_a_full_check_without_any_standard_error_judges_at_the_recorded_precision():
    """An MMD² has no standard error in the record or the run: the figure (0.0342, rounded from the JSON's
    0.034154) is reproduced when today's value rounds to it, and not otherwise."""
    record = next(r for r in RECORDS["gan"] if r.metric["key"] == "test_mmd2")
    assert record.value == 0.0342 and record.stderr is None and record.metric["stderr_key"] is None
    same = check_module.check_record(record, full=True, run=lambda f, p: {"test_mmd2": 0.034154})
    other = check_module.check_record(record, full=True, run=lambda f, p: {"test_mmd2": 0.03426})
    assert same.ok and not other.ok and math.isclose(same.tolerance, 5e-5)
    assert "limit ± 5e-05, the value's recorded precision" in other.line() and "OUT OF TOLERANCE" in other.line()
    assert [check_module.recorded_precision(v) for v in (293.17, -96.0, 0.095)] == [0.005, 0.05, 0.0005]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECORDS))
def test_reduced_check_of_every_family(name, capsys):
    code, out, err = run_cli(capsys, "check", name)
    assert code == 0, out + err


def test_measure_reduced_writes_the_value_and_tolerance_as_the_records_were():
    record = RECORDS["mixture"][0]
    seen = []

    def run(family, protocol):
        seen.append(protocol.overrides[-1])
        return {"test_nll": {"train.seed=0": 10.0, "train.seed=1": 11.0, "train.seed=2": 12.0}[seen[-1]]}

    fields = check_module.measure_reduced(record, run=run)
    assert seen == ["train.seed=0", "train.seed=1", "train.seed=2"]
    assert fields["value"] == 10.0 and fields["tolerance"] == 3.0  # 3 sd of (10, 11, 12)
    assert "seeds 0, 1, 2 (10, 11, 12; sd 1)" in fields["tolerance_from"]
    parsed = references.parse_record(_record(reduced={"overrides": list(record.reduced.overrides), **fields}),
                                     "f.yaml", 0, "mixture")
    assert parsed.reduced.value == 10.0 and parsed.reduced.tolerance == 3.0


def test_check_measure_prints_the_reduced_fields(capsys, monkeypatch):
    monkeypatch.setattr(check_module, "run_protocol", lambda family, protocol: {"test_nll": 100.0 + len(protocol.overrides[-1]) % 3})
    code, out, err = run_cli(capsys, "check", "mixture", "--record", "mixture-em-mnist5k", "--measure")
    assert code == 0, err
    fields = yaml.safe_load(out)
    assert set(fields) == {"value", "tolerance", "tolerance_from", "measured", "seconds"}
    code, out, err = run_cli(capsys, "check", "mixture", "--measure", "--full")
    assert code == 2 and "--measure measures the reduced protocol" in err
