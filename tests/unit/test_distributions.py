"""The four published distributions: every import is declared, pins agree, and no package reaches into another."""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {
    "audit_schemas": ROOT / "schemas",
    "audit_producer": ROOT / "services" / "producer",
    "audit_projector": ROOT / "services" / "audit_projector",
    "audit_query": ROOT / "services" / "query_api",
}
OPTIONAL_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    # modules that may import what only an extra installs (the extras named)
    "audit_schemas": {"cli.py": ("cli",), "postgres.py": ("postgres",)},
    "audit_producer": {
        "cli.py": ("cli", "outbox"),
        "demo.py": ("cli",),
        "outbox.py": ("outbox",),
        "keys.py": ("keys",),
    },
}


def _pyproject(path: Path) -> dict[str, Any]:
    with (path / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _requirements(project: dict[str, Any], *extras: str) -> list[Requirement]:
    meta = project["project"]
    reqs = [Requirement(r) for r in meta.get("dependencies", [])]
    for extra in extras:
        reqs += [Requirement(r) for r in meta.get("optional-dependencies", {}).get(extra, [])]
    return reqs


def _closure(reqs: list[Requirement]) -> set[str]:
    """Names installable from `reqs`, following our own distributions (and their extras) transitively."""
    ours = {_pyproject(p)["project"]["name"]: p for p in PROJECTS.values()}
    names: set[str] = set()
    todo = list(reqs)
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        names.add(name)
        if req.name in ours:
            project = _pyproject(ours[req.name])
            todo += _requirements(project, *req.extras)
    return names


def _imports(path: Path) -> set[str]:
    """Top-level modules imported anywhere in one file (including lazy imports inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(PROJECTS))
def test_every_import_is_declared(package: str) -> None:
    project = _pyproject(PROJECTS[package])
    installed: dict[str, list[str]] = {**packages_distributions()}
    installed |= {m: [_pyproject(p)["project"]["name"]] for m, p in PROJECTS.items()}  # editable: not in the map
    optional = OPTIONAL_MODULES.get(package, {})
    missing = []
    for path in sorted((PROJECTS[package] / package).rglob("*.py")):
        declared = _closure(_requirements(project, *optional.get(path.name, ()))) | {project["project"]["name"]}
        for module in _imports(path):
            if module in sys.stdlib_module_names or module == package:
                continue
            providers = {d.lower().replace("_", "-") for d in installed.get(module, [])}
            if not providers & declared:
                missing.append(f"{path.relative_to(ROOT)} imports {module} ({', '.join(sorted(providers)) or '?'})")
    assert not missing, "\n".join(missing)


def test_the_producer_core_needs_no_web_framework_or_database_driver() -> None:
    core = _closure(_requirements(_pyproject(PROJECTS["audit_producer"])))
    assert not core & {"fastapi", "uvicorn", "starlette", "asyncpg", "typer", "rich", "httpx"}, core


def test_pins_agree_across_distributions() -> None:
    pins: dict[str, set[str]] = {}
    for path in [ROOT, *PROJECTS.values()]:
        project = _pyproject(path)
        meta = project["project"]
        groups = [meta.get("dependencies", []), *meta.get("optional-dependencies", {}).values()]
        for group in groups:
            for raw in group:
                req = Requirement(raw)
                assert str(req.specifier).startswith("=="), f"{path.name}: {raw} is not pinned"
                pins.setdefault(req.name, set()).add(str(req.specifier))
    assert {name: specs for name, specs in pins.items() if len(specs) > 1} == {}


@pytest.mark.parametrize("package", sorted(PROJECTS))
def test_no_package_imports_another_service(package: str) -> None:
    others = set(PROJECTS) - {package, "audit_schemas"}
    for path in (PROJECTS[package] / package).rglob("*.py"):
        assert not _imports(path) & others, path
