"""SBN training by each estimator through the shared driver against a hand-written PyTorch loop of the same maths.

Issue 14 asks SBN training by each estimator to be within 1.1x of a hand-written loop. Measured in one run, one
thread: the ``sbn`` family's defaults (SBN 200-200, batch 100, Adam 3e-3, ``objective.replay``) with
``--objective`` (default ``nvil``: local learning signals, an input-dependent baseline b(x) with 100 tanh units,
decay 0.8, variance normalisation; ``vimco``, ``rws`` (insomnia 1) and ``iwae`` with k = 5 samples per image;
``wake_sleep``: k = 1, the guide trained on the model's dreams only) on MNIST-5k's training images, one epoch
per side, interleaved (the order alternates):

- **ours**: :func:`inference.training.fit` with the family's objective (``PyroObjective(<estimator>, sbn.model,
  sbn.guide)``: every step traces the guide and replays the model under Pyro's handlers, or runs the tensor
  program recorded from the first step where the estimator is replayable; the JSON's ``replay`` says which);
- **plain**: the estimator written out by hand on the same modules, sharing :func:`sbn_forward` (h1, h2 drawn
  from the recognition net, k per image for the multi-sample ones, and the five Bernoulli log-densities):

  - NVIL (:func:`plain_nvil_step`): the two local signals ``l1 = log p(x, h) - log q(h | x)`` and
    ``l2 = log p(h1, h2) - log q(h2 | h1)``, centred by b(x) and the running mean, divided by
    ``max(1, running sd)``, the surrogate ``-(log p + sum_i c_i log q_i) + sum (l - b - mean)^2``;
  - VIMCO (:func:`plain_vimco`): the k-sample bound, each sample's score term weighted by the bound minus the
    bound with its log-weight replaced by the others' geometric mean;
  - IWAE (:func:`plain_iwae`): the k-sample bound, the bound itself every sample's score-function signal;
  - RWS and wake-sleep (:func:`plain_rws`): ``-sum_i w~_i (log p_i + log q_i)`` with self-normalised weights;
    wake-sleep (k = 1) instead scores the guide at dreams ``(h2, h1, x) ~ p`` drawn after the wake draws;

  each backpropagated, then the same fused Adam step; the loss reported is the negative bound (the ELBO for
  NVIL and wake-sleep);
- **the floor**: the matrix products of one step (forward and backward, read off a plain step by
  ``_floor.record_products``) timed alone, times the epoch's steps.

Before timing, both sides train one epoch from the same parameters (and NVIL's baseline) and seed: they draw
the same samples, so their epoch losses and final parameters must agree to float rounding (checked).

Writes ``benchmarks/results/sbn_vs_plain.json`` (nvil) or ``sbn_vs_plain_<objective>.json``.
Run: ``python benchmarks/sbn_vs_plain.py [--objective nvil] [--repeats 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _floor import record_products, time_products  # noqa: E402
from inference.training import fit, with_auxiliary  # noqa: E402
from ppl_models import catalogue  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: the sbn family's objectives with a hand-written loop here (not tracegraph, Pyro's own estimator)
OBJECTIVES = ("nvil", "vimco", "rws", "wake_sleep", "iwae")


def _log_bernoulli(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


def sbn_forward(sbn, x: torch.Tensor, k: int | None = None) -> tuple:
    """One pass of a 2-hidden-layer SBN as the Pyro route runs it: h1 ~ q(h1 | x), h2 ~ q(h2 | h1) (with ``k``,
    k draws per image as the particle plate makes them: q(h1 | x)'s probabilities expanded to (k, N, units)),
    then the five Bernoulli log-densities ``log q(h1|x), log q(h2|h1), log p(h2), log p(h1|h2), log p(x|h1)``,
    each (N,), or (k, N) with ``k``."""
    (up1, up2), (down0, down1), top = sbn.recognition, sbn.generative.down, sbn.generative.top_logits
    q1 = up1(x)
    if k is not None:
        q1, x = q1.expand(k, *q1.shape), x.expand(k, *x.shape)
    with torch.no_grad():
        h1 = torch.bernoulli(torch.sigmoid(q1))
    q2 = up2(h1)
    with torch.no_grad():
        h2 = torch.bernoulli(torch.sigmoid(q2))
    # p(h2)'s logits: (N, units) as the model expands them, then the particle plate's (k, N, units), so that
    # their gradient is summed in the same two steps (bit for bit the driver's)
    top = top.expand(x.shape[-2], -1).expand(q2.shape)
    return (_log_bernoulli(q1, h1), _log_bernoulli(q2, h2), _log_bernoulli(top, h2),
            _log_bernoulli(down1(h2), h1), _log_bernoulli(down0(h1), x))


def _bound(log_w: torch.Tensor) -> torch.Tensor:
    """log mean_i w_i per image, (N,) from (k, N)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def plain_nvil_step(sbn, baseline, opt, x: torch.Tensor) -> float:
    """One NVIL update of a 2-hidden-layer SBN (local signals, baseline, variance normalisation); the loss."""
    opt.zero_grad(set_to_none=True)
    lq1, lq2, lp2, lp1, lp0 = sbn_forward(sbn, x)
    log_p = lp2 + lp1 + lp0
    with torch.no_grad():
        local = lp2 + lp1 - lq2  # the terms h2's sample can change
        signals = torch.stack([local + lp0 - lq1, local], -1)
    b = baseline.net(x)
    centred = (signals - b.detach() - baseline.mean) / baseline.var.sqrt().clamp(min=1.0)
    loss = -(log_p + centred[:, 0] * lq1 + centred[:, 1] * lq2).sum() + (signals - b - baseline.mean).pow(2).sum()
    loss.backward()
    with torch.no_grad():  # the running statistics of the signals, after the gradient (as NVIL's)
        c, d = signals - b, baseline.decay
        baseline.var.mul_(d).add_((1 - d) * (c - baseline.mean).pow(2).mean(0))
        baseline.mean.mul_(d).add_((1 - d) * c.mean(0))
    opt.step()
    return -signals[:, 0].sum().item()


def plain_vimco(sbn, x: torch.Tensor, k: int) -> tuple:
    """VIMCO's (surrogate, loss): the k-sample bound, each sample's score term weighted by the bound minus the
    bound with its own log-weight replaced by the geometric mean of the others'."""
    lq1, lq2, lp2, lp1, lp0 = sbn_forward(sbn, x, k)
    log_q = lq1 + lq2
    log_w = lp2 + lp1 + lp0 - log_q
    bound = _bound(log_w)
    with torch.no_grad():
        others = (log_w.sum(0) - log_w) / (k - 1)  # (k, N): the others' log geometric mean
        eye = torch.eye(k, dtype=torch.bool).unsqueeze(-1)
        signal = bound - (torch.logsumexp(torch.where(eye, others.unsqueeze(1), log_w.unsqueeze(0)), 1) - math.log(k))
    return -(bound + (signal * log_q).sum(0)).sum(), -bound.sum()


def plain_iwae(sbn, x: torch.Tensor, k: int) -> tuple:
    """IWAE's (surrogate, loss): the k-sample bound, the bound itself every sample's score-function signal."""
    lq1, lq2, lp2, lp1, lp0 = sbn_forward(sbn, x, k)
    log_q = lq1 + lq2
    bound = _bound(lp2 + lp1 + lp0 - log_q)
    return -(bound + bound.detach() * log_q.sum(0)).sum(), -bound.sum()


def plain_rws(sbn, x: torch.Tensor, k: int, insomnia: float) -> tuple:
    """Reweighted wake-sleep's (surrogate, loss): wake-theta sum_i w~_i log p, wake-phi sum_i w~_i log q (times
    ``insomnia``) and sleep-phi log q at the model's dreams (times ``1 - insomnia``); the loss is the negative
    k-sample bound. ``k = 1, insomnia = 0`` is classic wake-sleep."""
    lq1, lq2, lp2, lp1, lp0 = sbn_forward(sbn, x, k if k > 1 else None)
    log_p, log_q = lp2 + lp1 + lp0, lq1 + lq2
    with torch.no_grad():
        log_w = log_p - log_q
        w = torch.softmax(log_w, 0) if k > 1 else None  # over each image's own particles; k = 1: all ones
        bound = _bound(log_w) if k > 1 else log_w
    weighted = (lambda t: t.sum()) if w is None else (lambda t: (w * t).sum())
    surrogate = -weighted(log_p)
    if insomnia > 0:
        surrogate = surrogate - insomnia * weighted(log_q)
    if insomnia < 1:  # dreams (h2, h1, x) ~ p drawn top-down after the wake draws, scored by the guide
        (up1, up2), (down0, down1), top = sbn.recognition, sbn.generative.down, sbn.generative.top_logits
        with torch.no_grad():
            d2 = torch.bernoulli(torch.sigmoid(top.expand(x.shape[0], -1)))
            d1 = torch.bernoulli(torch.sigmoid(down1(d2)))
            d0 = torch.bernoulli(torch.sigmoid(down0(d1)))
        surrogate = surrogate - (1 - insomnia) * (_log_bernoulli(up1(d0), d1) + _log_bernoulli(up2(d1), d2)).sum()
    return surrogate, -bound.sum()


def plain_step(losses: Callable, opt, x: torch.Tensor) -> float:
    """One update: ``losses(x) -> (surrogate, loss)``, the surrogate's gradient, a step; the loss."""
    opt.zero_grad(set_to_none=True)
    surrogate, loss = losses(x)
    surrogate.backward()
    opt.step()
    return loss.item()


def plain_losses(objective: str, sbn, k: int = 5, insomnia: float = 1.0) -> Callable:
    """``x -> (surrogate, loss)`` of a minibatch for ``objective`` (not NVIL, whose step also updates its
    baseline: :func:`plain_nvil_step`); ``k`` and ``insomnia`` as the sbn family's spec has them."""
    if objective == "vimco":
        return lambda x: plain_vimco(sbn, x, k)
    if objective == "iwae":
        return lambda x: plain_iwae(sbn, x, k)
    if objective == "rws":
        return lambda x: plain_rws(sbn, x, k, insomnia)
    if objective == "wake_sleep":
        return lambda x: plain_rws(sbn, x, 1, 0.0)
    raise ValueError(f"no hand-written loop for objective {objective!r}")


def plain_epoch(step: Callable, params: list, x: torch.Tensor, batch: int, lr: float, seed: int) -> float:
    """One epoch as :func:`fit` runs it (seeded stream, shuffled batches, a fresh fused Adam over ``params``) of
    ``step(opt, x_batch) -> loss``; the mean loss."""
    torch.manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(params, lr=lr, fused=True)
    return sum(step(opt, x[idx]) for idx in order.split(batch)) / x.shape[0]


def plain_nvil_epoch(sbn, baseline, x: torch.Tensor, batch: int, lr: float, seed: int) -> float:
    """One NVIL epoch (:func:`plain_epoch` of :func:`plain_nvil_step`, the baseline trained beside the SBN)."""
    return plain_epoch(lambda opt, xb: plain_nvil_step(sbn, baseline, opt, xb),
                       [*sbn.parameters(), *baseline.parameters()], x, batch, lr, seed)


def plain_objective_epoch(objective: str, sbn, x: torch.Tensor, batch: int, lr: float, seed: int, k: int = 5,
                          insomnia: float = 1.0) -> float:
    """One epoch of ``objective`` (vimco, rws, wake_sleep, iwae) by :func:`plain_step`."""
    losses = plain_losses(objective, sbn, k, insomnia)
    return plain_epoch(lambda opt, xb: plain_step(losses, opt, xb), list(sbn.parameters()), x, batch, lr, seed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", choices=OBJECTIVES, default="nvil",
                   help="the sbn family's training algorithm, at its defaults (vimco, rws, iwae: k = 5; rws: "
                        "insomnia 1; wake_sleep: k = 1, the guide trained on dreams only)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved pairs of epochs; medians reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loaded", action="store_true", help="record that other jobs shared the machine")
    p.add_argument("--out", default=None, help="default: benchmarks/results/sbn_vs_plain.json for nvil, "
                   "sbn_vs_plain_<objective>.json beside it for the others")
    args = p.parse_args(argv)
    out = args.out or os.path.join(RESULTS, "sbn_vs_plain.json" if args.objective == "nvil"
                                   else f"sbn_vs_plain_{args.objective}.json")
    torch.set_num_threads(args.threads)
    family = catalogue.family("sbn")
    # the family's defaults (200-200, batch 100, Adam 3e-3, objective.replay) with this objective
    spec = catalogue.make_spec("sbn", {"objective": {"name": args.objective}})
    data = family.load_data(spec)
    family.resolve(spec, data)
    if data.train_transform is not None:
        raise SystemExit("this benchmark assumes the default fixed binarisation (no per-batch transform)")
    x, batch, lr, o = data.train.x, spec.train.batch_size, spec.train.lr, spec.objective
    nvil = o.name == "nvil"
    torch.manual_seed(0)
    module = family.build(spec)
    family.initialise(module, data)
    # NVIL's baseline: its initial weights, shared by every copy (None for the others, which train the SBN alone)
    baseline = family.make_objective(spec, module).elbo.baseline if nvil else None

    def objective_for(m, b):
        objective = family.make_objective(spec, m)
        if nvil:
            objective.elbo.baseline = b
        return objective

    def plain_epoch_for(m, b, seed):
        if nvil:
            return plain_nvil_epoch(m, b, x, batch, lr, seed)
        return plain_objective_epoch(o.name, m, x, batch, lr, seed, k=o.k, insomnia=o.insomnia)

    def ours(seed):
        m, b = copy.deepcopy(module), copy.deepcopy(baseline)
        objective = objective_for(m, b)
        pyro.clear_param_store()
        t = time.perf_counter()
        r = fit(objective, (x,), module=with_auxiliary(m, objective), epochs=1, batch_size=batch, lr=lr, seed=seed,
                progress=False)
        return time.perf_counter() - t, r.history[-1]["train_loss"], m, b

    def plain(seed):
        m, b = copy.deepcopy(module), copy.deepcopy(baseline)
        t = time.perf_counter()
        loss = plain_epoch_for(m, b, seed)
        return time.perf_counter() - t, loss, m, b

    # the check: same start, same seed -> the same samples, losses and parameters up to rounding
    _, ours_loss, ours_m, ours_b = ours(0)
    _, plain_loss, plain_m, plain_b = plain(0)
    params = lambda m, b: torch.cat([q.detach().reshape(-1)
                                     for q in (*m.parameters(), *(b.parameters() if b is not None else ()))])
    param_diff = float((params(ours_m, ours_b) - params(plain_m, plain_b)).abs().max())
    stats_diff = (float(torch.cat([ours_b.mean - plain_b.mean, ours_b.var - plain_b.var]).abs().max()) if nvil
                  else None)
    print(f"check ({o.name}): epoch loss ours {ours_loss:.5f}, plain {plain_loss:.5f}; max |parameter difference| "
          f"{param_diff:.2e}", flush=True)
    if abs(ours_loss - plain_loss) > 1e-3 * abs(ours_loss) or param_diff > 1e-3:
        raise AssertionError("the plain loop does not compute what the driver does")

    # the timing: one training run of repeats + 1 epochs, as a user's run goes (one objective, so the trace
    # replay records once), each epoch's own time (the driver's `seconds`, fit's one-off set-up excluded) and,
    # right after it, one epoch of the plain loop on its own copy; the first pair is dropped (warm-up)
    times = {"ours": [], "plain": []}
    m, b = copy.deepcopy(module), copy.deepcopy(baseline)
    plain_m, plain_b = copy.deepcopy(module), copy.deepcopy(baseline)
    objective = objective_for(m, b)

    def on_epoch_end(metrics):
        times["ours"].append(metrics["seconds"])
        with torch.random.fork_rng():  # the plain loop seeds the global stream: not the driver's business
            t = time.perf_counter()
            plain_epoch_for(plain_m, plain_b, len(times["ours"]))
            times["plain"].append(time.perf_counter() - t)
        print(f"epoch {len(times['ours'])}: ours {times['ours'][-1]:.3f}s, plain {times['plain'][-1]:.3f}s", flush=True)

    pyro.clear_param_store()
    fit(objective, (x,), module=with_auxiliary(m, objective), epochs=args.repeats + 1, batch_size=batch, lr=lr,
        seed=1, progress=False, on_epoch_end=on_epoch_end)
    times = {name: t[1:] for name, t in times.items()}
    replay = getattr(objective, "replay_status", {})
    m, b = copy.deepcopy(module), copy.deepcopy(baseline)
    opt = torch.optim.Adam([*m.parameters(), *(b.parameters() if nvil else ())], lr=lr, fused=True)
    if nvil:
        products = record_products(lambda: plain_nvil_step(m, b, opt, x[:batch]))
    else:
        products = record_products(lambda: plain_step(plain_losses(o.name, m, o.k, o.insomnia), opt, x[:batch]))
    steps = -(-x.shape[0] // batch)
    floor = time_products(products, repeats=21) * steps
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": "python benchmarks/sbn_vs_plain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "time_utc": time.strftime("%H:%M", time.gmtime()),
        "settings": {"arch": [spec.model.x_dim, *spec.model.hidden], "objective": o.name,
                     "num_particles": o.k, "insomnia": {"rws": o.insomnia, "wake_sleep": 0.0}.get(o.name),
                     "baseline_hidden": o.baseline_hidden if nvil else None,
                     "local_signals": o.local_signals if nvil else None,
                     "batch_size": batch, "lr": lr, "optimizer": "Adam (fused) on both sides",
                     "images": x.shape[0], "dataset": spec.data.dataset, "steps_per_epoch": steps},
        "check": {"epoch_loss_ours": ours_loss, "epoch_loss_plain": plain_loss, "max_abs_parameter_difference": param_diff,
                  "max_abs_running_statistics_difference": stats_diff},
        "seconds": times, "median_seconds": median, "matrix_products_s": floor,
        "matrix_products_per_step": len(products),
        "ratio_ours_over_plain": median["ours"] / median["plain"],
        "paired_ratios": [a / b for a, b in zip(times["ours"], times["plain"])],
        "paired_ratio_median": statistics.median(a / b for a, b in zip(times["ours"], times["plain"])),
        "ratio_ours_over_floor": median["ours"] / floor, "ratio_plain_over_floor": median["plain"] / floor,
        "replay": replay, "aim": 1.1, "threads": args.threads, "loaded": args.loaded, "torch": torch.__version__,
        "pyro": pyro.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{o.name} epoch: ours {median['ours']:.3f}s, plain {median['plain']:.3f}s, ratio "
          f"{result['ratio_ours_over_plain']:.3f}; floor {floor:.3f}s (ours {result['ratio_ours_over_floor']:.2f}x, "
          f"plain {result['ratio_plain_over_floor']:.2f}x) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
