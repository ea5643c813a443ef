"""CUDA checks, ready for a machine with a GPU: every family trains on it, and it computes what the CPU computes.

Nothing of this was run on a GPU when it was written (the development machine
has none); it is the script to run first on one:

    python benchmarks/cuda_checks.py --device cuda            # writes benchmarks/results/cuda_checks.json

On a machine without CUDA, ``--device cuda`` stops with one line saying so;
``--device cpu`` runs the same checks with the CPU in both roles (the CPU half:
it exercises every path of the script, and its comparisons are exact).

What it checks, each result in the JSON:

1. ``families``: a short training of every family of the catalogue on the
   device and on the CPU (``digits``, one epoch, cheap evaluation): seconds per
   epoch on each, finite losses, the evaluation's summary line.
2. ``same_as_cpu``: the CPU-trained model of each family moved to the device
   computes the same deterministic numbers as on the CPU, within float32
   tolerance (TF32 off): free energies of test images for energy models; for a
   Pyro model/guide pair, the log-densities of every site of a guide trace
   drawn on the CPU and replayed on the device (random draws differ between
   CPU and CUDA generators, so stochastic outputs are compared in distribution
   only, below).
3. ``ais``: a 64x12 RBM's exact log Z (enumeration) on both devices, and AIS on
   the device within 3 standard deviations of it.
4. ``gibbs_throughput``: block-Gibbs sweeps x chains per second of a 784x500
   RBM on the device, for 100 to 10,000 chains.
5. ``data_parallel``: with two or more GPUs, ``ppl-models train vae --nproc 2
   --device cuda`` (NCCL); with one, recorded as not run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = {"train.eval_particles": 20, "train.ais_temperatures": 200, "train.sample_sweeps": 20}
RTOL, ATOL = 1e-4, 1e-3


def _spec(family: str, device: str):
    from ppl_models import catalogue

    spec = catalogue.make_spec(family)
    overrides = ["data.dataset=\"digits\"", "train.epochs=1", f"train.device=\"{device}\""]
    overrides += [f"{k}={v}" for k, v in SMALL.items() if hasattr(spec.train, k.split(".")[1])]
    return catalogue.make_spec(family, None, overrides)


def train_family(family: str, device: str, out: str) -> dict:
    from ppl_models import catalogue

    started = time.perf_counter()
    try:
        metrics = catalogue.train(_spec(family, device), out, progress=False, log=lambda *_: None)
    except Exception as e:  # noqa: BLE001 (recorded: a check that fails must not stop the others)
        return {"ok": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    history = metrics.get("history") or []
    losses = [h.get("train_loss") for h in history if isinstance(h, dict)]
    return {"ok": all(v is None or math.isfinite(v) for v in losses), "wall_s": time.perf_counter() - started,
            "epoch_s": [h.get("seconds") for h in history if isinstance(h, dict)], "train_loss": losses,
            "summary": catalogue.summary(metrics)}


def _close(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return {"max_abs_diff": float((a - b).abs().max()) if a.numel() else 0.0,
            "ok": bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))}


def same_as_cpu(directory: str, device: str) -> dict:
    """Deterministic numbers of the CPU-trained model, on the CPU and on ``device``."""
    from pyro import poutine

    from ppl_models import catalogue

    trained = catalogue.load(directory)
    module, x = trained.module, trained.family.load_data(trained.spec).test.x[:64]
    if hasattr(module, "free_energy") and hasattr(module, "to_visible"):
        v = module.to_visible(x)
        width = getattr(module, "num_visible", v.shape[-1])
        if v.shape[-1] < width:  # a DBM's visible block also holds its even hidden layers: held at 0 here
            v = torch.cat([v, v.new_zeros(v.shape[0], width - v.shape[-1])], -1)
        with torch.no_grad():
            on_cpu = module.free_energy(v)
            on_dev = module.to(device).free_energy(v.to(device))
        return {"quantity": "free energy of 64 test images (the visible block)", **_close(on_cpu, on_dev)}
    if hasattr(module, "model") and hasattr(module, "guide"):
        torch.manual_seed(0)
        with torch.no_grad():
            guide_cpu = poutine.trace(module.guide).get_trace(x)
            model_cpu = poutine.trace(poutine.replay(module.model, trace=guide_cpu)).get_trace(x)
            module.to(device)
            guide_dev = poutine.trace(poutine.replay(module.guide, trace=_moved(guide_cpu, device))).get_trace(x.to(device))
            model_dev = poutine.trace(poutine.replay(module.model, trace=guide_dev)).get_trace(x.to(device))
        sites = {}
        for name, (a, b) in {**{f"q:{n}": (guide_cpu, guide_dev) for n in _sample_sites(guide_cpu)},
                             **{f"p:{n}": (model_cpu, model_dev) for n in _sample_sites(model_cpu)}}.items():
            site = name[2:]
            sites[name] = _close(a.nodes[site]["fn"].log_prob(a.nodes[site]["value"]).sum(),
                                 b.nodes[site]["fn"].log_prob(b.nodes[site]["value"]).sum())
        return {"quantity": "log-densities of a CPU guide trace replayed on the device", "sites": sites,
                "ok": all(s["ok"] for s in sites.values())}
    return {"quantity": None, "ok": None, "note": "no deterministic function of this family to compare"}


def _sample_sites(trace) -> list:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not n.startswith("_")]


def _moved(trace, device):
    trace = trace.copy()
    for site in trace.nodes.values():
        if site["type"] == "sample" and torch.is_tensor(site.get("value")):
            site["value"] = site["value"].to(device)
    return trace


def ais_check(device: str) -> dict:
    from inference.ais import ais_log_partition
    from inference.exact_enumeration import log_partition
    from ppl_models.rbm import RBM

    torch.manual_seed(0)
    rbm = RBM(64, 12, weight_scale=0.3)
    exact_cpu = float(log_partition(rbm))
    rbm.to(device)
    exact_dev = float(log_partition(rbm))
    started = time.perf_counter()
    ais = ais_log_partition(rbm, num_runs=200, num_temperatures=2000, groups=2)
    seconds = time.perf_counter() - started
    std = ais.log_z_std if math.isfinite(ais.log_z_std) else 0.0
    return {"exact_log_z_cpu": exact_cpu, "exact_log_z_device": exact_dev,
            "exact_same": abs(exact_cpu - exact_dev) <= ATOL + RTOL * abs(exact_cpu),
            "ais_log_z_device": ais.log_z, "ais_log_z_std": ais.log_z_std, "ais_seconds": seconds,
            "ais_within_3_std": abs(ais.log_z - exact_cpu) <= 3 * std + 0.05}


def gibbs_throughput(device: str, sweeps: int = 200) -> dict:
    from inference.block_gibbs import BlockGibbs
    from ppl_models.rbm import RBM

    torch.manual_seed(0)
    rbm = RBM(784, 500).to(device)
    out = {}
    for chains in (100, 1000, 10000):
        kernel = BlockGibbs(rbm, num_chains=chains, k=1)
        state = kernel.initial_params
        for _ in range(5):  # warm-up: allocations, kernel selection
            state = kernel.sample(state)
        _sync(device)
        started = time.perf_counter()
        for _ in range(sweeps):
            state = kernel.sample(state)
        _sync(device)
        seconds = time.perf_counter() - started
        out[str(chains)] = {"sweeps_per_s": sweeps / seconds, "chain_sweeps_per_s": sweeps * chains / seconds}
    return out


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def data_parallel_check(device: str) -> dict:
    if torch.device(device).type != "cuda" or torch.cuda.device_count() < 2:
        return {"run": False, "why": "needs 2 or more GPUs (NCCL data parallelism)"}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "ppl_models", "train", "vae", "--dataset", "digits", "--epochs", "1",
               "--device", "cuda", "--nproc", "2", "--eval-particles", "20", "--out", out, "--no-progress"]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        return {"run": True, "ok": done.returncode == 0, "wall_s": time.perf_counter() - started,
                "stdout": done.stdout.strip().splitlines()[-2:], "stderr": done.stderr.strip().splitlines()[-3:]}


def main() -> int:
    from ppl_models import catalogue

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the CPU half)")
    parser.add_argument("--families", default=",".join(catalogue.FAMILIES))
    parser.add_argument("--gibbs-sweeps", type=int, default=200, help="sweeps per throughput measurement")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "cuda_checks.json"))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("cuda_checks: no CUDA device on this machine (torch.cuda.is_available() is False); run it on a machine "
              "with a GPU, or with --device cpu for its CPU half", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 GEMMs as on the CPU, for the comparisons
    torch.backends.cudnn.allow_tf32 = False
    result = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "tolerance": {"rtol": RTOL, "atol": ATOL}, "families": {}, "same_as_cpu": {}}
    with tempfile.TemporaryDirectory(prefix="cuda-checks-") as scratch:
        for family in [f for f in args.families.split(",") if f]:
            cpu_dir, dev_dir = os.path.join(scratch, family + "-cpu"), os.path.join(scratch, family + "-dev")
            result["families"][family] = {"cpu": train_family(family, "cpu", cpu_dir),
                                          "device": train_family(family, args.device, dev_dir)}
            if result["families"][family]["cpu"]["ok"]:
                try:
                    result["same_as_cpu"][family] = same_as_cpu(cpu_dir, args.device)
                except Exception as e:  # noqa: BLE001 (recorded)
                    result["same_as_cpu"][family] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(family, json.dumps({"train": {k: v.get("ok") for k, v in result["families"][family].items()},
                                      "same_as_cpu": result["same_as_cpu"].get(family, {}).get("ok")}), flush=True)
    result["ais"] = ais_check(args.device)
    result["gibbs_throughput"] = gibbs_throughput(args.device, args.gibbs_sweeps)
    result["data_parallel"] = data_parallel_check(args.device)
    failures = [f"train {f} on {d}" for f, r in result["families"].items() for d, v in r.items() if not v["ok"]]
    failures += [f"same_as_cpu {f}" for f, v in result["same_as_cpu"].items() if v.get("ok") is False]
    failures += [k for k in ("exact_same", "ais_within_3_std") if not result["ais"][k]]
    result["failures"] = failures
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{args.out}: {len(failures)} failure(s){': ' + ', '.join(failures) if failures else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
