"""The three layers stay apart: inference imports nothing of ppl_models; model files import nothing of
inference (only through ppl_models.errors, the errors' one re-export); the catalogue and CLI join them."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
WIRING = {"cli.py", "__main__.py", "errors.py"}  # errors.py re-exports inference.errors, nothing else


def imported_packages(path: pathlib.Path) -> set:
    """Top-level packages a module imports, absolute or relative (resolved against its own package)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(base[0] if base else (node.module or "").split(".")[0])
            else:
                found.add(node.module.split(".")[0])
    return found


def test_inference_imports_nothing_of_ppl_models():
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "inference").rglob("*.py"))
                 if "ppl_models" in imported_packages(p)]
    assert offenders == []


def test_model_files_import_nothing_of_inference():
    modules = [p for p in sorted((ROOT / "ppl_models").rglob("*.py"))
               if "catalogue" not in p.relative_to(ROOT).parts and p.name not in WIRING]
    assert len(modules) > 10  # the walk found the model files
    offenders = [str(p.relative_to(ROOT)) for p in modules if "inference" in imported_packages(p)]
    assert offenders == []


def test_errors_module_only_re_exports():
    source = (ROOT / "ppl_models" / "errors.py").read_text()
    tree = ast.parse(source)
    assert not any(isinstance(node, (ast.ClassDef, ast.FunctionDef)) for node in tree.body)
    assert imported_packages(ROOT / "ppl_models" / "errors.py") == {"inference"}


def test_the_walker_sees_relative_and_absolute_imports(tmp_path):
    assert imported_packages(ROOT / "ppl_models" / "catalogue" / "directed.py") >= {"inference", "ppl_models"}
    assert "ppl_models" in imported_packages(ROOT / "ppl_models" / "rbm.py")  # its relative imports
