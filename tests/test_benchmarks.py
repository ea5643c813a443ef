"""Every benchmark script still imports against the current packages (they run for minutes, so CI does
not run them; a renamed module must not go unnoticed until someone re-measures a README figure)."""

import importlib.util
import os
import pathlib
import shutil
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
#: the scripts; a module whose name starts with "_" is a helper they share (run as scripts, they find it beside them)
BENCHMARKS = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 6


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("threadpoolctl")
    monkeypatch.syspath_prepend(str(HERE))
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # as an import would: dataclasses look their module up
    spec.loader.exec_module(module)  # module level only: main() runs under __name__ == "__main__"
    assert callable(getattr(module, "main", None))


def test_readme_performance_table_is_the_benchmark_pages(monkeypatch):
    """The README's performance table is `python benchmarks/run_all.py --table`, from the committed summary."""
    import json

    monkeypatch.syspath_prepend(str(HERE))
    spec = importlib.util.spec_from_file_location("benchmark_run_all_table", HERE / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    summary = json.loads((HERE / "results" / "summary.json").read_text())
    readme = (HERE.parent / "README.md").read_text()
    start, end = "<!-- performance-table: start -->\n", "\n<!-- performance-table: end -->"
    assert start in readme and end in readme, "the README lost its generated performance table"
    assert readme.split(start)[1].split(end)[0] == module.table(summary)


def _load_benchmark(name, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}_check", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _float64_rbm(visible: int, hidden: int, weight_scale: float):
    """A float64 RBM with standard-normal biases (drawn from the global stream, after its weights)."""
    import torch

    from ppl_models.rbm import RBM

    rbm = RBM(visible, hidden, weight_scale=weight_scale).double()
    with torch.no_grad():
        rbm.visible_bias.normal_(), rbm.hidden_bias.normal_()
    return rbm


def test_dbm_ais_hand_written_loop_is_the_same_maths(monkeypatch):
    """The baseline of benchmarks/dbm_ais_vs_plain.py: the same log Z as ours for a seed, and the exact one."""
    bench = _load_benchmark("dbm_ais_vs_plain", monkeypatch)
    checked = bench.check(runs=500, temperatures=100, seeds=1)  # raises if either comparison fails
    assert abs(checked["seeds"][0]["ours"] - checked["exact_log_z"]) < 0.2


def test_sbn_nvil_hand_written_loop_is_the_same_maths(monkeypatch):
    """The baseline of benchmarks/sbn_vs_plain.py: one epoch of it and of the driver, from the same start and
    seed, draw the same samples and end at the same parameters."""
    import copy

    import torch

    from inference.nvil import NVIL, NVILBaseline
    from inference.training import PyroObjective, fit, with_auxiliary
    from ppl_models.sbn import SBNArchitecture, SigmoidBeliefNet

    bench = _load_benchmark("sbn_vs_plain", monkeypatch)
    torch.manual_seed(0)
    x = (torch.rand(120, 12) < 0.3).float()
    sbn, baseline = SigmoidBeliefNet(SBNArchitecture(x_dim=12, hidden=[6, 4])), NVILBaseline(12, 2, hidden=5)
    plain_sbn, plain_baseline = copy.deepcopy(sbn), copy.deepcopy(baseline)
    objective = PyroObjective(NVIL(baseline, chain=sbn.chain), sbn.model, sbn.guide)
    ours = fit(objective, (x,), module=with_auxiliary(sbn, objective), epochs=1, batch_size=50, lr=3e-3, seed=3,
               progress=False).history[-1]["train_loss"]
    plain = bench.plain_nvil_epoch(plain_sbn, plain_baseline, x, 50, 3e-3, seed=3)
    assert abs(ours - plain) < 1e-4 * abs(ours)
    for a, b in zip([*sbn.parameters(), *baseline.parameters(), *baseline.buffers()],
                    [*plain_sbn.parameters(), *plain_baseline.parameters(), *plain_baseline.buffers()]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("objective", ["vimco", "rws", "wake_sleep", "iwae"])
def test_sbn_hand_written_loops_are_the_same_maths(objective, monkeypatch):
    """The other baselines of benchmarks/sbn_vs_plain.py (--objective): one epoch of each and of the driver with
    the sbn family's objective (its defaults: k = 5, rws's insomnia 1, wake-sleep's dreams), from the same start
    and seed, draw the same samples and end at the same loss and parameters."""
    import copy

    import torch

    from inference.training import fit, with_auxiliary
    from ppl_models import catalogue
    from ppl_models.sbn import SBNArchitecture, SigmoidBeliefNet

    bench = _load_benchmark("sbn_vs_plain", monkeypatch)
    family = catalogue.family("sbn")
    spec = catalogue.make_spec("sbn", {"model": {"x_dim": 12, "hidden": [6, 4]}, "objective": {"name": objective}})
    torch.manual_seed(0)
    x = (torch.rand(120, 12) < 0.3).float()
    sbn = SigmoidBeliefNet(SBNArchitecture(x_dim=12, hidden=[6, 4]))
    plain_sbn = copy.deepcopy(sbn)
    obj = family.make_objective(spec, sbn)
    ours = fit(obj, (x,), module=with_auxiliary(sbn, obj), epochs=1, batch_size=50, lr=3e-3, seed=3,
               progress=False).history[-1]["train_loss"]
    plain = bench.plain_objective_epoch(objective, plain_sbn, x, 50, 3e-3, seed=3, k=spec.objective.k,
                                        insomnia=spec.objective.insomnia)
    assert abs(ours - plain) < 1e-4 * abs(ours)
    for a, b in zip(sbn.parameters(), plain_sbn.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-5)


def test_energy_floors_hand_written_pcd_is_the_same_algorithm(monkeypatch):
    """The baseline of benchmarks/energy_floors.py: from the same parameters, chains and random stream, three
    steps of the hand-written PCD-1 loop give ContrastiveDivergence's folded plain-SGD steps (float64)."""
    import torch

    from inference.contrastive_divergence import ContrastiveDivergence

    bench = _load_benchmark("energy_floors", monkeypatch)
    torch.manual_seed(0)
    x = (torch.rand(15, 6) < 0.4).double()
    rbm = _float64_rbm(6, 4, weight_scale=0.5)
    hand = bench.HandWrittenPCD(x, 4, batch=5, lr=0.3)
    hand.W, hand.b, hand.c = (rbm.weight.detach().clone(), rbm.visible_bias.detach().clone(),
                              rbm.hidden_bias.detach().clone())
    cd = ContrastiveDivergence(rbm, k=1, persistent=True, compute_loss=False)
    cd._kernel(5).initial_params = {"v": x[:5].clone(), "h": hand.h_chains}
    torch.manual_seed(1)
    for i in range(3):
        cd.sgd_step(x[5 * i:5 * (i + 1)], lr=0.3)
    torch.manual_seed(1)
    hand.epoch(shuffle=False)
    assert torch.equal(cd.kernel.initial_params["h"], hand.h_chains)  # the same draws
    for ours, theirs in ((rbm.weight, hand.W), (rbm.visible_bias, hand.b), (rbm.hidden_bias, hand.c)):
        torch.testing.assert_close(ours.detach(), theirs, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(hand.W, bench.HandWrittenPCD(x, 4, 5, 0.3).W)  # it trained


def test_floor_operands_at_one_address_share_a_buffer_as_large_as_the_largest(monkeypatch):
    """Memory freed within a recorded step comes back at the same address as a larger tensor: the timed
    operands keep sharing it (as the path's did), in a buffer big enough for both (it raised before)."""
    import torch

    monkeypatch.syspath_prepend(str(HERE))
    import _floor

    products = _floor.Products()
    for rows in (10, 20):
        products.append((torch.ops.aten.mm.default, [((rows, 4), (4, 1), torch.float32), ((4, 3), (3, 1), torch.float32)]))
        products.storages.append([(1000, rows * 4 * 4, 0), (2000, 48, 0)])
    (a1, b1), (a2, b2) = _floor._operands(products)
    assert a2.shape == (20, 4) and a1.shape == (10, 4)
    assert a1.untyped_storage().data_ptr() == a2.untyped_storage().data_ptr()
    assert b1.untyped_storage().data_ptr() == b2.untyped_storage().data_ptr()


def test_compiled_ais_step_generator_is_splitmix64(monkeypatch):
    """benchmarks/compiled_ais_step.py's generator: SplitMix64's published outputs for seed 1234567 (Rosetta
    Code, "Pseudo-random numbers/Splitmix64"), at any counter; its 24-bit uniforms uniform and serially
    uncorrelated, and its Bernoulli draws at the asked frequencies (fixed key: the tests cannot flake)."""
    import torch
    from scipy import stats

    bench = _load_benchmark("compiled_ais_step", monkeypatch)
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                16408922859458223821]
    bits = bench.splitmix64(torch.arange(5), 1234567).tolist()
    assert [b % (1 << 64) for b in bits] == expected
    assert bench.splitmix64(torch.tensor([3, 1]), 1234567).tolist() == [bits[3], bits[1]]  # random access
    u = bench._shift_right(bench.splitmix64(torch.arange(1 << 20), 7), 40).double() / (1 << 24)
    assert u.min() >= 0 and u.max() < 1
    counts = torch.histc(u, bins=64, min=0, max=1)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    lag1 = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]
    assert abs(float(lag1)) < 4 / (1 << 10)  # 4 standard errors of a correlation of 2^20 pairs
    probs = torch.tensor([1e-3, 0.1, 0.5, 0.9, 0.999]).repeat(200_000, 1)
    draws = bench.counter_bernoulli(probs, 123, 11)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    half = torch.full((1000,), 0.5)  # element i at counter c is output c + i: one stream, whatever the shapes
    assert torch.equal(bench.counter_bernoulli(half, 123, 11)[1:], bench.counter_bernoulli(half, 124, 11)[:-1])
    for j, p in enumerate(probs[0].tolist()):
        assert stats.binomtest(int(draws[:, j].sum()), draws.shape[0], p).pvalue > 1e-4


def test_compiled_ais_step_takes_the_paths_steps(monkeypatch):
    """The step the benchmark compiles is the base-rate path's: from the same state, with the path's draws
    taken from the same counter-based stream, the same log-weight increments and the same next states."""
    import torch

    import ppl_models.rbm_annealing as annealing

    bench = _load_benchmark("compiled_ais_step", monkeypatch)
    torch.manual_seed(0)
    rbm = _float64_rbm(7, 5, weight_scale=1.0)
    base = torch.randn(7, dtype=torch.float64)
    path = rbm.annealing_path(base)
    counter = [1000]

    def counter_draw(probs):  # the path's draws, in its order (hidden then visible), from the same stream
        out = bench.counter_bernoulli(probs, counter[0], 5)
        counter[0] += probs.numel()
        return out

    monkeypatch.setattr(annealing, "bernoulli_draw", counter_draw)
    v = (torch.rand(40, 7) < 0.5).double()
    params = [p.detach() for p in (rbm.weight, rbm.hidden_bias, rbm.visible_bias)] + [base]
    for beta_prev, beta in ((0.0, 0.3), (0.3, 0.31), (0.9, 1.0)):
        start = counter[0]
        increment, v_next = path.step(v, beta_prev, beta)
        scalars = [torch.tensor(x, dtype=torch.float64) for x in (beta_prev, beta, beta_prev - beta)]
        ours, ours_next = bench.ais_step(v, *scalars, start, 5, *params)
        torch.testing.assert_close(ours, increment)
        assert torch.equal(ours_next, v_next)
        v = v_next


def test_compiled_ais_step_estimates_the_exact_log_z(monkeypatch):
    """AIS through the benchmark's step and generator (run eagerly) estimates an enumerable RBM's log Z."""
    import math

    import torch

    from inference.exact_enumeration import log_partition

    bench = _load_benchmark("compiled_ais_step", monkeypatch)
    torch.manual_seed(0)
    rbm = _float64_rbm(9, 6, weight_scale=0.8)
    base = torch.zeros(9, dtype=torch.float64)
    log_w = bench.counter_ais_log_weights(bench.ais_step, rbm, base, 2000, torch.linspace(0, 1, 300,
                                          dtype=torch.float64), key=3)
    estimate = rbm.annealing_path(base).log_z_base + float(torch.logsumexp(log_w, 0) - math.log(log_w.numel()))
    exact = float(log_partition(rbm))
    assert abs(estimate - exact) < 0.02, (estimate, exact)


@pytest.mark.skipif(not shutil.which(os.environ.get("CXX", "g++")), reason="torch.compile needs a C++ compiler")
def test_compiled_ais_step_compiles_to_the_same_steps(monkeypatch):
    """Compiled, the step keeps the counter-based generator (not inductor's random): the same log-weights as
    the eager step, run by run (float32: the fused softplus and sigmoids may round differently; a draw
    flips only when a uniform falls within that rounding of its probability)."""
    import torch

    from ppl_models.rbm import RBM

    bench = _load_benchmark("compiled_ais_step", monkeypatch)
    torch.manual_seed(0)
    rbm = RBM(12, 8, weight_scale=0.5)
    base = torch.randn(12)
    schedule = torch.linspace(0, 1, 20, dtype=torch.float64)
    with torch.no_grad():
        eager = bench.counter_ais_log_weights(bench.ais_step, rbm, base, 50, schedule, key=9)
        compiled = bench.counter_ais_log_weights(bench._compiled(bench.counter_bernoulli), rbm, base, 50, schedule, key=9)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
