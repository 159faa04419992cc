"""The tree's layers, checked: nothing imports upwards.

The gRPC core (``server``) is the bottom; spiff-arena's HTTP dialect (``rest_shim``) sits on it;
the job backends (``jobs``) on both; the connectors use only the core's API; the processes are
assembled in ``connector_proxy``, which nothing imports.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# What each package may import of the project's own packages.
ALLOWED = {
    "server": {"server"},
    "rest_shim": {"server", "rest_shim"},
    "jobs": {"server", "rest_shim", "jobs"},
    "connectors": {"server", "connectors"},
    "connector_proxy": {"server", "rest_shim", "jobs", "connectors", "connector_proxy"},
}


def imported_packages(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_a_layer_above_it(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: packages for path, packages in wrong.items() if packages} == {}


def test_the_layer_check_sees_imports():
    assert imported_packages(ROOT / "connector_proxy" / "_processes.py") >= {"server", "rest_shim", "jobs"}
