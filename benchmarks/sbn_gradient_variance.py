"""Gradient variance and cost of the SBN training algorithms, all at one parameter point.

Why: the five algorithms differ less in what they converge to than in how noisy their gradients
are and what a step costs. This measures both on the same net, minibatch and parameters.

Procedure: an SBN 200-200 is trained on MNIST-5k with NVIL for ``--warmup`` epochs (at the
initial point every estimator looks good: the recognition network is still near uniform). At
the parameters reached, each objective draws ``--draws`` independent gradient estimates on one
fixed minibatch of 100 images (NVIL's running statistics restored before each draw, so every draw
sees the same point). Per parameter group (the generative net, the recognition net) the JSON
records

- ``trace_var``: the sum over coordinates of the estimates' sample variance, tr Cov[g];
- ``mean_sq_norm``: the squared norm of their mean, ``||E g||^2`` (minus its own sampling bias
  trace_var / draws);
- ``snr``: ``mean_sq_norm / trace_var``, the signal-to-noise ratio. It is the comparable number:
  the objectives estimate different gradients (NVIL the ELBO's, with the guide's part divided by
  the running sd of its signal; VIMCO the k-sample bound's; RWS and wake-sleep not the gradient of
  any one objective), and SNR does not change when a gradient is rescaled.

Cost: ``step_seconds`` is the median time of one estimate (forward and backward, no optimiser
step). The floor is the time of that step's matrix products alone: for each Linear layer of
model and guide, the forward product and the backward ones (the weight gradient, and the input
gradient unless the input is the data) at the step's row count (100 x k), in plain PyTorch in the
same run. Wake-sleep and TraceGraph do more than one pass (a sleep-phase dream; Pyro's graph
bookkeeping), which is part of what the ratio shows.

Run: ``python benchmarks/sbn_gradient_variance.py [--warmup 20] [--draws 200] [--k 5] [--threads 1]``
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _floor import median_seconds  # noqa: E402
from inference.nvil import NVIL  # noqa: E402
from inference.training import PyroObjective, fit, with_auxiliary  # noqa: E402
from ppl_models import catalogue  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: (label, objective.name, k); k None: --k samples per datapoint
ESTIMATORS = [
    ("nvil", "nvil", 1),
    ("reinforce_no_baseline", "reinforce", 1),
    ("tracegraph", "tracegraph", 1),
    ("wake_sleep", "wake_sleep", 1),
    ("vimco", "vimco", None),
    ("iwae_score_function", "iwae", None),
    ("rws", "rws", None),
]


def grads(module) -> dict[str, torch.Tensor]:
    out = {}
    for group in ("generative", "recognition"):
        parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
                 for p in getattr(module, group).parameters()]
        out[group] = torch.cat(parts).clone()
    return out


def estimator_stats(objective, module, x, draws: int, seed: int) -> dict:
    """Draw ``draws`` gradient estimates at the current parameters; their spread per group and step time."""
    elbo = objective.elbo
    state = copy.deepcopy(elbo.baseline.state_dict()) if getattr(elbo, "baseline", None) is not None else None
    samples, seconds = {"generative": [], "recognition": []}, []
    torch.manual_seed(seed)
    for _ in range(draws):
        module.zero_grad(set_to_none=True)
        if state is not None:
            elbo.baseline.zero_grad(set_to_none=True)
            elbo.baseline.load_state_dict(state)  # the same running statistics for every draw
        t0 = time.perf_counter()
        objective.loss_and_grads(x)
        seconds.append(time.perf_counter() - t0)
        for group, g in grads(module).items():
            samples[group].append(g)
    row = {"step_seconds": statistics.median(seconds)}
    for group, gs in samples.items():
        g = torch.stack(gs).double()
        trace_var = g.var(0).sum().item()
        mean_sq = g.mean(0).pow(2).sum().item() - trace_var / draws  # unbiased for ||E g||^2
        row[group] = {"trace_var": trace_var, "mean_sq_norm": mean_sq, "snr": mean_sq / trace_var}
    return row


def matmul_floor(layers: list[tuple[int, int, bool]], rows: int, reps: int = 50) -> float:
    """Median seconds of one step's Linear-layer products: forward, grad weight, and grad input where the
    layer's input is not the data (``(in, out, needs_grad_input)`` per layer)."""
    mats = [(torch.randn(rows, i), torch.randn(o, i), torch.randn(rows, o), back) for i, o, back in layers]

    def step():
        for x, w, gy, back in mats:
            x @ w.T
            gy.T @ x
            if back:
                gy @ w

    return median_seconds(step, reps)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="200-200")
    p.add_argument("--warmup", type=int, default=20, help="NVIL epochs before measuring")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--k", type=int, default=5, help="samples per datapoint of vimco, iwae and rws")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(RESULTS, "sbn_gradient_variance.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(u) for u in args.arch.split("-")]
    base = ["data.dataset=mnist5k", "data.valid_size=0", f"model.hidden={json.dumps(hidden)}", "train.seed=0"]

    spec = catalogue.make_spec("sbn", overrides=base + ["objective.name=nvil"])
    family = catalogue.family("sbn")
    data = family.load_data(spec)
    family.resolve(spec, data)
    torch.manual_seed(0)
    pyro.clear_param_store()
    module = family.build(spec)
    family.initialise(module, data)
    warm = family.make_objective(spec, module)
    t0 = time.perf_counter()
    fit(warm, (data.train.x,), module=with_auxiliary(module, warm), epochs=args.warmup,
        batch_size=args.batch, lr=spec.train.lr, progress=False, log=lambda *a: None)
    print(f"warm-up: NVIL {args.warmup} epochs in {time.perf_counter() - t0:.0f}s", flush=True)
    x = data.train.x[:args.batch]

    # one floor per row count, measured once for all estimators that share it; the first recognition
    # layer reads the data: no gradient with respect to its input
    layers = [(lin.in_features, lin.out_features, i > 0)
              for i, lin in enumerate((*module.recognition, *module.generative.down))]
    floors = {kk: matmul_floor(layers, args.batch * kk, reps=200) for kk in sorted({k or args.k for _, _, k in ESTIMATORS})}
    rows = {}
    for label, name, k in ESTIMATORS:
        kk = k or args.k
        if name == "reinforce":  # NVIL's estimator with no baseline or normalisation: plain REINFORCE
            objective = PyroObjective(NVIL(baseline=None), module.model, module.guide)
        elif name == "nvil":
            objective = warm  # the warmed-up baseline network and running statistics
        else:
            o = catalogue.make_spec("sbn", overrides=base + [f"objective.name={name}"] + (
                [f"objective.num_particles={kk}"] if k is None else []))
            o.model.x_dim = spec.model.x_dim
            objective = family.make_objective(o, module)
        row = estimator_stats(objective, module, x, args.draws, seed=1)
        row["floor_seconds"] = floors[kk]
        row.update(k=kk, step_over_floor=row["step_seconds"] / row["floor_seconds"])
        rows[label] = row
        print(f"{label:>22} k={kk}: SNR generative {row['generative']['snr']:.3g}, recognition "
              f"{row['recognition']['snr']:.3g}; step {row['step_seconds'] * 1e3:.1f} ms "
              f"({row['step_over_floor']:.1f}x its matmul floor)", flush=True)
    result = {"benchmark": "sbn_gradient_variance", "arch": args.arch, "warmup_epochs": args.warmup,
              "draws": args.draws, "batch": args.batch, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv), "estimators": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
