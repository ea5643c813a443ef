"""One benchmark page: run every speed benchmark, collect its ratios, chart them, print the README table.

    python benchmarks/run_all.py [--quick] [--only NAME ...]   # run, then collect
    python benchmarks/run_all.py --collect [--quick]            # collect the JSON files already there
    python benchmarks/run_all.py --table                        # the README's performance table

Each benchmark writes its own JSON (full runs to ``benchmarks/results/``, ``--quick`` runs to
``benchmarks/results/quick/`` so that a quick look never overwrites a README figure); this script
reads from each the ratios a reader needs (our path against a hand-written PyTorch loop or a peer
library, and against the floor: the time of the same matrix products alone, measured in the same
run), writes them with the machine, thread count and date to ``summary.json`` beside them and charts
them as ``summary.png``. The README's performance table is ``--table``'s output from the full
summary; ``tests/test_benchmarks.py`` fails when the two differ. Below the ratios it prints the peak-memory
table of ``benchmarks/memory.py`` (about an hour: run on its own, not by this script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


@dataclass
class Row:
    """One ratio of the page: ``path`` takes ``ratio`` times the time of ``against`` (lower is better)."""

    path: str
    against: str
    ratio: float
    aim: float | None = None

    def as_dict(self) -> dict:
        return {"path": self.path, "against": self.against, "ratio": self.ratio, "aim": self.aim}


def _svi(r: dict) -> list:
    return [Row("SVI epoch, shared driver with trace replay (VAE 784-200-20, batch 100)", "hand-written loop, fused Adam",
                r["ratio_ours_over_plain_fused_adam"], r.get("aim", 1.05)),
            Row("SVI epoch, shared driver, every step through Pyro (replay off)", "hand-written loop, fused Adam",
                r["ratio_pyro_route_over_plain_fused_adam"]),
            Row("SVI epoch, shared driver with trace replay", "Pyro's VAE example loop (SVI, Trace_ELBO), same sizes",
                r["ratio_ours_over_pyro_example"]),
            Row("SVI epoch, shared driver with trace replay", "its matrix products alone", r["ratio_ours_over_floor"]),
            _svi_twin(r)]


def _svi_twin(r: dict) -> Row:
    threads = ", 1 thread" if r.get("threads") == 1 else ""
    return Row(f"hand-written loop, fused Adam{threads}: a twin (another VAE, same code)",
               "the loop itself, timed the same way (this VM's noise on the ratio)", r["ratio_twin_over_plain_fused_adam"])


def _svi_1thread(r: dict) -> list:
    return [Row("SVI epoch, shared driver with trace replay, 1 thread", "hand-written loop, fused Adam",
                r["ratio_ours_over_plain_fused_adam"], r.get("aim", 1.05)),
            Row("SVI epoch, shared driver, every step through Pyro, 1 thread", "hand-written loop, fused Adam",
                r["ratio_pyro_route_over_plain_fused_adam"]),
            _svi_twin(r)]


def _is(r: dict) -> list:
    return [Row("importance-sampled log p(x), k = 1000, 100 images", "hand-written loop", r["ratio_ours_over_plain"],
                r.get("aim", 1.05)),
            Row("importance-sampled log p(x)", "its matrix products alone", r["ratio_ours_over_floor"]),
            Row("importance-sampled log p(x), hand-written loop", "its matrix products alone",
                r["ratio_plain_over_floor"])]


def _rbm(r: dict) -> list:
    return [Row("PCD-1 training, RBM 784x500", "hand-written PyTorch loop", r["ours_over_plain_pytorch_time_median"]),
            Row("PCD-1 training, RBM 784x500", "scikit-learn BernoulliRBM (float32, 1 thread)",
                1 / r["speedup_sklearn_over_ours_median"])]


def _rbm_user(r: dict) -> list:
    user, strict = r["default_threads_float64"], r["one_thread_float32"]
    return [Row(f"PCD-1 training, RBM 784x500, as users meet it ({user['threads']['torch']} threads, float64 numpy data)",
                "scikit-learn BernoulliRBM, same data and threads", user["ratio_ours_over_sklearn"]),
            Row("PCD-1 training, RBM 784x500 (1 thread, float32)", "scikit-learn BernoulliRBM, same",
                strict["ratio_ours_over_sklearn"])]


def _floors(r: dict) -> list:
    pcd, ais = r["pcd"], r["ais"]
    return [Row("PCD-1 training, RBM 784x500, batch 20", "its matrix products alone", pcd["ours_over_matrix_products"],
                r["aims"]["pcd_over_matrix_products"]),
            Row("PCD-1 training, RBM 784x500", "its step floor (products + draws, sigmoids, update alone)",
                pcd["ours_over_step_floor"]),
            *_hand_pcd(pcd),
            *_momentum(r.get("pcd_momentum")),
            Row(f"AIS log Z, RBM 784x500, {ais['runs']} runs", "its matrix products alone", ais["ours_over_matrix_products"],
                r["aims"]["ais_over_matrix_products"]),
            Row("AIS log Z, RBM 784x500", "its step floor (products + draws, sigmoids, softplus alone)",
                ais["ours_over_step_floor"]),
            *_ais_bounds(ais)]


def _hand_pcd(pcd: dict) -> list:
    if "ours_over_hand_written" not in pcd:  # a summary from before the hand-written loop
        return []
    return [Row("PCD-1 training, RBM 784x500", "hand-written eager loop, same products and folded update",
                pcd["ours_over_hand_written"]),
            Row("PCD-1 training, RBM 784x500, that hand-written loop", "its matrix products alone",
                pcd["hand_written_over_matrix_products"])]


def _ais_bounds(ais: dict) -> list:
    if "products_and_uniforms_over_matrix_products" not in ais:  # a summary from before these were timed
        return []
    return [Row("AIS, RBM 784x500: its step floor", "its matrix products alone", ais["step_floor_over_matrix_products"]),
            Row("AIS, RBM 784x500: its products + torch's uniforms for its draws, alone", "its matrix products alone",
                ais["products_and_uniforms_over_matrix_products"])]


def _momentum(m: dict | None) -> list:
    if m is None:  # a summary from before the momentum fold
        return []
    return [Row(f"PCD-1 training, RBM 784x500, SGD momentum {m['momentum']} folded into the GEMM",
                "the same through torch.optim.SGD (fused)", m["folded_over_optimiser"])]


def _compiled_ais(r: dict) -> list:
    step = "AIS, RBM 784x500: the step compiled, its draws from SplitMix64 (benchmark only, not shipped)"
    saved = f"what it saves on a {r['full_temperatures']:,}-temperature estimate"
    return [Row(step, "its matrix products alone", r["compiled_over_matrix_products"]),
            Row(step, "ours (eager)", r["compiled_over_ours"]),
            Row("that compiled step, drawing from inductor's own random", "the same with SplitMix64",
                r["inductor_random_over_counter"]),
            Row("that compiled step: its compile, empty cache", saved, r["compile_cold_over_saved"]),
            Row("that compiled step: its compile, filled cache", saved, r["compile_warm_over_saved"])]


def _nade(r: dict) -> list:
    ll, ep = r["log_prob"], r["training_epoch"]
    return [Row(f"NADE 784-500 exact log p(x), {ll['images']} images", "the textbook per-pixel loop",
                ll["ratio_ours_over_textbook"], r.get("aim", 1.1)),
            Row("NADE exact log p(x)", "its N x D x H sigmoids alone", ll["ratio_ours_over_floor"]),
            Row("NADE training epoch, shared driver (Trace_ELBO)", "hand-written loop, fused Adam",
                ep["ratio_ours_over_plain"])]


def _dbm_ais(r: dict) -> list:
    layers, runs = "-".join(map(str, r["protocol"]["dbm_layers"])), r["protocol"]["runs"]
    return [Row(f"AIS log Z, DBM {layers}, {runs} runs", "hand-written loop", r["ratio_ours_over_plain"],
                r.get("aim", 1.1)),
            Row(f"AIS log Z, DBM {layers}", "its matrix products alone", r["ratio_ours_over_floor"]),
            Row(f"AIS log Z, DBM {layers}, hand-written loop", "its matrix products alone", r["ratio_plain_over_floor"])]


#: sbn_vs_plain's objectives (``--objective``) beyond NVIL, each its own JSON, ``sbn_vs_plain_<objective>.json``
SBN_PLAIN_OBJECTIVES = ("vimco", "rws", "wake_sleep", "iwae")


def _sbn_plain(r: dict) -> list:
    s = r["settings"]
    arch, k = "-".join(map(str, s["arch"])), s.get("num_particles")
    name = {"wake_sleep": "wake-sleep"}.get(s["objective"], s["objective"].upper())
    if s["objective"] in ("vimco", "rws", "iwae") and k:
        name += f" (k = {k})"
    return [Row(f"SBN {arch} training epoch, {name}, shared driver (batch {s['batch_size']})",
                "hand-written loop, fused Adam", r["ratio_ours_over_plain"], r.get("aim", 1.1)),
            Row(f"SBN {arch} training epoch, {name}", "its matrix products alone", r["ratio_ours_over_floor"])]


def _gibbs(r: dict) -> list:
    ratios = r["throughput_ratio_paired_median"]
    rows = [Row("block Gibbs, RBM 784x500, 100 chains, pyro.infer.MCMC kernel", "raw PyTorch sweeps",
                1 / ratios["no_sites_saved"], 1 / r["aim"] if r.get("aim") else None)]
    if "time_over_matrix_products" in r:
        rows += [Row("block Gibbs, pyro.infer.MCMC kernel", "its matrix products alone",
                     r["time_over_matrix_products"]["no_sites_saved"]),
                 Row("block Gibbs, raw PyTorch sweeps", "its matrix products alone", r["time_over_matrix_products"]["raw"])]
    return rows


def _sbn(r: dict) -> list:
    return [Row(f"SBN {r['arch']} training step, {name} (k = {e['k']})", "its matrix products alone", e["step_over_floor"])
            for name, e in r["estimators"].items()]


@dataclass
class Benchmark:
    name: str  # also its JSON's name
    quick: list
    rows: Callable[[dict], list]
    full: tuple = ()
    script: str = ""  # when not ``name``: the same script at other settings (``full`` and ``quick`` say which)


BENCHMARKS = [
    Benchmark("svi_driver_vs_plain", ["--repeats", "3"], _svi, ("--repeats", "15")),
    Benchmark("svi_driver_vs_plain_1thread", ["--repeats", "3", "--threads", "1"], _svi_1thread,
              ("--repeats", "11", "--threads", "1"), script="svi_driver_vs_plain"),
    Benchmark("is_log_likelihood", ["--repeats", "3"], _is),
    Benchmark("rbm_vs_sklearn", ["--quick"], _rbm),
    Benchmark("rbm_vs_sklearn_user", ["--epochs", "2", "--repeats", "2"], _rbm_user),
    Benchmark("energy_floors", ["--repeats", "2", "--temperatures", "500"], _floors),
    Benchmark("compiled_ais_step", ["--repeats", "2", "--temperatures", "500"], _compiled_ais),
    Benchmark("nade_vs_plain", ["--repeats", "1", "--train-images", "300"], _nade),
    Benchmark("gibbs_throughput", ["--repeats", "3", "--sweeps", "100"], _gibbs),
    Benchmark("sbn_gradient_variance", ["--warmup", "1", "--draws", "20"], _sbn),
    Benchmark("dbm_ais_vs_plain", ["--temperatures", "300", "--repeats", "2"], _dbm_ais,
              ("--temperatures", "1000", "--repeats", "5")),
    Benchmark("sbn_vs_plain", ["--repeats", "3"], _sbn_plain, ("--repeats", "11")),
    *(Benchmark(f"sbn_vs_plain_{o}", ["--repeats", "3", "--objective", o], _sbn_plain,
                ("--repeats", "11", "--objective", o), script="sbn_vs_plain") for o in SBN_PLAIN_OBJECTIVES),
]
NAMES = [b.name for b in BENCHMARKS]


def results_dir(quick: bool) -> str:
    return os.path.join(RESULTS, "quick") if quick else RESULTS


def run(bench: Benchmark, quick: bool) -> None:
    out = os.path.join(results_dir(quick), f"{bench.name}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [sys.executable, os.path.join(HERE, f"{bench.script or bench.name}.py"), *(bench.quick if quick else bench.full),
           "--out", out]
    print("$", " ".join(cmd[1:]), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  {bench.name}: {time.perf_counter() - t:.0f} s", flush=True)


def collect(quick: bool) -> dict:
    rows, sources, missing = [], {}, []
    for bench in BENCHMARKS:
        path = os.path.join(results_dir(quick), f"{bench.name}.json")
        if not os.path.exists(path):
            missing.append(bench.name)
            continue
        with open(path) as f:
            result = json.load(f)
        sources[bench.name] = {"threads": result.get("threads"), "date": result.get("date"),
                               "machine": result.get("machine")}
        try:
            rows += [dict(row.as_dict(), benchmark=bench.name) for row in bench.rows(result)]
        except KeyError as e:  # a JSON written before the benchmark measured this ratio
            missing.append(f"{bench.name} (its JSON has no {e.args[0]}: re-run it)")
    memory = None
    memory_path = os.path.join(RESULTS, "memory.json")  # benchmarks/memory.py: about an hour, run on its own
    if os.path.exists(memory_path):
        with open(memory_path) as f:
            memory = json.load(f)
    return {"page": "ppl-models benchmarks", "quick": quick, "collected": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}", "python": platform.python_version(),
            "sources": sources, "missing": missing, "rows": rows, "memory": memory}


def cpu_model() -> str:
    """The processor's name as the kernel reports it: the ratios move with it (two 2-core VMs of this
    workplace drew uniforms at 2.3 and 4.7 ns each), so the page names it."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    except OSError:
        return platform.processor() or "unknown CPU"


def chart(summary: dict, path: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: headless

    rows = summary["rows"]
    fig = Figure(figsize=(10, 0.35 * len(rows) + 1.2))
    ax = fig.add_subplot()
    labels = [f"{r['path']}\n/ {r['against']}" for r in rows]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["ratio"] for r in rows], color=["C0" if r["aim"] is None or r["ratio"] <= r["aim"] else "C3"
                                                   for r in rows])
    for yi, r in zip(y, rows):
        if r["aim"] is not None:
            ax.plot([r["aim"]] * 2, [yi - 0.4, yi + 0.4], color="k", lw=2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("time ratio (lower is better; black tick: the aim; red: aim not met)")
    ax.set_title(f"ppl-models benchmarks{' (quick)' if summary['quick'] else ''}, {summary['machine']}, "
                 f"{summary['collected']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(summary: dict) -> str:
    """The README's performance table (markdown) from a summary."""
    lines = ["| path | against | time ratio | aim | threads | measured |", "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        src = summary["sources"][r["benchmark"]]
        aim = f"≤ {r['aim']:.2f}" + (" ✓" if r["ratio"] <= r["aim"] else " ✗") if r["aim"] is not None else ""
        lines.append(f"| {r['path']} | {r['against']} | {r['ratio']:.2f} | {aim} | {src['threads']} | "
                     f"{src['date'] or 'undated'} |")
    memory = summary.get("memory")
    if memory:
        epochs = sorted({r["epochs"] for r in memory["rows"]})
        lines += ["", f"Peak resident memory of `ppl-models train FAMILY --dataset D --epochs E` with the family's "
                  f"default settings (train, evaluate, sample grid), `benchmarks/memory.py`, {memory['threads']} "
                  f"thread, {memory['date']}:", "", "| family | data | epochs | peak memory (MiB) | wall time (s) |",
                  "|---|---|---|---|---|"]
        for r in memory["rows"]:
            peak = f"{r['peak_rss_mib']:.0f}" if not r["exit"] else f"failed: {r.get('error', '?')}"
            lines.append(f"| {r['family']} | {r['dataset']} | {r['epochs']} | {peak} | {r['seconds']:.0f} |")
        same = [r for r in memory["rows"] if r["family"] == "vae" and r["dataset"] == "mnist5k" and not r["exit"]]
        if len(epochs) > 1 and len(same) > 1:
            peaks = " and ".join(f"{r['peak_rss_mib']:.0f} MiB at {r['epochs']}" for r in same)
            lines += ["", f"(The VAE peaks at {peaks} epochs: training longer adds time, not memory. Wall times were "
                      "taken at low priority while other jobs shared the machine.)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short settings; results under benchmarks/results/quick/")
    p.add_argument("--only", nargs="+", choices=NAMES, help="run only these (the page still collects every JSON)")
    p.add_argument("--collect", action="store_true", help="do not run anything: collect the JSON files there")
    p.add_argument("--table", action="store_true", help="print the README table from the summary and exit")
    args = p.parse_args(argv)
    summary_path = os.path.join(results_dir(args.quick), "summary.json")
    if args.table:
        with open(summary_path) as f:
            print(table(json.load(f)))
        return 0
    if not args.collect:
        for bench in BENCHMARKS:
            if args.only is None or bench.name in args.only:
                run(bench, args.quick)
    summary = collect(args.quick)
    os.makedirs(os.path.dirname(summary_path), exist_ok=True)
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    chart(summary, summary_path.replace(".json", ".png"))
    print(table(summary))
    if summary["missing"]:
        print(f"no results yet for: {', '.join(summary['missing'])}")
    print(f"-> {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
