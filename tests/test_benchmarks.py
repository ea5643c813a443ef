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
