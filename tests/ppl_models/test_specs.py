"""Declarative specs: built from dicts or JSON files, unknown or ill-typed keys rejected by name."""

import json
from dataclasses import dataclass, field

import pytest

import ppl_models
from ppl_models.catalogue import default_spec, make_spec
from ppl_models.errors import SpecError
from ppl_models.specs import apply_overrides, from_dict, option
from ppl_models.vae import VAE


def test_default_spec_round_trips():
    for family in ("vae", "iwae"):
        spec = make_spec(spec=default_spec(family))
        assert spec.family == family


def test_build_from_dict_and_json_file(tmp_path):
    spec = {"family": "iwae", "model": {"x_dim": 64, "z_dim": 3, "hidden": [10, 10]}}
    model = ppl_models.build(spec)
    assert isinstance(model, VAE) and model.arch.hidden == [10, 10]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert isinstance(ppl_models.build(str(path)), VAE)


@pytest.mark.parametrize("spec, message", [
    ({"family": "vae", "modle": {}}, "unknown key spec.modle; expected one of: family, model, objective, data, train"),
    ({"family": "vae", "model": {"z_dims": 3}}, "unknown key spec.model.z_dims"),
    ({"family": "vae", "model": {"z_dim": "3"}}, "spec.model.z_dim must be an integer, got '3'"),
    ({"family": "vae", "model": {"z_dim": True}}, "spec.model.z_dim must be an integer, got True"),
    ({"family": "vae", "model": {"z_dim": 0}}, "spec.model.z_dim must be >= 1, got 0"),
    ({"family": "vae", "model": {"hidden": [200, -1]}}, "spec.model.hidden must be >= 1"),
    ({"family": "vae", "model": {"hidden": 200}}, "spec.model.hidden must be a list of int"),
    ({"family": "vae", "model": {"likelihood": "poisson"}}, "spec.model.likelihood must be one of"),
    ({"family": "vae", "train": {"lr": float("nan")}}, "spec.train.lr must be finite"),
    ({"family": "vae", "train": {"lr": 0}}, "spec.train.lr must be > 0.0"),
    ({"family": "vae", "objective": {"dreg": 1}}, "spec.objective.dreg must be true or false"),
    ({"family": "flow"}, "unknown model 'flow'"),
    ({"model": {}}, "spec has no 'family' key"),
    ([1, 2], "must be a mapping"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(SpecError) as e:
        make_spec(spec=spec) if isinstance(spec, dict) else make_spec("vae", spec={"model": spec})
    assert message in str(e.value)


def test_overrides():
    spec = make_spec("vae", overrides=["z_dim=2", "train.lr=0.01", "model.hidden=[50,50]", "data.path=/x"])
    assert (spec.model.z_dim, spec.train.lr, spec.model.hidden, spec.data.path) == (2, 0.01, [50, 50], "/x")
    with pytest.raises(SpecError, match="expects key=value"):
        make_spec("vae", overrides=["z_dim"])
    with pytest.raises(SpecError, match="unknown spec key 'x'"):
        make_spec("vae", overrides=["x=1"])


@dataclass
class Inner:
    size: int = option(1)


@dataclass
class Outer:
    a: Inner = field(default_factory=Inner)
    b: Inner = field(default_factory=Inner)


def test_ambiguous_bare_key():
    with pytest.raises(SpecError, match="spec key 'size' is ambiguous: use a.size or b.size"):
        apply_overrides(Outer, {}, ["size=2"])
    assert from_dict(Outer, apply_overrides(Outer, {}, ["b.size=2"])).b.size == 2


def test_bad_json_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("{oops")
    with pytest.raises(SpecError, match="not valid JSON"):
        make_spec(spec=str(path))
    with pytest.raises(SpecError, match="does not exist"):
        make_spec(spec=str(tmp_path / "missing.json"))


def test_partial_section_keeps_the_family_defaults():
    # Setting one objective key of an IWAE must not turn it into the section class's default (an ELBO).
    spec = make_spec("iwae", overrides=["objective.num_particles=3"])
    assert (spec.objective.name, spec.objective.num_particles) == ("iwae", 3)
    spec = make_spec(spec={"family": "iwae", "objective": {"dreg": True}})
    assert (spec.objective.name, spec.objective.num_particles, spec.objective.dreg) == ("iwae", 5, True)
