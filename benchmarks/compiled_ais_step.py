"""AIS of a 784x500 RBM with its step compiled and its draws from a counter-based generator: what meeting
issue 14's AIS aim (1.2 of the matrix products) takes, measured, and why the library does not ship it.

In eager PyTorch the page's AIS row (``energy_floors``) stays at 1.4-1.6 of its matrix products: torch's CPU
generator alone adds about 0.2 of the products (the uniforms of the draws, timed alone there), and the
softplus, sigmoids and compares of a step are passes of their own. The one route under 1.2 found is this:
the step as one ``torch.compile``d function, its elementwise work fused into a pass per block, the uniforms
computed inside that pass from a counter by SplitMix64 (Steele, Lea & Flood 2014, the generator of Java's
``SplittableRandom``). Inductor's own CPU random (``rand_like`` under compile) is slower than torch's eager
generator, so the compiled step needs a generator of its own. Measured in one run, interleaved:

- ``inference.ais.ais_log_partition`` (ours, eager), the compiled step with the counter-based generator,
  the same compiled step with inductor's random, and the step's matrix products alone;
- the first call in a fresh process (the compile), with an empty compile cache and with a filled one,
  against what the compiled step saves on one full estimate (14,500 temperatures).

The step is the base-rate path's (``ppl_models.rbm_annealing.BaseRateAnnealingPath``, binary units);
``tests/test_benchmarks.py`` checks that it takes the path's steps, that the generator is SplitMix64, and
that it estimates an enumerable RBM's log Z. Writes ``benchmarks/results/compiled_ais_step.json``.

Run: ``python benchmarks/compiled_ais_step.py [--repeats 5] [--temperatures 2000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _floor import interleaved_seconds, products_pass, record_products  # noqa: E402
from inference.ais import ais_log_partition, default_schedule  # noqa: E402
from ppl_models.rbm import RBM  # noqa: E402

#: SplitMix64's increment and multipliers, as the int64 values of their bits (torch has no uint64 arithmetic)
GOLDEN, MIX1, MIX2 = (c - (1 << 64) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
#: the temperatures of a full estimate (Salakhutdinov & Murray's schedule), for what compiling saves
FULL_TEMPERATURES = 14500


def _shift_right(z: torch.Tensor, s: int) -> torch.Tensor:
    # logical shift of the 64 bits: torch's >> on int64 copies the sign bit
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64(counters: torch.Tensor, key) -> torch.Tensor:
    """Output number ``counters`` (from 0) of SplitMix64 seeded with ``key``, as int64 bits: the mix of
    the state ``key + (counter + 1) * GOLDEN``, so any element of the stream costs the same, in any order."""
    z = (counters + 1) * GOLDEN + key  # int64 arithmetic wraps, as the uint64 original does
    z = (z ^ _shift_right(z, 30)) * MIX1
    z = (z ^ _shift_right(z, 27)) * MIX2
    return z ^ _shift_right(z, 31)


def counter_bernoulli(probs: torch.Tensor, counter, key) -> torch.Tensor:
    """0/1 with P(1) = ``probs``: ``U < p``, ``U`` the top 24 bits of output ``counter + i`` for element ``i``
    over 2^24 (the resolution of torch's float32 uniforms; ``bits < p 2^24`` is that compare exactly)."""
    index = torch.arange(probs.numel(), dtype=torch.int64, device=probs.device).view(probs.shape)
    bits = _shift_right(splitmix64(index + counter, key), 40)
    return (bits.to(probs.dtype) < probs * 16777216.0).to(probs.dtype)


def torch_bernoulli(probs: torch.Tensor, counter, key) -> torch.Tensor:
    """The same draw from torch's random (inductor's own under ``torch.compile``); ``counter`` and ``key`` unused."""
    return (torch.rand_like(probs) < probs).to(probs.dtype)


def ais_step(v, beta_prev, beta, beta_gap, counter, key, weight, hidden_bias, visible_bias, base, draw=counter_bernoulli):
    r"""One temperature of the base-rate path as one function of tensors (no Python numbers, so that a compiled
    copy serves every temperature): ``(f_beta(v) - f_beta_prev(v), v' ~ T_beta(v))``, the hidden draws from
    outputs ``counter, counter + 1, ...`` of the generator, then the visible ones. ``beta_gap`` is
    ``beta_prev - beta``, computed in float64 (float32 temperatures 1e-5 apart would lose it)."""
    hidden_input = torch.addmm(hidden_bias, v, weight)
    tempered = beta * hidden_input
    # log p_A*(v) - E_v(v) = v (b_A - b), times the temperature step; the hidden units summed out by softplus
    log_w = beta_gap * (v @ (base - visible_bias)) + (F.softplus(tempered) - F.softplus(beta_prev * hidden_input)).sum(-1)
    h = draw(torch.sigmoid(tempered), counter, key)
    visible = torch.lerp(base, torch.addmm(visible_bias, h, weight.t()), beta)  # (1 - beta) b_A + beta (b + W h)
    return log_w, draw(torch.sigmoid(visible), counter + h.numel(), key)


def counter_ais_log_weights(step, rbm, base, num_runs: int, schedule: torch.Tensor, key: int) -> torch.Tensor:
    """Log-weights of ``num_runs`` AIS runs through ``step`` (``ais_step`` or a compiled copy), every draw from
    the counter-based stream ``key``: the base draws are its first outputs, then each temperature's."""
    params = [p.detach() for p in (rbm.weight, rbm.hidden_bias, rbm.visible_bias)] + [base]
    like = params[0]
    key = torch.tensor(key, dtype=torch.int64, device=like.device)
    v = counter_bernoulli(torch.sigmoid(base).expand(num_runs, -1), 0, key)
    per_step = num_runs * (rbm.num_hidden + rbm.num_visible)
    # 0-d tensors of their own (one compiled graph for every temperature; views of one tensor would alias
    # the graph's inputs, which compiled code handles on a slower path)
    counters = [t.clone() for t in torch.arange(len(schedule), device=like.device) * per_step + v.numel()]
    betas = [t.clone() for t in schedule.to(like.dtype)]
    gaps = [t.clone() for t in (schedule[:-1] - schedule[1:]).to(like.dtype)]
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=like.device)
    for k in range(1, len(schedule)):
        increment, v = step(v, betas[k - 1], betas[k], gaps[k - 1], counters[k], key, *params)
        log_w += increment.double()
    return log_w


def _compiled(draw):
    return torch.compile(lambda *args: ais_step(*args, draw=draw), dynamic=False)


def _setup(hidden: int):
    torch.manual_seed(0)
    rbm = RBM(784, hidden, weight_scale=0.01)
    return rbm, rbm.base_rate(None)


@torch.no_grad()
def first_call_seconds(runs: int, hidden: int, temperatures: int) -> float:
    """The compile's seconds: the compiled step's first estimate (three temperatures) less the time of a second."""
    rbm, base = _setup(hidden)
    schedule = default_schedule(temperatures)
    step = _compiled(counter_bernoulli)
    t = time.perf_counter()
    counter_ais_log_weights(step, rbm, base, runs, schedule[:3], key=1)
    first = time.perf_counter() - t
    t = time.perf_counter()
    counter_ais_log_weights(step, rbm, base, runs, schedule[:3], key=1)
    return first - (time.perf_counter() - t)


def compile_seconds(args, cache_dir: str) -> float:
    """The compile in a fresh process whose inductor cache is ``cache_dir``."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--first-call", "--runs", str(args.runs),
                          "--hidden", str(args.hidden), "--threads", str(args.threads)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


@torch.no_grad()
def measure(args) -> dict:
    rbm, base = _setup(args.hidden)
    schedule = default_schedule(args.temperatures)
    counter_step, inductor_step = _compiled(counter_bernoulli), _compiled(torch_bernoulli)
    path = rbm.annealing_path(base)
    v = path.sample_base(args.runs)
    products = record_products(lambda: path.step(v, 0.5, 0.5001))
    times = interleaved_seconds({
        "ours": lambda: ais_log_partition(rbm, num_runs=args.runs, schedule=schedule, base=base),
        "compiled": lambda: counter_ais_log_weights(counter_step, rbm, base, args.runs, schedule, key=1),
        "compiled_inductor_random": lambda: counter_ais_log_weights(inductor_step, rbm, base, args.runs, schedule, key=1),
        "products": products_pass(products, args.temperatures - 1)}, args.repeats)
    rounds = list(zip(times["ours"], times["compiled"], times["compiled_inductor_random"], times["products"]))
    with tempfile.TemporaryDirectory() as cache:
        cold, warm = compile_seconds(args, cache), compile_seconds(args, cache)
    ours, compiled = statistics.median(times["ours"]), statistics.median(times["compiled"])
    saved = (ours - compiled) / (args.temperatures - 1) * (FULL_TEMPERATURES - 1)
    return {"seconds": times, "ours_s": ours, "compiled_s": compiled,
            "compiled_over_matrix_products": statistics.median(c / p for _, c, _, p in rounds),
            "ours_over_matrix_products": statistics.median(o / p for o, _, _, p in rounds),
            "compiled_over_ours": statistics.median(c / o for o, c, _, _ in rounds),
            "inductor_random_over_counter": statistics.median(i / c for _, c, i, _ in rounds),
            "compile_cold_s": cold, "compile_warm_s": warm, "saved_on_full_estimate_s": saved,
            "compile_cold_over_saved": cold / saved if saved > 0 else float("inf"),
            "compile_warm_over_saved": warm / saved if saved > 0 else float("inf")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--temperatures", type=int, default=2000, help="AIS temperatures timed (time is linear in them)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--first-call", action="store_true", help="print the compile's seconds in this process and stop")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "compiled_ais_step.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.first_call:
        print(first_call_seconds(args.runs, args.hidden, args.temperatures))
        return
    r = measure(args)
    result = {"benchmark": "compiled_ais_step", "what": f"AIS log Z (RBM 784x{args.hidden}, {args.runs} runs): the step "
              "compiled with a counter-based generator, against ours and its matrix products", "threads": args.threads,
              "repeats": args.repeats, "temperatures": args.temperatures, "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores", "torch": torch.__version__, "load_average": os.getloadavg()[0],
              "date": time.strftime("%Y-%m-%d"), "full_temperatures": FULL_TEMPERATURES, **r}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"AIS over its products: ours (eager) {r['ours_over_matrix_products']:.2f}, compiled with SplitMix64 "
          f"{r['compiled_over_matrix_products']:.2f} ({r['compiled_over_ours']:.2f} of ours); inductor's random "
          f"{r['inductor_random_over_counter']:.2f} of SplitMix64's time")
    print(f"compile {r['compile_cold_s']:.1f} s with an empty cache, {r['compile_warm_s']:.1f} s with a filled one; "
          f"it saves {r['saved_on_full_estimate_s']:.1f} s of a {FULL_TEMPERATURES}-temperature estimate")
    print("->", args.out)


if __name__ == "__main__":
    main()
