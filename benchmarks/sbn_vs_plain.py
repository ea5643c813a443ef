"""SBN training with NVIL through the shared driver against a hand-written PyTorch loop of the same maths.

Issue 14 asks SBN training to be within 1.1x of a hand-written loop. Measured in one run, one thread:
the ``sbn`` family's defaults (SBN 200-200, NVIL with local learning signals, an input-dependent
baseline b(x) with 100 tanh units, decay 0.8, variance normalisation; batch 100, Adam 3e-3) on
MNIST-5k's training images, one epoch per side, interleaved (the order alternates):

- **ours**: :func:`inference.training.fit` with the family's objective
  (``PyroObjective(NVIL(...), sbn.model, sbn.guide)``: every step traces the guide and replays the model
  under Pyro's handlers);
- **plain**: :func:`plain_nvil_epoch`, NVIL written out by hand on the same modules: h1, h2 drawn from the
  recognition net, the five Bernoulli log-densities, the two local signals
  ``l1 = log p(x, h) - log q(h | x)`` and ``l2 = log p(h1, h2) - log q(h2 | h1)``, centred by b(x) and the
  running mean, divided by ``max(1, running sd)``, the surrogate
  ``-(log p + sum_i c_i log q_i) + sum (l - b - mean)^2`` backpropagated, the same fused Adam step;
- **the floor**: the matrix products of one step (forward and backward, read off a plain step by
  ``_floor.record_products``) timed alone, times the epoch's steps.

Before timing, both sides train one epoch from the same parameters, baseline and seed: they draw the same
samples, so their epoch losses and final parameters must agree to float rounding (checked).

Writes ``benchmarks/results/sbn_vs_plain.json``.
Run: ``python benchmarks/sbn_vs_plain.py [--repeats 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _floor import record_products, time_products  # noqa: E402
from inference.training import fit, with_auxiliary  # noqa: E402
from ppl_models import catalogue  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _log_bernoulli(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


def plain_nvil_step(sbn, baseline, opt, x: torch.Tensor) -> float:
    """One NVIL update of a 2-hidden-layer SBN (local signals, baseline, variance normalisation); the loss."""
    (up1, up2), (down0, down1), top = sbn.recognition, sbn.generative.down, sbn.generative.top_logits
    opt.zero_grad(set_to_none=True)
    q1 = up1(x)
    with torch.no_grad():
        h1 = torch.bernoulli(torch.sigmoid(q1))
    q2 = up2(h1)
    with torch.no_grad():
        h2 = torch.bernoulli(torch.sigmoid(q2))
    lq1, lq2 = _log_bernoulli(q1, h1), _log_bernoulli(q2, h2)
    lp2 = _log_bernoulli(top.expand(x.shape[0], -1), h2)
    lp1, lp0 = _log_bernoulli(down1(h2), h1), _log_bernoulli(down0(h1), x)
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


def plain_nvil_epoch(sbn, baseline, x: torch.Tensor, batch: int, lr: float, seed: int) -> float:
    """One epoch as :func:`fit` runs it (seeded stream, shuffled batches, a fresh fused Adam); mean loss."""
    torch.manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam([*sbn.parameters(), *baseline.parameters()], lr=lr, fused=True)
    total = sum(plain_nvil_step(sbn, baseline, opt, x[idx]) for idx in order.split(batch))
    return total / x.shape[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="interleaved pairs of epochs; medians reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loaded", action="store_true", help="record that other jobs shared the machine")
    p.add_argument("--out", default=os.path.join(RESULTS, "sbn_vs_plain.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    family = catalogue.family("sbn")
    spec = catalogue.make_spec("sbn")  # the family's defaults: 200-200, NVIL, batch 100, Adam 3e-3
    data = family.load_data(spec)
    family.resolve(spec, data)
    if data.train_transform is not None:
        raise SystemExit("this benchmark assumes the default fixed binarisation (no per-batch transform)")
    x, batch, lr = data.train.x, spec.train.batch_size, spec.train.lr
    torch.manual_seed(0)
    module = family.build(spec)
    family.initialise(module, data)
    baseline = family.make_objective(spec, module).elbo.baseline  # its initial weights, shared by every copy

    def ours(seed):
        m = copy.deepcopy(module)
        objective = family.make_objective(spec, m)
        objective.elbo.baseline = b = copy.deepcopy(baseline)
        pyro.clear_param_store()
        t = time.perf_counter()
        r = fit(objective, (x,), module=with_auxiliary(m, objective), epochs=1, batch_size=batch, lr=lr, seed=seed,
                progress=False)
        return time.perf_counter() - t, r.history[-1]["train_loss"], m, b

    def plain(seed):
        m, b = copy.deepcopy(module), copy.deepcopy(baseline)
        t = time.perf_counter()
        loss = plain_nvil_epoch(m, b, x, batch, lr, seed)
        return time.perf_counter() - t, loss, m, b

    # the check: same start, same seed -> the same samples, losses and parameters up to rounding
    _, ours_loss, ours_m, ours_b = ours(0)
    _, plain_loss, plain_m, plain_b = plain(0)
    params = lambda m, b: torch.cat([q.detach().reshape(-1) for q in (*m.parameters(), *b.parameters())])
    param_diff = float((params(ours_m, ours_b) - params(plain_m, plain_b)).abs().max())
    stats_diff = float(torch.cat([ours_b.mean - plain_b.mean, ours_b.var - plain_b.var]).abs().max())
    print(f"check: epoch loss ours {ours_loss:.5f}, plain {plain_loss:.5f}; max |parameter difference| {param_diff:.2e}",
          flush=True)
    if abs(ours_loss - plain_loss) > 1e-3 * abs(ours_loss) or param_diff > 1e-3:
        raise AssertionError("the plain loop does not compute what the driver does")

    # the timing: one training run of repeats + 1 epochs, as a user's run goes (one objective, so the trace
    # replay records once), each epoch's own time (the driver's `seconds`, fit's one-off set-up excluded) and,
    # right after it, one epoch of the plain loop on its own copy; the first pair is dropped (warm-up)
    times = {"ours": [], "plain": []}
    m, plain_m, plain_b = copy.deepcopy(module), copy.deepcopy(module), copy.deepcopy(baseline)
    objective = family.make_objective(spec, m)
    objective.elbo.baseline = copy.deepcopy(baseline)

    def on_epoch_end(metrics):
        times["ours"].append(metrics["seconds"])
        with torch.random.fork_rng():  # the plain loop seeds the global stream: not the driver's business
            t = time.perf_counter()
            plain_nvil_epoch(plain_m, plain_b, x, batch, lr, len(times["ours"]))
            times["plain"].append(time.perf_counter() - t)
        print(f"epoch {len(times['ours'])}: ours {times['ours'][-1]:.3f}s, plain {times['plain'][-1]:.3f}s", flush=True)

    pyro.clear_param_store()
    fit(objective, (x,), module=with_auxiliary(m, objective), epochs=args.repeats + 1, batch_size=batch, lr=lr,
        seed=1, progress=False, on_epoch_end=on_epoch_end)
    times = {name: t[1:] for name, t in times.items()}
    replay = getattr(objective, "replay_status", {})
    m, b = copy.deepcopy(module), copy.deepcopy(baseline)
    opt = torch.optim.Adam([*m.parameters(), *b.parameters()], lr=lr, fused=True)
    products = record_products(lambda: plain_nvil_step(m, b, opt, x[:batch]))
    steps = -(-x.shape[0] // batch)
    floor = time_products(products, repeats=21) * steps
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "command": "python benchmarks/sbn_vs_plain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "time_utc": time.strftime("%H:%M", time.gmtime()),
        "settings": {"arch": [spec.model.x_dim, *spec.model.hidden], "objective": spec.objective.name,
                     "baseline_hidden": spec.objective.baseline_hidden, "local_signals": spec.objective.local_signals,
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
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"epoch: ours {median['ours']:.3f}s, plain {median['plain']:.3f}s, ratio {result['ratio_ours_over_plain']:.3f}; "
          f"floor {floor:.3f}s (ours {result['ratio_ours_over_floor']:.2f}x, plain {result['ratio_plain_over_floor']:.2f}x)"
          f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
