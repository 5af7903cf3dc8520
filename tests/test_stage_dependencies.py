"""Every project module a DVC stage imports is one of that stage's deps in ``dvc.yaml``.

Otherwise editing that module leaves ``dvc repro`` saying "up to date" with stale results. The
imports are read from the source (all of them, also those inside functions), from the stage
script through every project module it reaches.
"""

import ast
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT

SOURCE = PROJECT / "src"
PACKAGE = "credit_risk"


def module_file(name: str) -> Path | None:
    """The source file of project module ``name``, or None if it is not one."""
    base = SOURCE.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules named by the import statements of ``path`` (with their packages)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in found:
            parts = name.split(".")
            if parts[0] == PACKAGE:
                names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return {name for name in names if module_file(name) is not None}


def has_code(path: Path) -> bool:
    """False for a package ``__init__.py`` holding nothing but its docstring."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               for node in body)  # fmt: skip


def project_files_imported_by(script: Path) -> set[str]:
    """Paths (relative to the project) of the project modules ``script`` reaches."""
    seen, todo = set(), imported_modules(script)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= imported_modules(module_file(name))
    files = {module_file(name) for name in seen}
    return {str(path.relative_to(PROJECT)) for path in files if has_code(path)}


STAGES = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_every_project_module_it_imports(stage):
    script = PROJECT / "stages" / f"{stage}.py"
    deps = set(STAGES[stage]["deps"])
    assert f"stages/{stage}.py" in deps
    missing = project_files_imported_by(script) - deps
    assert not missing, f"dvc.yaml: stage {stage!r} imports but does not list {sorted(missing)}"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The register stage imports the model module only when it logs a new run."""
    assert "src/credit_risk/ml/model.py" in project_files_imported_by(
        PROJECT / "stages" / "register.py"
    )
