"""What a family of the catalogue provides: the interface every registered family implements.

A family joins a model file (what the model is) to the inference that fits
and queries it. Two bases carry what families of a kind share:
:class:`~ppl_models.catalogue.directed.DirectedFamily` (a Pyro model/guide
pair) and :class:`~ppl_models.catalogue.energy.EnergyFamily` (an energy with
a Gibbs kernel); a new family subclasses one, supplies its spec and builder
(and, for a directed family, its objectives), and adds one line to
:mod:`ppl_models.catalogue.registry`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Optional

import pyro
import torch

from ..data import check_binary, load_dataset
from ..errors import DataError, SpecError
from .answers import QUERY_KINDS, Answer
from .plots import save_image_grid
from .query_io import Inputs, check_inputs, option_name, read_inputs

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Splits
    from .run_directory import RunDirectory, TrainedModel


def count(n: int, noun: str) -> str:
    """``count(1, "epoch")`` is "1 epoch", ``count(3, "epoch")`` "3 epochs"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


class Family(ABC):
    """One family of the catalogue.

    :cvar name: the name users type (``ppl-models train NAME``).
    :cvar kind: ``"directed"`` or ``"energy"``.
    :cvar summary: one line for ``ppl-models list``, with the paper.
    :cvar spec_class: the run spec dataclass; ``spec_class()`` is the family's default spec.
    :cvar sample_options: the keyword options :meth:`sample` takes (checked, named in errors).
    :cvar evaluate_options: the keyword options :meth:`evaluate` takes beyond particles and seed.
    :cvar queries: the query kinds the family answers (:data:`~ppl_models.catalogue.answers.QUERY_KINDS`),
        each by a method ``query_<kind>(trained, inputs, **options)`` returning an
        :class:`~ppl_models.catalogue.answers.Answer`.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    summary: ClassVar[str]
    spec_class: ClassVar[type]
    sample_options: ClassVar[tuple] = ()
    evaluate_options: ClassVar[tuple] = ()
    queries: ClassVar[tuple] = ()

    # -- data and model ------------------------------------------------------------
    def needs_binary_data(self, spec) -> bool:
        """Whether the model's visible units are binary (then every split it scores must be 0/1)."""
        return False

    def load_data(self, spec) -> "Splits":
        """The data splits the spec names, checked for what the model needs."""
        d = spec.data
        data = load_dataset(d.dataset, path=d.path, binarize=d.binarize, threshold=d.threshold,
                            valid_size=d.valid_size, test_size=d.test_size, split_seed=d.split_seed)
        if self.needs_binary_data(spec):
            if d.binarize == "none":
                raise DataError(f"the {self.name} family needs binary data but data.binarize is none ({d.dataset} is "
                                "grey-level); use --set data.binarize=threshold or dynamic, or a grey-level "
                                "likelihood or family")
            # dynamic binarisation leaves the training split grey (binarised per batch); the others are scored
            for name in ("valid", "test") + (("train",) if d.binarize == "threshold" else ()):
                split = getattr(data, name)
                if split is not None:
                    check_binary(split.x, f"{d.dataset} {name} split")
        return data

    @abstractmethod
    def resolve(self, spec, data: "Splits") -> None:
        """Fill in what the spec leaves to the data (input size, classes), or say why they disagree."""

    @abstractmethod
    def build(self, spec) -> torch.nn.Module:
        """The untrained model module of a resolved spec."""

    # -- training and evaluation -----------------------------------------------------
    @abstractmethod
    def train(self, spec, run: "RunDirectory", data: "Splits", progress: bool, log) -> dict:
        """Train through :func:`inference.training.fit` into ``run`` (resuming its checkpoint);
        write the weights, metrics and curves; return the metrics."""

    @abstractmethod
    def evaluate(self, trained: "TrainedModel", data: "Splits", num_particles: Optional[int] = None,
                 progress: bool = False, seed: Optional[int] = None, **options) -> dict:
        """The family's test figures, merged into the trained model's metrics (nothing written: the
        catalogue saves them). Per-image log-likelihoods may ride along under ``PER_IMAGE_KEY``."""

    @abstractmethod
    def summary_line(self, metrics: dict, directory: Optional[str] = None) -> str:
        """One line of the evaluation for a person (what ``ppl-models train/evaluate`` print); advice in
        it names ``directory`` so that it can be followed as printed."""

    @abstractmethod
    def log_likelihood(self, trained: "TrainedModel", x: torch.Tensor, num_particles: Optional[int] = None) -> torch.Tensor:
        """log p(x) per image (nats) by the family's estimator (exact, importance sampling or AIS)."""

    # -- queries ------------------------------------------------------------------------
    @abstractmethod
    def sample(self, trained: "TrainedModel", n: int, **options) -> torch.Tensor:
        """``n`` images (pixel values in [0, 1]), flat ``(n, D)``."""

    @abstractmethod
    def posterior(self, trained: "TrainedModel", x: torch.Tensor, num_samples: int = 1) -> dict:
        """The latent (or hidden) variables given images ``x``: ``{site: tensor}``."""

    def sample_grid(self, trained: "TrainedModel", n: int, path: str, progress: bool = False, **options) -> None:
        """A picture of :meth:`sample`'s images (format by the path's extension)."""
        save_image_grid(self.sample(trained, n, **options), trained.image_shape, path,
                        title=f"{self.name}: {n} samples")

    def check_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.sample_options))
        if unknown:
            names = list(self.sample_options)
            allowed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names) or "none"
            raise SpecError(f"{self.name} samples take the options {allowed}, got {', '.join(unknown)}")

    # -- the query interface ------------------------------------------------------------
    def why_not(self, trained: "TrainedModel", kind: str) -> Optional[str]:
        """Why this trained model cannot answer ``kind`` queries, or None when it can."""
        if kind in self.queries:
            return None
        return "it has no class variable" if kind == "classify" else "it has no estimator for it"

    def answerable(self, trained: "TrainedModel") -> tuple:
        """The query kinds this trained model answers."""
        return tuple(k for k in QUERY_KINDS if self.why_not(trained, k) is None)

    def check_query(self, trained: "TrainedModel", kind: str, options: dict) -> None:
        """Refuse, in one line, a query this trained model cannot answer or an option its kind does not take."""
        if kind not in QUERY_KINDS:
            raise SpecError(f"unknown query {kind!r}; the queries are: {', '.join(QUERY_KINDS)}")
        reason = self.why_not(trained, kind)
        if reason is not None:
            raise SpecError(f"{self.name} cannot answer {kind} queries ({reason}); it answers: "
                            f"{', '.join(self.answerable(trained))}")
        accepted = [p for p in inspect.signature(getattr(self, f"query_{kind}")).parameters
                    if p not in ("trained", "inputs")]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise SpecError(f"{self.name} {kind} queries take no {option_name(unknown[0])}; they take: "
                            f"{', '.join(map(option_name, accepted)) or 'no options'}")

    def query(self, trained: "TrainedModel", kind: str, inputs=None, seed: Optional[int] = 0, **options) -> Answer:
        """Answer a ``kind`` query about ``inputs`` (an :class:`~ppl_models.catalogue.query_io.Inputs` or an
        ``(N, D)`` tensor of images; default: the first 16 test images), or refuse it in one line naming
        the kinds this model answers. ``seed`` seeds every draw (None: leave the generators as they are)."""
        self.check_query(trained, kind, options)
        if kind == "sample" and inputs is not None:
            raise SpecError("sample queries draw from the model and take no input images")
        if kind != "sample":
            inputs = check_inputs(trained, read_inputs(trained) if inputs is None else Inputs.of(inputs))
            like = next(trained.module.parameters())
            inputs = Inputs(inputs.x.to(like.device), inputs.names, inputs.labels, inputs.source)
        if seed is not None:
            pyro.set_rng_seed(seed)
        with torch.no_grad():
            answer = getattr(self, f"query_{kind}")(trained, inputs, **options)
        answer.numbers = {"query": kind, "family": self.name, "model": trained.directory,
                          **({"inputs_from": inputs.source} if inputs is not None else {}), "seed": seed,
                          **answer.numbers}
        answer.tensors = {k: v.cpu() if torch.is_tensor(v) else v for k, v in answer.tensors.items()}
        return answer
