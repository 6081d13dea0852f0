"""The architecture's rules, read from the code with `ast`.

Every import counts: module level, inside functions (lazy imports) and under
`TYPE_CHECKING`, because each is a dependency someone must keep working. The
packages `clients/` and `strategies/` are installed as `fedsim.clients` and
`fedsim.strategies` (pyproject.toml), so they are named that way here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"fedsim": ROOT / "fedsim", "fedsim.clients": ROOT / "clients",
            "fedsim.strategies": ROOT / "strategies"}  # fmt: skip

CLIENT_SIDE = ("fedsim.clients",)
# fedsim.rundir is a shared leaf (the audit, the report and the accounting read a run
# directory), but the client side must not write one.
SERVER_SIDE = ("fedsim.engine", "fedsim.rundir", "fedsim.strategies")
ENGINE = ("fedsim.engine",)
CLI = ("fedsim.cli",)

# The fedsim modules the client side may import, each a leaf shared by both sides.
CLIENT_MAY_IMPORT = {
    "fedsim.config": "the scenario each worker trains under",
    "fedsim.data": "data sets, partitions and validation splits the workers load",
    "fedsim.models": "the model a worker builds",
    "fedsim.privacy": "the DP plan (privacy/plan.py) the optimizer must follow",
    "fedsim.seeding": "the one seed derivation shared by server and clients",
    "fedsim.protocol": "the message keys and types both sides speak",
    "fedsim.errors": "the common FedsimError base",
    "fedsim.failures": "how a failure is summarised in a reply (short_reason, outcome_fields)",
    "fedsim.shards": "the per-client shards, built the same way on both sides",
    "fedsim.canaries": "canary records mixed into the shards for the empirical audit",
    "fedsim.registry": "names and import paths resolved the same way on both sides",
}

# Server side and client side never import each other. The modules that join them are
# the composition roots, each with why; nothing else may import both sides.
COMPOSITION_ROOTS = {
    "fedsim.launch": "hands the server the client side (ClientApp, engine probe): fedsim.run",
    "fedsim.flower_app": "module-level ServerApp and ClientApp for `flwr run`",
}

HEAVY = ("torch", "flwr", "ray", "opacus")


def _module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if folder in path.parents or path.parent == folder:
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([package, *parts])
    raise ValueError(f"{path} is in none of {sorted(PACKAGES)}")


def _modules() -> dict[str, Path]:
    found = {}
    for folder in PACKAGES.values():
        for path in sorted(folder.rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports anywhere in its file, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            # `from fedsim.engine import grid` imports the module fedsim.engine.grid.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> set[tuple[str, str]]:
    """(importer, imported module) pairs where a module of `importers` imports one of
    `forbidden`, reported at the level of the imported module (not its names)."""
    modules = _modules()
    bad = set()
    for name, path in modules.items():
        if not _within(name, importers):
            continue
        for imported in _imports(name, path):
            if _within(imported, forbidden):
                # `from fedsim.clients.worker import x` names module fedsim.clients.worker.
                while imported not in modules and "." in imported:
                    imported = imported.rpartition(".")[0]
                bad.add((name, imported))
    return bad


def test_the_scanner_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    source = "def f():\n    from fedsim.engine.grid import x\n    from . import sibling\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = _imports("fedsim.privacy.probe", path)
    assert {"fedsim.engine.grid", "fedsim.privacy.sibling"} <= found


def test_client_side_imports_no_server_side() -> None:
    assert _violations(CLIENT_SIDE, SERVER_SIDE) == set()


def test_client_side_imports_only_shared_leaves_of_fedsim() -> None:
    modules = _modules()
    bad = set()
    for name, path in modules.items():
        if not _within(name, CLIENT_SIDE):
            continue
        for imported in _imports(name, path):
            if imported.startswith("fedsim.") and not _within(imported, CLIENT_SIDE):
                top = ".".join(imported.split(".")[:2])
                if top not in CLIENT_MAY_IMPORT and top in modules:
                    bad.add((name, top))
    assert bad == set()


def test_server_side_imports_no_client_side() -> None:
    assert _violations(SERVER_SIDE, CLIENT_SIDE) == set()


def test_only_the_composition_roots_import_both_sides() -> None:
    modules = _modules()
    both = {
        name
        for name, path in modules.items()
        if not _within(name, CLIENT_SIDE + SERVER_SIDE)
        and any(_within(m, CLIENT_SIDE) for m in _imports(name, path))
        and any(_within(m, SERVER_SIDE) for m in _imports(name, path))
    }
    assert both == set(COMPOSITION_ROOTS)


def test_grid_imports_no_client_module() -> None:
    assert _violations(("fedsim.engine.grid",), CLIENT_SIDE) == set()


def test_privacy_imports_no_engine_cli_or_client() -> None:
    assert _violations(("fedsim.privacy",), ENGINE + CLI + CLIENT_SIDE) == set()


def test_audit_imports_no_client() -> None:
    # The audit reads a run's files alone; a client module would tie it to the workers.
    assert _violations(("fedsim.audit",), CLIENT_SIDE) == set()


def test_data_imports_no_client() -> None:
    assert _violations(("fedsim.data",), CLIENT_SIDE) == set()


def test_config_loads_without_torch_flwr_ray_or_opacus() -> None:
    # A fresh interpreter: the test process itself has torch loaded already.
    probe = (
        f"import sys, fedsim.config\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""


MAX_FUNCTION_LINES = 60

# Functions allowed over MAX_FUNCTION_LINES, each with why; (module path, name).
LONG_FUNCTION_ALLOWED: dict[tuple[str, str], str] = {}


def _long_functions() -> dict[tuple[str, str], int]:
    found = {}
    for folder in PACKAGES.values():
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    # def line to last line, decorators aside, docstring included.
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found[(str(path.relative_to(ROOT)), node.name)] = lines
    return found


def test_no_function_is_over_60_lines_but_the_allowed() -> None:
    long = _long_functions()
    assert {k: v for k, v in long.items() if k not in LONG_FUNCTION_ALLOWED} == {}
    # An allowed function that got short must leave the list.
    assert set(LONG_FUNCTION_ALLOWED) - set(long) == set()
