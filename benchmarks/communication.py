"""Communication against compute for data-parallel training, on paper: per family at its default size, the
bytes all-reduced per update and the batch size B* above which splitting one update over 2 workers pays.

Splitting a batch of B over 2 workers of R FLOP/s saves c P B / (2R) and costs t_comm = 4P / bandwidth + 2 alpha
(a ring all-reduce of the float32 gradients on 2 ranks: each sends and receives the buffer once, 2 messages), so
data parallelism pays above B* = 2 R t_comm / (c P); c is each family's FLOPs per datapoint per parameter for one
update, an estimate stated beside it. P is counted from each family's default model file on MNIST-5k images.

Run: ``python benchmarks/communication.py`` (seconds; prints the README table, writes JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import time

from ppl_models import catalogue

#: FLOPs per datapoint (or chain) per update as a multiple of P, and why
C = {"vae": (6, "1 particle: forward 2P + backward 4P"), "iwae": (18, "k = 5: encoder once, decoder 5 times"),
     "dcim": (12, "forward and reverse recursions, each forward + backward"),
     "rbm": (5, "PCD-1, per data row or chain"), "gbrbm": (5, "PCD-1"),
     "dbm": (20, "mean field (2P per iteration, typically 5-10) + PCD-1"), "fvbm": (5, "PCD-1"),
     "dbn": (5, "PCD-1 per greedy layer"), "mixture": (None, "EM: refused data-parallel"),
     "sbn": (12, "NVIL: recognition + generative + baseline, forward + backward"),
     "nade": (6, "exact log p: forward + backward"), "fvsbn": (6, "forward + backward"),
     "gan": (12, "two phases (D, then G through D)"), "gmmn": (6, "generator forward + backward (+ O(B^2) kernel)"),
     "dae": (12, "corrupt / denoise, 1 walkback step")}
RATES = {"CPU node, 50 GFLOP/s": 5e10, "GPU, 50 TFLOP/s fp32": 5e13}
NETS = {"10 Gb/s, 50 us": (1.25e9, 50e-6), "100 Gb/s, 5 us": (1.25e10, 5e-6)}


def parameters(name: str) -> int:
    fam = catalogue.family(name)
    spec = catalogue.make_spec(name, overrides=["data.dataset=mnist5k"])
    fam.resolve(spec, fam.load_data(spec))
    return sum(p.numel() for p in fam.build(spec).parameters() if p.requires_grad)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "communication.json"))
    args = p.parse_args()
    rows = []
    print("| family | parameters P | bytes all-reduced per update | c | B* CPU 10 Gb/s | B* CPU 100 Gb/s | "
          "B* GPU 10 Gb/s | B* GPU 100 Gb/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in catalogue.FAMILIES:
        n = parameters(name)
        c, why = C.get(name, (None, "no estimate"))
        phases = 2 if name == "gan" else 1
        b_star = {}
        for rate_name, rate in RATES.items():
            for net_name, (bandwidth, latency) in NETS.items():
                t_comm = phases * ((4 * n + 8) / bandwidth + 2 * latency)
                b_star[f"{rate_name}; {net_name}"] = None if c is None else 2 * rate * t_comm / (c * n)
        rows.append({"family": name, "parameters": n, "bytes_per_update": phases * (4 * n + 8), "c": c, "c_why": why,
                     "batch_above_which_it_pays": b_star})
        cells = " | ".join("-" if v is None else f"{v:,.0f}" for v in b_star.values())
        print(f"| {name} | {n:,} | {phases * (4 * n + 8) / 1e6:.2f} MB | {c or '-'} | {cells} |")
    with open(args.out, "w") as f:
        json.dump({"benchmark": "communication", "date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
