r"""The ``dbm`` family: a deep Boltzmann machine, pretrained greedily then trained jointly, scored by AIS.

Training (Salakhutdinov & Hinton 2009, 2012): greedy layer-wise pretraining,
one RBM per hidden layer with the tied (doubled) copies the DBM needs at the
bottom and top (:mod:`ppl_models.dbm_pretraining`), each trained by the shared
PCD objective through :func:`inference.training.fit`; the stack composed into
a DBM; then joint training by the same objective, its data statistics the
mean-field posterior (:mod:`inference.mean_field`) and its model statistics the
persistent block-Gibbs chains over the even / odd layers.

Evaluation: :math:`\log Z` by AIS on the even block with the odd layers summed
out (any depth), and the variational lower bound
:math:`\log p(v) \ge -E(v, \mu) + \mathrm H(\mu) - \log Z` with the mean-field
:math:`\mu` per test image. With at most 20 odd-layer units, exact :math:`\log Z`
and exact :math:`\log p(v)` (odd layers enumerated, even ones summed) too.

Queries: ``sample`` and ``complete`` by (clamped) block Gibbs on the even / odd
blocks, ``log_prob`` the bound (or exact), ``posterior`` mean-field or clamped Gibbs
(:mod:`.dbm_queries`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from inference.ais import ais_log_partition, default_schedule
from inference.contrastive_divergence import ContrastiveDivergence
from inference.devices import resolve_device
from inference.exact_enumeration import MAX_ENUMERATED_UNITS, log_partition, log_prob_observed
from inference.mean_field import mean_field

from ..dbm import DBM
from ..dbm_pretraining import compose_dbm, pretraining_rbms
from ..errors import SpecError
from ..specs import option
from . import energy as energy_base
from .dbm_queries import DBMQueries
from .energy_plots import save_energy_curves
from .family import count
from .rbm import EnergyTrainSpec
from .run_directory import CHECKPOINT, CURVE
from .sections import DataSpec

MONITOR_SIZE = 1000


@dataclass
class DBMModelSpec:
    hidden: list[int] = option([500, 1000], doc="hidden layer sizes, bottom first (2: the classic DBM; any number >= 1)")
    num_visible: Optional[int] = option(None, doc="visible units; None: pixels per image of the data", min=1)
    weight_scale: float = option(0.01, doc="std of the initial weights", min=0.0)

    def validate(self):
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise SpecError(f"model.hidden must be a non-empty list of positive layer sizes, got {self.hidden!r}")


@dataclass
class DBMObjectiveSpec:
    name: str = option("pcd", doc="joint training: mean-field data statistics, persistent Gibbs chains for the "
                       "model statistics (Salakhutdinov & Hinton 2009)", choices=("pcd",))
    k: int = option(1, doc="Gibbs sweeps (even then odd layers) of the persistent chains per update", min=1)
    num_chains: int = option(100, doc="persistent chains", min=1)
    mean_field_tol: float = option(1e-3, doc="training: mean-field stops when no mean moves more than this",
                                   min_exclusive=0.0)
    mean_field_iterations: int = option(30, doc="training: at most this many mean-field sweeps", min=1)
    mean_field_damping: float = option(0.0, doc="mean-field damping in [0, 1) (0: plain fixed-point updates)", min=0.0)
    fused_sgd: bool = option(True, doc="with SGD and no weight decay (train.weight_decay 0; any train.momentum): fold the update, or the momentum's, into the statistic's GEMM (the same update up to rounding, without a pass over the weights); false: the optimiser applies it (pretraining and joint training)")

    def validate(self):
        if self.mean_field_damping >= 1:
            raise SpecError(f"objective.mean_field_damping must lie in [0, 1), got {self.mean_field_damping!r}")


@dataclass
class DBMPretrainSpec:
    epochs: list[int] = option([20, 20], doc="greedy pretraining epochs of each hidden layer's RBM, bottom first "
                               "([]: none, the DBM starts from small random weights)")
    lr: float = option(0.001, doc="pretraining learning rate (the other optimiser settings are train's; the tied "
                       "copies double the gradient: 0.01 left a 784-16-200 DBM on MNIST-5k at -204 nats, 0.001 -162)",
                       min_exclusive=0.0)
    k: int = option(1, doc="pretraining: Gibbs sweeps per update of the RBMs' persistent chains", min=1)


@dataclass
class DBMTrainSpec(EnergyTrainSpec):
    lr: float = option(0.005, doc="joint-training learning rate", min_exclusive=0.0)
    eval_tol: float = option(1e-5, doc="evaluation: mean-field tolerance of the bound", min_exclusive=0.0)
    eval_iterations: int = option(200, doc="evaluation: at most this many mean-field sweeps", min=1)


@dataclass
class DBMRunSpec:
    family: str = option("dbm", doc="model family", choices=("dbm",))
    model: DBMModelSpec = field(default_factory=DBMModelSpec)
    objective: DBMObjectiveSpec = field(default_factory=DBMObjectiveSpec)
    pretrain: DBMPretrainSpec = field(default_factory=DBMPretrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: DBMTrainSpec = field(default_factory=DBMTrainSpec)

    def validate(self):
        epochs, layers = self.pretrain.epochs, len(self.model.hidden)
        if epochs and len(epochs) != layers:
            raise SpecError(f"pretrain.epochs gives {len(epochs)} layers' epochs {epochs} but model.hidden has {layers} "
                            f"hidden layers {self.model.hidden}; give one per layer, or [] for none")
        if any(e < 1 for e in epochs):
            raise SpecError(f"pretrain.epochs must be positive integers, got {epochs!r}")


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


class DBMFamily(DBMQueries, energy_base.EnergyFamily):
    name = "dbm"
    summary = ("deep Boltzmann machine, any depth: greedy pretraining with doubled weights, mean-field + PCD joint "
               "training, AIS bound (Salakhutdinov & Hinton 2009)")
    spec_class = DBMRunSpec

    def layer_sizes(self, spec) -> list:
        return [energy_base.num_visible(spec), *spec.model.hidden]

    def build(self, spec) -> DBM:
        return DBM(self.layer_sizes(spec), weight_scale=spec.model.weight_scale)

    def mean_field_options(self, spec, evaluation: bool = False) -> dict:
        if evaluation:
            return {"tol": spec.train.eval_tol, "max_iter": spec.train.eval_iterations,
                    "damping": spec.objective.mean_field_damping}
        o = spec.objective
        return {"tol": o.mean_field_tol, "max_iter": o.mean_field_iterations, "damping": o.mean_field_damping}

    # -- training ---------------------------------------------------------------------------
    def _fit_options(self, spec, **changes) -> dict:
        return {**spec.train.fit_options(), **changes}

    def pretrain(self, spec, run, x, transform, progress, log) -> tuple[DBM, list]:
        """Greedy layer-wise pretraining (each RBM through the shared driver, resumable) composed into a DBM;
        with each layer's training seconds, summed over its epochs' (a resumed layer keeps its earlier time)."""
        p, o = spec.pretrain, spec.objective
        rbms = pretraining_rbms(self.layer_sizes(spec), spec.model.weight_scale)
        inputs, seconds = x, []
        for l, (rbm, epochs) in enumerate(zip(rbms, p.epochs), start=1):
            rbm.to(x.device)
            if l == 1:
                with torch.no_grad():
                    rbm.visible_bias.copy_(rbm.base_rate(rbm.tile(x))[:rbm.layer_visible].clamp(-8, 8))
            log(f"pretraining layer {l}: RBM {rbm.layer_visible}x{rbm.layer_hidden} with {rbm.visible_copies} visible / "
                f"{rbm.hidden_copies} hidden tied copies, PCD-{p.k}, {count(epochs, 'epoch')}")
            cd = ContrastiveDivergence(rbm, k=p.k, persistent=True, num_chains=o.num_chains, data_statistics=rbm.tile,
                                       fused_sgd=o.fused_sgd)
            result = energy_base.fit(cd, (inputs,), module=rbm,
                                     **self._fit_options(spec, epochs=epochs, lr=p.lr, patience=None),
                                     decay=["weight"], transform=transform if l == 1 else None,
                                     checkpoint_path=run.path(f"pretrain_layer{l}.pt"), progress=progress, log=log)
            seconds.append(sum(h.get("seconds", 0.0) for h in result.history))
            with torch.no_grad():
                inputs = rbm.up(inputs)  # the next RBM's data: this layer's probabilities given the one below
        return compose_dbm([r.cpu() for r in rbms]), seconds

    def train(self, spec, run, data, progress, log) -> dict:
        t = spec.train
        device = resolve_device(t.device)
        x = data.train.x.to(device)
        valid = data.valid.x.to(device) if data.valid is not None else None
        transform = data.train_transform
        sizes = self.layer_sizes(spec)
        pretrain_seconds = []  # per layer, from the layers' histories: a resumed run reports its whole time
        if spec.pretrain.epochs:
            module, pretrain_seconds = self.pretrain(spec, run, x, transform, progress, log)
        else:
            module = self.build(spec)
            with torch.no_grad():
                module.biases[0].copy_(module.base_rate(x)[:module.num_data].clamp(-8, 8))
        module.to(device)
        log(f"training dbm {'-'.join(map(str, sizes))} jointly (mean-field + PCD-{spec.objective.k}, "
            f"{spec.objective.num_chains} chains) on {spec.data.dataset} ({x.shape[0]} images) for "
            f"{count(t.epochs, 'epoch')} -> {run.directory}")
        options = self.mean_field_options(spec)
        not_converged = [0]

        def data_statistics(v):
            result = mean_field(module, v, warn=False, **options)
            not_converged[0] += not result.converged
            return module.even_block(v, result.means)

        cd = ContrastiveDivergence(module, k=spec.objective.k, persistent=True, num_chains=spec.objective.num_chains,
                                   data_statistics=data_statistics, fused_sgd=spec.objective.fused_sgd)
        couplings = [name for name, role in module.parameter_roles.items() if role == "coupling"]
        result = energy_base.fit(cd, (x,), module=module, **t.fit_options(), decay=couplings,
                                 valid=(valid,) if valid is not None else None, transform=transform,
                                 checkpoint_path=run.path(CHECKPOINT), progress=progress,
                                 on_epoch_end=self._monitors(module, x, valid, transform, not_converged, options),
                                 log=log)
        module.cpu()
        metrics = run.save_trained(module, {
            "family": spec.family, "num_visible": sizes[0], "layer_sizes": sizes,
            "training": f"greedy pretraining {spec.pretrain.epochs or 'none'} + mean-field/PCD-{spec.objective.k}",
            "pretrain_seconds_per_layer": pretrain_seconds, "pretrain_seconds": sum(pretrain_seconds),
            "joint_seconds": sum(h.get("seconds", 0.0) for h in result.history),
            "resumed_from_epoch": result.resumed_from, "image_shape": list(data.image_shape), "history": result.history},
            earlier_seconds=sum(pretrain_seconds))  # train_seconds: pretraining + joint
        save_energy_curves(result.history, run.path(CURVE), title=f"dbm {'-'.join(map(str, sizes))} on {spec.data.dataset}")
        torch.manual_seed(t.seed)
        self._completion_figure(module, data.test.x, tuple(data.image_shape), 16, t.sample_sweeps,
                                run.path("completion.png"), progress)
        return metrics

    @staticmethod
    def _monitors(module, x, valid, transform, not_converged, options):
        monitor = x[:MONITOR_SIZE]
        if transform is not None:
            monitor = transform(monitor, generator=torch.Generator(device=x.device).manual_seed(0))

        @torch.no_grad()
        def on_epoch_end(metrics):
            metrics["mean_field_not_converged"] = not_converged[0]  # batches of this epoch that hit the iteration cap
            not_converged[0] = 0
            result = mean_field(module, monitor, warn=False, **options)
            metrics["mean_field_energy"] = float(module.mean_field_free_energy(monitor, result.means).mean())
            probs = module.visible_probs(torch.cat(result.means[0::2], -1))[:, :module.num_data]
            metrics["recon_error"] = float((probs - monitor).pow(2).sum(-1).mean())
            if valid is not None and module.num_hidden <= 16:
                bound = -module.mean_field_free_energy(valid, mean_field(module, valid, warn=False, **options).means)
                metrics["valid_exact_ll"] = float((log_prob_observed(module, valid)).mean())
                metrics["valid_exact_bound"] = float((bound.double() - log_partition(module)).mean())

        return on_epoch_end

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, trained, x, num_particles=None) -> torch.Tensor:
        """The mean-field lower bound on log p(x) per image with the evaluation's log Z (exact or AIS)."""
        module = trained.module
        log_z = trained.metrics.get("exact_log_z", trained.metrics.get("ais_log_z"))
        if log_z is None:
            raise SpecError(f"{trained.directory} has no log Z yet: run `ppl-models evaluate {trained.directory}` first")
        x = x.to(next(module.parameters()))
        result = mean_field(module, x, **self.mean_field_options(trained.spec, evaluation=True))
        return -module.mean_field_free_energy(x, result.means).double() - log_z

    @torch.no_grad()
    def evaluate(self, trained, data, num_particles=None, progress=False, seed=None, temperatures=None) -> dict:
        """AIS log Z (two groups of runs) and the mean-field lower bound on the test log-likelihood; exact
        log Z and log p(v) when the odd layers have at most 20 units."""
        spec, t = trained.spec, trained.spec.train
        device = resolve_device(t.device)
        module = trained.module.to(device)
        x_test = data.test.x.to(device)
        runs = num_particles or t.eval_particles
        if temperatures is not None or t.ais_schedule is None:
            schedule = default_schedule(temperatures or t.ais_temperatures)
        else:
            schedule = torch.tensor(t.ais_schedule, dtype=torch.float64)
        base = module.base_rate(data.train.x.to(device))
        torch.manual_seed(t.seed if seed is None else seed)
        started = time.perf_counter()
        ais = ais_log_partition(module, num_runs=runs, schedule=schedule, base=base, groups=min(2, runs),
                                progress=progress)
        ais_seconds = time.perf_counter() - started
        mf = mean_field(module, x_test, **self.mean_field_options(spec, evaluation=True))
        neg_f = -module.mean_field_free_energy(x_test, mf.means).double()
        bound = neg_f - ais.log_z
        metrics = dict(trained.metrics)
        for key in ("exact_log_z", "test_log_likelihood_exact", "test_bound_exact", "ais_error"):
            metrics.pop(key, None)
        metrics.update(
            test_log_likelihood=float(bound.mean()), test_log_likelihood_stderr=float(bound.std() / math.sqrt(len(bound))),
            test_log_likelihood_is_bound=True,
            test_log_likelihood_estimator="variational lower bound: -E(v, mu) + H(mu) - log Z, mu the mean-field "
                                          "posterior, log Z by AIS (the odd layers summed out)",
            test_log_likelihood_interval=[_finite_or_none(float(neg_f.mean()) - ais.log_z_upper),
                                          _finite_or_none(float(neg_f.mean()) - ais.log_z_lower)],
            mean_field_converged=bool(mf.converged), mean_field_iterations=mf.iterations,
            ais_log_z=ais.log_z, ais_log_z_std=ais.log_z_std,
            ais_log_z_interval_3sigma=[_finite_or_none(ais.log_z_lower), _finite_or_none(ais.log_z_upper)],
            ais_log_z_halves=list(ais.group_log_z), ais_runs=runs, ais_temperatures=int(schedule.numel()),
            ais_schedule="Salakhutdinov & Murray 2008, scaled", ais_seconds=ais_seconds, test_images=len(bound),
            ais_stable=bool(ais.stable), log_likelihood_units="nats per binary image (a lower bound)")
        if module.num_hidden <= MAX_ENUMERATED_UNITS:
            exact = float(log_partition(module))
            exact_ll = log_prob_observed(module, x_test, torch.tensor(exact, dtype=torch.float64))
            metrics.update(exact_log_z=exact, test_log_likelihood_exact=float(exact_ll.mean()),
                           test_bound_exact=float((neg_f - exact).mean()), ais_error=ais.log_z - exact)
        module.cpu()
        metrics["eval_seconds"] = time.perf_counter() - started
        return metrics

    def summary_line(self, metrics: dict, directory=None) -> str:
        line = super().summary_line({k: v for k, v in metrics.items() if k not in ("test_log_likelihood_exact",
                                                                                   "test_pseudo_likelihood")}, directory)
        line = line.replace("test log-likelihood", "test log-likelihood lower bound (mean-field)", 1)
        if "test_log_likelihood_exact" in metrics:
            line += (f"; exact: log Z {metrics['exact_log_z']:.2f}, test log-likelihood "
                     f"{metrics['test_log_likelihood_exact']:.2f}, bound {metrics['test_bound_exact']:.2f}")
        if "joint_seconds" in metrics:  # runs trained before the per-phase times have train_seconds only
            layers = " + ".join(f"{s:.0f}" for s in metrics["pretrain_seconds_per_layer"]) or "none"
            line += (f"; training {metrics['train_seconds']:.0f}s (pretraining {layers}s, joint "
                     f"{metrics['joint_seconds']:.0f}s)")
        return line
