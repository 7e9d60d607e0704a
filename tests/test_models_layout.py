"""The model layer's shape: modules under 300 lines; no Optuna, Hydra or Dask-scheduler lookup inside
ltv/models (a per-round hook and the cluster are passed in); tests reach ltv through public names only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "ltv").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")])
FORBIDDEN_IMPORTS = ("optuna", "hydra", "omegaconf")
FORBIDDEN_CALLS = ("default_client", "get_client")  # the cluster is passed in (Blocks.on(client))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names]))
    return out


# over 300 lines, in the data / features layer that the data-loading work on main is changing now: split
# there (strict: this test fails once a file is short enough, so the entry goes)
@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_module_over_300_lines(path):
    assert len(path.read_text().splitlines()) <= 300


def test_the_model_layer_looks_up_no_sweep_config_or_cluster():
    found = []
    for path in sorted((ROOT / "ltv" / "models").glob("*.py")):
        tree = _tree(path)
        for module, names in _imports(tree):
            if module.split(".")[0] in FORBIDDEN_IMPORTS or any(n in FORBIDDEN_CALLS for n in names):
                found.append(f"{path.name}: import {module} {names}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute | ast.Name)
                and getattr(node, "attr", getattr(node, "id", "")) in FORBIDDEN_CALLS
            ):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_the_checks_above_can_fail():
    tree = ast.parse("from distributed import default_client\nimport optuna\nclient = default_client()\n")
    assert [m for m, _ in _imports(tree)] == ["distributed", "optuna"]
    assert any(isinstance(n, ast.Name) and n.id == "default_client" for n in ast.walk(tree))


def _private_uses(tree: ast.Module) -> list[str]:
    """``from ltv... import _x``, ``import ltv.x._y`` and ``ltv`` module paths with a private part."""
    out = []
    for module, names in _imports(tree):
        if module.split(".")[0] != "ltv":
            continue
        parts = module.split(".") + names
        out += [f"{module} {names}" for p in parts if p.startswith("_") and p != "__version__"][:1]
    return out


def test_tests_import_only_public_ltv_names():
    found = {p.name: _private_uses(_tree(p)) for p in sorted((ROOT / "tests").rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}
    assert _private_uses(ast.parse("from ltv.models.chain import _seeded\nimport ltv.models._x\n")) == [
        "ltv.models.chain ['_seeded']",
        "ltv.models._x []",
    ]
