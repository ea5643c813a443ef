"""The catalogue: which families exist, their specs, and train / evaluate / sample / query / load for any of them.

The catalogue (with the CLI) is where :mod:`ppl_models` meets :mod:`inference`:
a model's module never knows how it is trained, and inference never knows a
concrete model. Every family implements :class:`~ppl_models.catalogue.family.Family`;
:mod:`~ppl_models.catalogue.registry` lists them; a trained model is a
:class:`~ppl_models.catalogue.run_directory.RunDirectory`. A model a person writes
is a YAML (or JSON) model file of the family's spec sections
(:mod:`~ppl_models.catalogue.model_files`; the defaults ship in ``ppl_models/models``).
:func:`query` asks a trained model a question (sample, log_prob, posterior, complete, classify),
routed to its family's estimator, every answer with its uncertainty and the estimator used.
"""

from __future__ import annotations

from typing import Optional

import torch

from inference import distributed
from inference.devices import resolve_device
from inference.fileio import write_json_atomic

from ..errors import SpecError
from ..specs import apply_overrides, describe, from_dict, to_dict
from . import data_parallel_runs, model_files
from .answers import QUERY_KINDS, Answer
from .family import Family, count
from .registry import FAMILIES
from .plots import IMAGE_FORMATS
from .query_io import check_outputs, read_inputs, write_answer
from .run_directory import PER_IMAGE_KEY, SAMPLES, RunDirectory, TrainedModel, check_output_file

__all__ = ["FAMILIES", "QUERY_KINDS", "Answer", "Family", "TrainedModel", "build", "default_spec", "evaluate",
           "family", "load", "make_spec", "model_files", "query", "sample", "spec_keys", "summary", "train"]


#: where a spec read from a model file remembers it (not a spec field: the file is not part of the model)
SOURCE_ATTRIBUTE = "_model_file"


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise SpecError(f"unknown model {name!r}; the catalogue has: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def default_spec(name: str) -> dict:
    return to_dict(family(name).spec_class())


def spec_keys(name: str) -> list[str]:
    """One line per key of the family's spec: dotted key, the family's default, its meaning."""
    return describe(family(name).spec_class())


def make_spec(name: Optional[str] = None, spec=None, overrides: tuple = ()):
    """Build a validated spec from a family name, a dict, a model file (YAML or JSON: a path or a
    :class:`~ppl_models.catalogue.model_files.ModelFile`) and ``key=value`` overrides."""
    source = model_files.read(spec) if isinstance(spec, str) else spec
    if isinstance(source, model_files.ModelFile):
        spec, where = source.data, f"model file {source.path}"
    else:
        where = "spec"
    if spec is not None and not isinstance(spec, dict):
        raise SpecError(f"a spec must be a mapping of sections, got {type(spec).__name__}")
    spec = dict(spec or {})
    name = name or spec.get("family")
    if name is None:
        raise SpecError(f"{where} has no 'family' key; expected one of: " + ", ".join(FAMILIES))
    if not isinstance(name, str):
        raise SpecError(f"{where}: family must be a model name, one of {', '.join(FAMILIES)}; got {name!r}")
    if spec.get("family", name) != name:
        label = "spec.family" if where == "spec" else f"{where}: family"
        raise SpecError(f"{label} is {spec['family']!r} but model {name!r} was asked for")
    if name not in FAMILIES and where != "spec":
        raise SpecError(f"{where}: unknown model {name!r}; the catalogue has: {', '.join(FAMILIES)}")
    cls = family(name).spec_class
    spec = from_dict(cls, apply_overrides(cls, {**spec, "family": name}, list(overrides)))
    if isinstance(source, model_files.ModelFile):  # train keeps this file in the run directory
        object.__setattr__(spec, SOURCE_ATTRIBUTE, source)
    return spec


def build(spec) -> torch.nn.Module:
    """The untrained model module of a spec (a spec object, a dict, or a JSON file path).

    ``build({"family": "vae", "model": {"x_dim": 784, "z_dim": 20, "hidden": [200]}})``
    """
    if not hasattr(spec, "family"):
        spec = make_spec(spec=spec)
    return family(spec.family).build(spec)


def load(directory: str) -> TrainedModel:
    """A trained run directory: spec, module with its weights (on the CPU, eval mode), metrics."""
    run = RunDirectory(directory)
    spec = make_spec(spec=run.read_spec())
    fam = family(spec.family)
    module = fam.build(spec)
    run.load_weights(module)
    module.eval()
    return TrainedModel(directory, spec, module, run.read_metrics(), fam)


def train(spec, out_dir: str, progress: bool = True, log=print,
          source: Optional[model_files.ModelFile] = None) -> dict:
    """Train ``spec`` into ``out_dir`` (resuming a killed run), evaluate, plot; return the metrics.

    ``source``, the model file the spec was read from, is kept in the run directory byte for byte
    (``model.yaml``, or ``model.json`` for a JSON file) beside the full ``spec.json``; a spec that
    :func:`make_spec` read from a model file remembers it, so ``source`` is needed only to name another.

    A directory that already holds this model, trained for ``train.epochs`` and evaluated, is left
    as it is (raise the epochs to train on; ``evaluate`` scores it again). While training, the run
    directory is locked: a second process writing to it is refused with the holder's PID.
    """
    fam = family(spec.family)
    distributed.check_batch_size(getattr(spec.train, "batch_size", 1))  # every rank, before anything is written
    if not distributed.is_main():  # a data-parallel run: rank 0 owns the directory, this rank trains beside it
        return data_parallel_runs.follow(fam, spec)
    source = source if source is not None else getattr(spec, SOURCE_ATTRIBUTE, None)
    run = RunDirectory(out_dir)
    run.check_writable_target()
    data = fam.load_data(spec)
    fam.resolve(spec, data)
    resolve_device(spec.train.device)  # fail before writing anything
    spec_dict = to_dict(spec)
    run.check_same_model(spec_dict, normalise=lambda old: to_dict(make_spec(spec=old)))
    with run.lock():
        run.write_spec(spec_dict)
        if source is not None:
            run.write_model_file(source.run_file_name, source.raw)
        finished = run.finished(spec.train.epochs)
        if finished is not None:
            log(f"{out_dir} already holds this model, trained for {count(spec.train.epochs, 'epoch')} and evaluated; "
                f"nothing to do (raise --epochs to train on, or run `ppl-models evaluate {out_dir}` to score it again)")
            data_parallel_runs.tell(data_parallel_runs.FINISHED)
            return finished
        data_parallel_runs.tell(data_parallel_runs.TRAIN)  # nothing without a process group
        torch.manual_seed(spec.train.seed)  # the initial weights are part of what the seed fixes
        fam.train(spec, run, data, progress, log)
        with distributed.solo():  # evaluation and samples: rank 0 alone (the others have finished)
            metrics = _evaluate_locked(run, data=data, progress=progress, log=log)
            sample(out_dir, 64, run.path(SAMPLES), seed=spec.train.seed, progress=progress)
    return metrics


def evaluate(directory: str, num_particles: Optional[int] = None, progress: bool = False, data=None,
             output: Optional[str] = None, seed: Optional[int] = None, log=None, **options) -> dict:
    """The family's evaluation, with its settings (``num_particles``, ``seed``, and e.g. AIS
    ``temperatures`` for energy families). Written to ``output`` (JSON) when given, else into the run's
    metrics.json when the directory is writable; a read-only run is scored all the same."""
    run = RunDirectory(directory)
    if not distributed.is_main():  # a rank of a distributed evaluation: its share of the runs; rank 0 writes
        return _evaluate_locked(run, num_particles, progress, data, None, seed, None, save=False, **options)
    if output is not None:
        check_output_file(output, (".json",))
        return _evaluate_locked(run, num_particles, progress, data, output, seed, log, **options)
    if not run.writable():
        if log is not None:
            log(f"note: {directory} is not writable; the evaluation is printed, not saved (use -o FILE to keep it)")
        return _evaluate_locked(run, num_particles, progress, data, None, seed, log, save=False, **options)
    with run.lock():
        return _evaluate_locked(run, num_particles, progress, data, None, seed, log, **options)


def _evaluate_locked(run: RunDirectory, num_particles=None, progress=False, data=None, output=None, seed=None,
                     log=None, save: bool = True, **options) -> dict:
    if num_particles is not None and (isinstance(num_particles, bool) or not isinstance(num_particles, int)
                                      or num_particles < 1):
        raise SpecError(f"--particles must be a positive integer, got {num_particles!r}")
    trained = load(run.directory)
    fam = trained.family
    unknown = sorted(set(options) - set(fam.evaluate_options))
    if unknown:
        raise SpecError(f"{fam.name} evaluation takes no --{unknown[0]} (it takes: "
                        f"{', '.join('--' + o for o in ('particles', 'seed', *fam.evaluate_options))})")
    data = data or fam.load_data(trained.spec)
    metrics = fam.evaluate(trained, data, num_particles=num_particles, progress=progress, seed=seed, **options)
    per_image = metrics.pop(PER_IMAGE_KEY, None)
    if output is not None:
        write_json_atomic(metrics, output)
    elif save:
        trained.run.write_metrics(metrics)
        if per_image is not None:  # two models scored on the same images compare pairwise
            trained.run.save_test_log_likelihood(per_image)
    return metrics


def summary(metrics: dict, directory: Optional[str] = None) -> str:
    """The evaluation in one line; with ``directory``, advice that names it (e.g. how to rerun AIS)."""
    return family(metrics["family"]).summary_line(metrics, directory)


def sample(directory: str, n: int, path: str, seed: int = 0, progress: bool = False, **options) -> str:
    """Write an image of ``n`` model samples (format by extension: PNG, JPEG, PDF, SVG) and return its path."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SpecError(f"number of samples must be a positive integer, got {n!r}")
    check_output_file(path, IMAGE_FORMATS)
    trained = load(directory)
    trained.family.check_options(options)
    torch.manual_seed(seed)
    trained.family.sample_grid(trained, n, path, progress=progress, **options)
    return path


def query(directory: str, kind: str, *, split: Optional[str] = None, index: Optional[str] = None, files=(),
          binarize: bool = False, seed: int = 0, device: Optional[str] = None, output: Optional[str] = None,
          png: Optional[str] = None, netcdf: Optional[str] = None, **options) -> Answer:
    """Ask a trained model a question (one of :data:`QUERY_KINDS`) about images of its data split
    (``split``, ``index`` such as ``"0:16"``) or of ``files`` (.npy, .png), routed to its family's
    estimator; write the answer's JSON to ``output``, its picture to ``png`` and its draws to ``netcdf``
    (ArviZ) when given, and return it. Every bad input is a one-line error raised before anything is
    written. ``options`` are the kind's own (``num_particles``, ``mask``, ...; see the family's
    ``query_<kind>``)."""
    check_outputs(kind, output, png, netcdf)
    trained = load(directory)
    trained.family.check_query(trained, kind, options)
    if kind == "sample":
        if split is not None or index is not None or files:
            raise SpecError("sample queries draw from the model and take no --split, --index or --input")
        inputs = None
    else:
        inputs = read_inputs(trained, split, index, files, binarize, seed)
    trained.module.to(resolve_device(device or trained.spec.train.device))
    answer = trained.family.query(trained, kind, inputs, seed=seed, **options)
    write_answer(answer, output, png, netcdf)
    return answer

