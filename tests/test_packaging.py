"""What `pip install .` gives: every third-party module scaling/ imports is a declared dependency."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _declared() -> tuple[set[str], set[str]]:
    """(distributions of `dependencies`, distributions of the optional extras), normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_requirement_name(r) for r in project["dependencies"]}
    optional = {_requirement_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    return required, optional - {"scaling"}


def _catches_import_error(node: ast.Try) -> bool:
    for h in node.handlers:
        names = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
        if any(isinstance(n, ast.Name) and n.id in IMPORT_ERRORS for n in names):
            return True
    return False


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(top-level module, guarded by an ``except ImportError``, line) of every absolute import."""
    out = []

    def walk(node, guarded: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], guarded, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], guarded, child.lineno))
            if isinstance(child, ast.Try) and _catches_import_error(child):
                for stmt in child.body:
                    walk_one(stmt, True)
                for part in (child.handlers, child.orelse, child.finalbody):
                    for stmt in part:
                        walk_one(stmt, guarded)
            else:
                walk(child, guarded)

    def walk_one(stmt, guarded: bool):
        walk(ast.Module(body=[stmt], type_ignores=[]), guarded)

    walk(ast.parse(path.read_text(), filename=str(path)), False)
    return out


def test_imports_parse_nested_and_guarded(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os, numpy.linalg\nfrom . import x\ndef f():\n    from PIL import Image\n"
                   "try:\n    import onnx\nexcept ImportError:\n    import json\n")
    assert imports(src) == [("os", False, 1), ("numpy", False, 1), ("PIL", False, 4), ("onnx", True, 6),
                            ("json", False, 8)]


def test_every_import_is_declared():
    required, optional = _declared()
    dists = packages_distributions()
    missing = []
    for path in sorted((ROOT / "scaling").rglob("*.py")):
        for module, guarded, line in imports(path):
            if module in sys.stdlib_module_names or module == "scaling":
                continue
            provided = {_norm(d) for d in dists.get(module, [])}
            allowed = required | optional if guarded else required
            if not provided & allowed:
                where = f"{path.relative_to(ROOT)}:{line}"
                missing.append(f"{where} imports {module} (from {sorted(provided) or 'no installed package'})"
                               + (" outside a guard: declare it in dependencies" if provided & optional else ""))
    assert not missing, "\n".join(missing)


def test_export_needs_only_the_export_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {_requirement_name(r) for r in extras["export"]} == {"onnx", "onnxscript"}
    assert "scaling[export]" in extras["test"]
    assert not {"onnx", "onnxscript"} & {_requirement_name(r) for r in project["dependencies"]}
