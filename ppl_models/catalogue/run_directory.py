"""The run directory: one place that reads and writes a trained model's files.

::

    spec.json               the full spec (model, objective, data, train)
    model.yaml              the model file it was trained from, byte for byte (model.json for a JSON
                            file; none when trained from a family name alone)
    checkpoint.pt           the driver's per-epoch checkpoint (resume)
    model.pt                final weights
    metrics.json            evaluation and the per-epoch history
    test_log_likelihood.pt  per-image test log-likelihoods, for paired comparisons
    samples.png             a grid of model samples
    training_curve.png      training curves
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import torch

from inference.checkpoint import load_checkpoint, read_json, save_atomic
from inference.fileio import write_bytes_atomic, write_json_atomic

from ..errors import CheckpointError, SpecError
from .sections import RESUMABLE_CHANGES

if TYPE_CHECKING:  # pragma: no cover
    from .family import Family

SPEC, WEIGHTS, METRICS, CHECKPOINT = "spec.json", "model.pt", "metrics.json", "checkpoint.pt"
SAMPLES, CURVE, TEST_LOG_LIKELIHOOD = "samples.png", "training_curve.png", "test_log_likelihood.pt"
#: the names a run keeps its source model file under: YAML, JSON (the one written replaces the other)
MODEL_FILES = ("model.yaml", "model.json")
LOCK = ".lock"
#: a family's evaluate may return per-image log-likelihoods under this key; the catalogue saves them
#: beside the metrics (when it writes into the run) and never into JSON
PER_IMAGE_KEY = "_per_image_log_likelihood"


def check_output_file(path: str, extensions) -> None:
    """One-line errors for an output path that names a directory or a format we cannot write."""
    if os.path.isdir(path):
        raise SpecError(f"output {path} is a directory; give a file name ending in {', '.join(extensions)}")
    extension = os.path.splitext(path)[1].lower()
    if extension not in extensions:
        raise SpecError(f"output {path}: unknown format {extension or '(no extension)'!r}; "
                        f"use one of {', '.join(extensions)}")


def _differences(a: dict, b: dict, prefix=()) -> list:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, prefix + (key,))
        elif va != vb and prefix + (key,) not in RESUMABLE_CHANGES:
            out.append((".".join(prefix + (key,)), va, vb))
    return out


class RunDirectory:
    """The files of one run; ``path(NAME)`` is where a file lives."""

    def __init__(self, directory: str):
        self.directory = directory

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def check_writable_target(self) -> None:
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"--out {self.directory} is a file, not a run directory; choose another --out")

    def writable(self) -> bool:
        return os.access(self.directory, os.W_OK)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock file while writing it; a second writer is refused with the holder's PID.

        ``flock`` is released by the kernel when a process dies, so a killed run leaves no stale lock;
        the file is removed on release (while still held, and a writer that locked a removed file
        retries), so a finished run directory holds only its results.
        """
        os.makedirs(self.directory, exist_ok=True)
        while True:
            fd = os.open(self.path(LOCK), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CheckpointError(f"{self.directory} is being written by another process (PID {holder}); "
                                      "wait for it to finish or choose another --out") from None
            try:
                same = os.stat(self.path(LOCK)).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file we locked: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(LOCK))
            os.close(fd)  # closing releases the lock

    def finished(self, epochs: int):
        """The metrics of a run already trained for ``epochs`` (or stopped early) and evaluated, else None."""
        if not all(os.path.exists(self.path(name)) for name in (WEIGHTS, METRICS, SAMPLES)):
            return None
        metrics = self.read_metrics()
        done = len(metrics.get("history", [])) >= epochs or metrics.get("stopped_early")
        return metrics if done and "eval_seconds" in metrics else None

    def check_same_model(self, spec_dict: dict, normalise: Callable[[dict], dict]) -> None:
        """Refuse (writing nothing) a directory that holds another model or foreign files. ``normalise``
        fills an older spec's missing keys with defaults, so a spec written before a key existed matches."""
        if os.path.exists(self.path(SPEC)):
            diffs = _differences(normalise(self.read_spec()), spec_dict)
            if diffs:
                key, was, now = diffs[0]
                raise CheckpointError(f"{self.directory} already holds a different model ({key}: {was!r} there, "
                                      f"{now!r} now); choose another --out or remove it")
        elif os.path.isdir(self.directory) and set(os.listdir(self.directory)) - {LOCK}:
            raise CheckpointError(f"{self.directory} exists and is not a ppl-models run directory (no spec.json); "
                                  "choose another --out")

    def write_spec(self, spec_dict: dict) -> None:
        write_json_atomic(spec_dict, self.path(SPEC))

    def write_model_file(self, name: str, raw: bytes) -> None:
        """Keep the model file the run was (last) trained from, byte for byte, as ``name`` (one of
        :data:`MODEL_FILES`); a resumed run trained from another file keeps the newer one only."""
        if name not in MODEL_FILES:
            raise ValueError(f"a run keeps its model file as one of {MODEL_FILES}, not {name!r}")
        write_bytes_atomic(self.path(name), raw)
        for other in MODEL_FILES:
            if other != name:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(other))

    def read_spec(self) -> dict:
        return read_json(self.path(SPEC), "spec")

    def read_metrics(self) -> dict:
        return read_json(self.path(METRICS), "metrics") if os.path.exists(self.path(METRICS)) else {}

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(metrics, self.path(METRICS))

    def save_trained(self, module: torch.nn.Module, metrics: dict, earlier_seconds: float = 0.0) -> dict:
        """Write a finished run's weights and metrics atomically. ``train_seconds`` is summed over the
        history's per-epoch ``seconds``, so a run resumed after a kill reports its whole training time,
        plus ``earlier_seconds``: phases the history does not hold (a DBM's pretraining)."""
        metrics = dict(metrics)
        metrics["train_seconds"] = earlier_seconds + sum(h.get("seconds", 0.0) for h in metrics.get("history", []))
        save_atomic(module.state_dict(), self.path(WEIGHTS))
        self.write_metrics(metrics)
        return metrics

    def load_weights(self, module: torch.nn.Module) -> None:
        if not os.path.exists(self.path(WEIGHTS)):
            raise CheckpointError(f"{self.directory} has no model.pt: training has not finished (re-run train to resume)")
        try:
            module.load_state_dict(load_checkpoint(self.path(WEIGHTS), map_location="cpu"))
        except RuntimeError as e:  # keys or shapes of another version or model
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{self.path(WEIGHTS)} does not fit this version's {type(module).__name__} "
                                  f"({first}); train the model again") from None

    def save_test_log_likelihood(self, ll: torch.Tensor) -> None:
        save_atomic(ll.cpu(), self.path(TEST_LOG_LIKELIHOOD))


@dataclass
class TrainedModel:
    """A run directory loaded back: the spec, the module with its weights, the metrics, its family."""

    directory: str
    spec: object
    module: torch.nn.Module
    metrics: dict
    family: "Family"
    _data: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def run(self) -> RunDirectory:
        return RunDirectory(self.directory)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.metrics.get("image_shape") or (1, -1))

    def sample(self, n: int, **options) -> torch.Tensor:
        """``n`` images from the model (see the family's ``sample``)."""
        return self.family.sample(self, n, **options)

    def log_likelihood(self, x: torch.Tensor, num_particles=None) -> torch.Tensor:
        """log p(x) per image (nats), by the family's estimator."""
        return self.family.log_likelihood(self, x, num_particles)

    def posterior(self, x: torch.Tensor, num_samples: int = 1) -> dict:
        """The latent variables given ``x`` (see the family's ``posterior``)."""
        return self.family.posterior(self, x, num_samples)

    def data(self):
        """The model's data splits, as its spec loads them (read once, then kept)."""
        if self._data is None:
            self._data = self.family.load_data(self.spec)
        return self._data

    def query(self, kind: str, x=None, *, split: Optional[str] = None, index: Optional[str] = None, **options):
        """Ask the model a question: ``sample``, ``log_prob``, ``posterior``, ``complete`` or ``classify``
        about images ``x`` (an ``(N, D)`` tensor), or about images of the model's own data, as the CLI's
        ``--split``/``--index`` say (``split``: train, valid or test; ``index``: ``"0:16"``, ``"5"`` or
        ``"1,4,9"``); by default the first 16 test images. Returns an
        :class:`~ppl_models.catalogue.answers.Answer`: its ``numbers`` (estimator, settings, values with
        their uncertainty), ``tensors``, ``inference_data`` and ``picture``. A kind the family cannot
        answer is refused in one line naming those it can.

        ``model.query("log_prob", x, num_particles=1000)``, ``model.query("complete", x, mask="top")``,
        ``model.query("posterior", split="valid", index="0:4")``
        """
        if split is not None or index is not None:
            if x is not None:
                raise SpecError("give either images x or split/index, not both")
            if kind == "sample":
                raise SpecError("sample queries draw from the model and take no split or index")
            from .query_io import read_inputs  # query_io imports this module

            x = read_inputs(self, split, index, seed=options.get("seed") or 0)
        return self.family.query(self, kind, x, **options)
