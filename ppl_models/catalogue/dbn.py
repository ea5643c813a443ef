r"""The ``dbn`` family: a deep belief net (:mod:`ppl_models.dbn`), pretrained greedily, one RBM at a time.

Training: RBM 1 on the data, then RBM :math:`l` on the hidden probabilities
(``pretrain.upward: probs``) or fresh samples each epoch (``samples``) of the
layers below, each by CD / PCD through the shared driver
(:func:`inference.training.fit`, its own checkpoint per RBM, so a killed run
resumes inside the RBM it was training). ``pretrain.epochs`` / ``pretrain.lr``
give one value per RBM (default: ``train.epochs`` / ``train.lr`` for all).
``train.up_down_epochs`` > 0 then fine-tunes the whole net by the up-down algorithm
(:class:`inference.up_down.UpDown`, untied recognition weights, its own checkpoint).

Evaluation: :math:`\log Z` of the top RBM by AIS (base rate fitted to the
training images' representation at the top RBM's visible layer) and exact when
it has a layer of at most 20 units; the variational lower bound on
:math:`\log p(v)` of each test image from ``train.bound_samples`` draws of the
recognition chain; the exact :math:`\log p(v)` when every hidden layer below
the top has at most 12 units. Samples: block Gibbs in the top RBM through the
MCMC driver, then one ancestral pass down.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from inference.ais import ais_log_partition, default_schedule
from inference.devices import resolve_device
from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition
from inference.queries import GibbsDraws, gibbs_chains
from inference.up_down import UpDown

from ..dbn import MAX_EXACT_LAYER_UNITS, DeepBeliefNet
from ..errors import SpecError
from ..specs import option
from . import energy as energy_base
from .answers import Answer, draws_to_inference_data, estimate
from .energy import EnergyFamily, _finite_or_none
from .energy_plots import save_gibbs_grid
from .plots import new_figure, save_png
from .query_io import choice, positive
from .rbm import CDObjectiveSpec, EnergyTrainSpec
from .run_directory import CHECKPOINT, CURVE
from .sections import DataSpec


@dataclass
class DBNModelSpec:
    hidden: list[int] = option([500, 500, 1000], doc="hidden layer sizes, bottom first (the last two layers form the "
                               "top RBM)", min=1)
    num_visible: Optional[int] = option(None, doc="visible units; None: pixels per image of the data", min=1)
    weight_scale: float = option(0.01, doc="std of every RBM's initial weights", min=0.0)
    base_rate_init: bool = option(True, doc="start RBM 1's visible biases at the training data's log-odds")


@dataclass
class DBNPretrainSpec:
    upward: str = option("probs", doc="what RBM l+1 is trained on: the hidden probabilities of the layers below, "
                         "or samples drawn afresh each epoch", choices=("probs", "samples"))
    epochs: Optional[list[int]] = option(None, doc="pretraining epochs per RBM, bottom first (None: train.epochs "
                                         "for each)", min=1)
    lr: Optional[list[float]] = option(None, doc="learning rate per RBM, bottom first (None: train.lr for each)",
                                       min_exclusive=0.0)
    init: str = option("random", doc="start of RBM l+1: random, or transpose (RBM l upside down where the shapes "
                       "allow it: the bound then starts at the shorter net's; random elsewhere)",
                       choices=("random", "transpose"))


@dataclass
class DBNTrainSpec(EnergyTrainSpec):
    bound_samples: int = option(10, doc="draws of the recognition chain q(h | v) per test image for the lower bound",
                                min=1)
    up_down_epochs: int = option(0, doc="epochs of up-down (contrastive wake-sleep) fine-tuning after pretraining, "
                                 "with untied recognition weights (0: none)", min=0)
    up_down_lr: Optional[float] = option(None, doc="learning rate of up-down fine-tuning (None: train.lr)",
                                         min_exclusive=0.0)


@dataclass
class DBNRunSpec:
    family: str = option("dbn", doc="model family", choices=("dbn",))
    model: DBNModelSpec = field(default_factory=DBNModelSpec)
    objective: CDObjectiveSpec = field(default_factory=CDObjectiveSpec)
    pretrain: DBNPretrainSpec = field(default_factory=DBNPretrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: DBNTrainSpec = field(default_factory=lambda: DBNTrainSpec(epochs=20, ais_temperatures=14500))

    def validate(self):
        n = len(self.model.hidden)
        if n == 0:
            raise SpecError("model.hidden must name at least one hidden layer")
        for key in ("epochs", "lr"):
            values = getattr(self.pretrain, key)
            if values is not None and len(values) != n:
                raise SpecError(f"pretrain.{key} has {len(values)} entries but the DBN has {n} RBMs "
                                f"(model.hidden {self.model.hidden}): give one per RBM, bottom first")


def _layer_curves(history: list, num_rbms: int, path: str, title: str) -> None:
    fig, (left, right) = new_figure(1, 2, figsize=(9, 3.2))
    for l in range(1, num_rbms + 1):
        rows = [h for h in history if f"rbm{l}_pseudo_ll" in h]
        left.plot([h["epoch"] for h in rows], [h[f"rbm{l}_pseudo_ll"] for h in rows], label=f"RBM {l}")
        right.plot([h["epoch"] for h in rows], [h[f"rbm{l}_recon_error"] for h in rows], label=f"RBM {l}")
    left.set_ylabel("train pseudo-LL (nats per input)")
    right.set_ylabel("reconstruction error")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)


def _draw(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fresh 0/1 samples of probabilities ``x`` (the driver's per-batch transform for ``upward: samples``)."""
    return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) < x).to(x.dtype)


class DBNFamily(EnergyFamily):
    name = "dbn"
    summary = ("deep belief net: greedy stack of RBMs (CD / PCD), Gibbs in the top RBM then a pass down, AIS lower "
               "bound on log p(x) (Hinton, Osindero & Teh 2006; Salakhutdinov & Murray 2008)")
    spec_class = DBNRunSpec
    queries = ("sample", "log_prob", "posterior")

    def build(self, spec) -> DeepBeliefNet:
        return DeepBeliefNet([energy_base.num_visible(spec), *spec.model.hidden], weight_scale=spec.model.weight_scale,
                             untied=spec.train.up_down_epochs > 0)

    # -- greedy training --------------------------------------------------------------------------
    def train(self, spec, run, data, progress, log) -> dict:
        o, p, t = spec.objective, spec.pretrain, spec.train
        device = resolve_device(t.device)
        module = self.build(spec)
        if spec.model.base_rate_init:
            self.initialise(spec, module.rbms[0], data.train.x)
        module.to(device)
        x, valid = data.train.x.to(device), (data.valid.x.to(device) if data.valid is not None else None)
        epochs = p.epochs or [t.epochs] * len(module.rbms)
        rates = p.lr or [t.lr] * len(module.rbms)
        log(f"training dbn {'-'.join(map(str, module.layer_sizes))} greedily, {len(module.rbms)} RBMs by "
            f"{o.name.upper()}-{o.k} on {spec.data.dataset} ({x.shape[0]} images), epochs {epochs} -> {run.directory}")
        history: dict[int, dict] = {}
        for l, rbm in enumerate(module.rbms, start=1):
            if l == 1:
                x_l, valid_l, transform = x, valid, data.train_transform
            else:  # the layers below, frozen: their probabilities (or fresh samples of them) are RBM l's data
                module.sync_recognition()  # greedy stage: q is the RBMs' own
                x_l = module.up(x, l - 1)
                valid_l = module.up(valid, l - 1) if valid is not None else None
                transform = _draw if p.upward == "samples" else None
                if p.init == "transpose" and module.tie_to_below(l - 1):  # overwritten by a checkpoint on resume
                    log(f"RBM {l} starts as RBM {l - 1} transposed")
            cd = self.make_objective(spec, rbm)
            couplings = [name for name, role in rbm.parameter_roles.items() if role == "coupling"]
            options = {**t.fit_options(), "epochs": epochs[l - 1], "lr": rates[l - 1]}
            result = energy_base.fit(
                cd, (x_l,), module=rbm, **options, decay=couplings, valid=(valid_l,) if valid_l is not None else None,
                transform=transform, checkpoint_path=run.path(CHECKPOINT if l == 1 else f"checkpoint_rbm{l}.pt"),
                progress=progress, on_epoch_end=self._monitors(rbm, x_l, valid_l, transform), log=log)
            for row in result.history:  # one row per epoch, each RBM's metrics under its own prefix
                merged = history.setdefault(row["epoch"], {"epoch": row["epoch"], "seconds": 0.0})
                merged["seconds"] += row.get("seconds", 0.0)
                merged.update({f"rbm{l}_{k}": v for k, v in row.items() if k not in ("epoch", "seconds")})
        fine_tuning = "none"
        if t.up_down_epochs:
            fine_tuning = f"up-down, {t.up_down_epochs} epochs"
            module.sync_recognition()  # untied from here on; a resumed run's checkpoint overrides this
            log(f"up-down fine-tuning for {t.up_down_epochs} epochs (untied recognition weights)")
            updown = UpDown(module, k=o.k, persistent=o.name == "pcd", num_chains=o.num_chains)
            weights = [name for name, _ in module.named_parameters() if name.endswith("weight")]
            result = energy_base.fit(
                updown, (x,), module=module, **{**t.fit_options(), "epochs": t.up_down_epochs,
                                                "lr": t.up_down_lr or t.lr}, decay=weights,
                valid=(valid,) if valid is not None else None, transform=data.train_transform,
                checkpoint_path=run.path("checkpoint_updown.pt"), progress=progress, log=log)
            for row in result.history:
                merged = history.setdefault(row["epoch"], {"epoch": row["epoch"], "seconds": 0.0})
                merged["seconds"] += row.get("seconds", 0.0)
                merged.update({f"updown_{k}": v for k, v in row.items() if k not in ("epoch", "seconds")})
        module.cpu()
        rows = [history[e] for e in sorted(history)]
        metrics = run.save_trained(module, {
            "family": spec.family, "layer_sizes": module.layer_sizes, "num_visible": module.num_visible,
            "training": f"greedy {o.name.upper()}-{o.k}, upward {p.upward}, init {p.init}", "pretrain_epochs": epochs,
            "pretrain_lr": rates, "fine_tuning": fine_tuning,
            "image_shape": list(data.image_shape), "history": rows})
        _layer_curves(rows, len(module.rbms), run.path(CURVE),
                      f"dbn {'-'.join(map(str, module.layer_sizes))}: greedy pretraining on {spec.data.dataset}")
        return metrics

    # -- evaluation ------------------------------------------------------------------------------
    @staticmethod
    def _exact_possible(module) -> bool:
        top = module.top
        return all(n <= MAX_EXACT_LAYER_UNITS for n in module.layer_sizes[1:-1]) and \
            min(top.num_visible, top.num_hidden) <= MAX_ENUMERATED_UNITS

    @torch.no_grad()
    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None, temperatures=None) -> dict:
        """Top RBM's log Z by AIS (exact too when enumerable), the lower bound on the test log-likelihood with
        its standard error over images, and the exact test log-likelihood for small nets."""
        t = trained.spec.train
        device = resolve_device(t.device)
        module = trained.module.to(device)
        top, L = module.top, len(module.rbms)
        x_test = data.test.x.to(device)
        runs = num_particles or t.eval_particles
        if temperatures is not None or t.ais_schedule is None:
            schedule, note = default_schedule(temperatures or t.ais_temperatures), "Salakhutdinov & Murray 2008, scaled"
        else:
            schedule, note = torch.tensor(t.ais_schedule, dtype=torch.float64), "explicit (train.ais_schedule)"
        base = top.base_rate(module.up(data.train.x.to(device), L - 1))
        torch.manual_seed(t.seed if seed is None else seed)
        started = time.perf_counter()
        ais = ais_log_partition(top, num_runs=runs, schedule=schedule, base=base, groups=min(2, runs), progress=progress)
        ais_seconds = time.perf_counter() - started
        bound, _ = module.lower_bound(x_test, ais.log_z, t.bound_samples)
        metrics = dict(trained.metrics)
        for key in ("exact_log_z", "test_lower_bound_exact_log_z", "test_log_likelihood_exact", "ais_error"):
            metrics.pop(key, None)
        metrics.update(
            test_lower_bound=float(bound.mean()), test_lower_bound_stderr=float(bound.std() / math.sqrt(len(bound))),
            test_lower_bound_interval=[_finite_or_none(float(bound.mean()) + ais.log_z - ais.log_z_upper),
                                       _finite_or_none(float(bound.mean()) + ais.log_z - ais.log_z_lower)],
            bound_samples=t.bound_samples, ais_log_z=ais.log_z, ais_log_z_std=ais.log_z_std,
            ais_log_z_interval_3sigma=[_finite_or_none(ais.log_z_lower), _finite_or_none(ais.log_z_upper)],
            ais_log_z_halves=list(ais.group_log_z), ais_runs=runs, ais_temperatures=int(schedule.numel()),
            ais_schedule=note, ais_seconds=ais_seconds, ais_stable=bool(ais.stable), test_images=len(bound),
            ais_base="base-rate model of the training images' representation at the top RBM's visible layer",
            log_likelihood_units="nats per binary image")
        if min(top.num_visible, top.num_hidden) <= MAX_ENUMERATED_UNITS:
            exact = float(log_partition(top))
            metrics.update(exact_log_z=exact, ais_error=ais.log_z - exact,
                           test_lower_bound_exact_log_z=float(bound.mean()) + ais.log_z - exact)
            if self._exact_possible(module):
                metrics["test_log_likelihood_exact"] = float(module.exact_log_prob(x_test, exact).mean())
        module.cpu()
        metrics["eval_seconds"] = time.perf_counter() - started
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        line = (f"test log-likelihood >= {metrics['test_lower_bound']:.2f} ± {metrics['test_lower_bound_stderr']:.2f} "
                f"(variational lower bound, {metrics['bound_samples']} draws of q per image, stderr over "
                f"{metrics['test_images']} images) {metrics['log_likelihood_units']}; top RBM's "
                f"{energy_base.ais_clause(metrics)}")
        if not metrics.get("ais_stable", True):
            line += "; WARNING: AIS not stable (spread too large or halves disagree): evaluate with more temperatures"
        if "test_log_likelihood_exact" in metrics:
            line += f"; exact: log Z {metrics['exact_log_z']:.2f}, test log-likelihood {metrics['test_log_likelihood_exact']:.2f}"
        return line

    def _top_log_z(self, trained) -> tuple[float, float, str]:
        m = trained.metrics
        if "exact_log_z" in m:
            return m["exact_log_z"], 0.0, "exact (enumeration)"
        if "ais_log_z" in m:
            return m["ais_log_z"], m["ais_log_z_std"], "AIS (the run's evaluation)"
        raise SpecError(f"{trained.directory} has no log Z yet: run `ppl-models evaluate {trained.directory}` first")

    def log_likelihood(self, trained, x, num_particles=None) -> torch.Tensor:
        """Exact log p(x) for small nets, else the lower bound (``train.bound_samples`` draws of q per image)."""
        module = trained.module
        log_z, _, _ = self._top_log_z(trained)
        with torch.no_grad():
            x = x.to(next(module.parameters()))
            if self._exact_possible(module):
                return module.exact_log_prob(x, log_z)
            return module.lower_bound(x, log_z, num_particles or trained.spec.train.bound_samples)[0]

    # -- sampling: Gibbs in the top RBM, then one pass down -----------------------------------------------
    def _chains(self, module, num_chains, warmup, draws, thin=1, clamp_mask=None, clamp_values=None,
                diagnose=True, progress=False) -> GibbsDraws:
        """Block-Gibbs chains of the top RBM through the MCMC driver (diagnostics are the top RBM's), each
        chain's last state passed down once: ``v`` a draw, ``v_mean`` p(v = 1 | z_1) of the pass."""
        if clamp_mask is not None:
            raise SpecError("a DBN has no clamped sampler: its lower layers are directed")
        g = gibbs_chains(module.top, num_chains, warmup, draws, thin, diagnose=diagnose, progress=progress)
        if len(module.rbms) == 1:
            return g
        v, mean = module.generate(g.v)
        return GibbsDraws(v, mean, g.result)

    def sample(self, trained, n: int, progress: bool = False, **options) -> torch.Tensor:
        mode, sweeps = self._options(trained, options)
        if mode != "samples":
            raise SpecError("dbn samples take mode samples only (no completion: the lower layers are directed)")
        with torch.no_grad():
            return self._chains(trained.module, n, sweeps - 1, 1, diagnose=False).v_mean

    def sample_grid(self, trained, n: int, path: str, progress: bool = False, **options) -> None:
        _, sweeps = self._options(trained, options)
        save_gibbs_grid(self.sample(trained, n, progress=progress, **options), trained.image_shape, path,
                        title=f"dbn: {n} chains, {sweeps} Gibbs sweeps of the top RBM, then p(v | h1) of a pass down")

    def query_sample(self, trained, inputs, num_samples: int = 16, sweeps: int = None, draws: int = 100,
                     thin: int = 1) -> Answer:
        answer = super().query_sample(trained, inputs, num_samples, sweeps, draws, thin)
        answer.numbers["estimator"] = ("block Gibbs in the top RBM through pyro.infer.MCMC (one chain per sample from "
                                       "a random state; R-hat and ESS of the top RBM's chains), then one ancestral "
                                       "pass down the directed layers")
        answer.numbers["images_shown"] = "p(v = 1 | z_1) of the pass down from each chain's last state"
        return answer

    def why_not(self, trained, kind: str):
        if kind == "complete":
            return "its lower layers are directed: no clamped Gibbs sampler of p(v_missing | v_observed)"
        return super().why_not(trained, kind)

    # -- log_prob and posterior ----------------------------------------------------------------------
    def query_log_prob(self, trained, inputs, estimator: str = "auto", num_particles: int = None) -> Answer:
        choice("estimator", estimator, ("auto", "exact", "bound"))
        samples = positive("num_particles", num_particles, allow_none=True) or trained.spec.train.bound_samples
        module = trained.module
        if estimator == "auto":
            estimator = "exact" if self._exact_possible(module) else "bound"
        if estimator == "exact" and not self._exact_possible(module):
            raise SpecError(f"dbn: exact log p(x) needs hidden layers below the top of at most {MAX_EXACT_LAYER_UNITS} "
                            f"units, the net is {module.layer_sizes}; use --estimator bound")
        log_z, log_z_se, how = self._top_log_z(trained)
        if estimator == "exact":
            ll, se = module.exact_log_prob(inputs.x, log_z), torch.full((inputs.x.shape[0],), log_z_se)
            text = "exact: the hidden layers below the top summed out one pair at a time, the top RBM's log Z " + how
        else:
            ll, mc = module.lower_bound(inputs.x, log_z, samples)
            se = (mc.pow(2) + log_z_se**2).sqrt()
            text = (f"variational lower bound E_q[log p(v, h) - log q(h | v)] with the recognition weights, {samples} "
                    f"draws of q per image, the top RBM's log Z {how}; stderr: Monte Carlo and log Z's")
        numbers = {"estimator": text, "is_bound": estimator == "bound", "settings": {"bound_samples": samples},
                   "log_z": estimate(log_z, log_z_se), "units": "nats per binary image", "mean": float(ll.mean()),
                   "inputs": [{"input": name, "log_prob": float(ll[i]), "stderr": float(se[i])}
                              for i, name in enumerate(inputs.names)]}
        return Answer("log_prob", numbers, {"log_prob": ll, "stderr": se})

    def posterior(self, trained, x, num_samples: int = 1) -> dict:
        """The recognition probabilities q(h_l = 1 | layers below) of every hidden layer, ``{"h1": (N, n_1), ...}``
        (mean-field up pass: an approximation of the posterior, exact only for the top RBM given its input)."""
        module = trained.module
        with torch.no_grad():
            x = x.to(next(module.parameters()))
            return {f"h{l}": module.up(x, l) for l in range(1, len(module.rbms) + 1)}

    def query_posterior(self, trained, inputs, num_samples: int = 100) -> Answer:
        s = positive("num_samples", num_samples)
        module = trained.module
        draws, means = {}, {}
        z = inputs.x.expand(s, *inputs.x.shape)
        for l in range(1, len(module.rbms) + 1):  # the recognition chain, sampled layer by layer
            probs = torch.sigmoid(module.recognition_logits(z, l - 1))
            z = torch.bernoulli(probs)
            draws[f"h{l}"], means[f"h{l}"] = z, z.mean(0)
        numbers = {"estimator": "approximate: the DBN's recognition chain q(h_l | h_l-1) (the transposed generative "
                                "weights, or the untied recognition weights after up-down fine-tuning; Hinton et al. "
                                "2006), sampled layer by layer; not the exact posterior",
                   "settings": {"num_samples": s},
                   "latents": {k: {"mean": m, "sd": (m * (1 - m)).sqrt(), "mean_stderr": (m * (1 - m) / s).sqrt()}
                               for k, m in means.items()}}
        return Answer("posterior", numbers, dict(draws), draws_to_inference_data(draws, inputs.names))
