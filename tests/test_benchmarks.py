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
