"""Every benchmark script still imports against the current packages (they run for minutes, so CI does
not run them; a renamed module must not go unnoticed until someone re-measures a README figure)."""

import importlib.util
import pathlib
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
    from ppl_models.rbm import RBM

    bench = _load_benchmark("energy_floors", monkeypatch)
    torch.manual_seed(0)
    x = (torch.rand(15, 6) < 0.4).double()
    rbm = RBM(6, 4, weight_scale=0.5).double()
    with torch.no_grad():
        rbm.visible_bias.normal_(), rbm.hidden_bias.normal_()
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
