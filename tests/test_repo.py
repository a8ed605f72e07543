"""The repository's promises about itself: CI runs exactly the README's test command."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_blocks = [b for b in _readme_commands() if "pytest" in b]
    assert test_blocks, "README.md must show the test command in a ```bash block"
    line = next(ln for ln in test_blocks[0].splitlines() if "pytest" in ln).strip()
    # The README's line creates and activates a venv; CI does that itself, then runs the rest.
    install_and_test = line.split("activate && ")[-1]
    assert "pip install" in install_and_test and install_and_test.endswith("pytest -q"), line
    assert install_and_test in ci, f".ci/run does not run the README's command {line!r}"


# ----------------------------------------------------------------------------- the code's shape

PACKAGE = ROOT / "jaxrnn"

# Dependencies point one way: a module imports only modules of a lower rank. A new module
# must be placed here (the test fails for a module it does not know).
RANK = {
    "files": 0,
    "data": 0,
    "markov": 0,
    "parallel": 0,
    "task": 0,
    "cudnn": 0,
    "embedding": 0,
    "callbacks": 0,
    "distributed": 0,
    "cells": 1,
    "checkpoints": 1,
    "scan": 2,
    "layers": 3,
    "recurrent": 4,
    "interop": 4,
    "engine": 4,
    "runs": 5,
    "verify": 5,
    "nnx": 5,
    "tasks": 6,
    "cli": 7,
    "__init__": 8,
    "__main__": 9,
}
# Imported inside functions only where the dependency is optional or heavy and rarely needed.
LAZY_OK = ("torch", "matplotlib", "tqdm", "tensorboardX", "jax.experimental")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts[0], ast.parse(path.read_text(), str(path))


def _imported(node, package_parts) -> list[str]:
    """The absolute module names an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        return [node.module or ""]
    base = ("jaxrnn", *package_parts)[: len(package_parts) + 2 - node.level]
    if node.module:
        return [".".join((*base, node.module))]
    return [".".join((*base, a.name)) for a in node.names]


def test_the_package_imports_nothing_from_the_test_side():
    for path, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                parts = path.relative_to(PACKAGE).parent.parts
                for name in _imported(node, parts):
                    assert name.split(".")[0] not in ("parity", "tests", "benchmarks"), (
                        f"{path}: imports {name}"
                    )


def test_dependencies_point_one_way():
    for path, module, tree in _modules():
        assert module in RANK, f"jaxrnn/{module}: give the new module a rank in RANK"
        parts = path.relative_to(PACKAGE).parent.parts
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported(node, parts):
                if not name.startswith("jaxrnn."):
                    continue
                target = name.split(".")[1]
                if target == module:  # within the tasks package
                    continue
                assert RANK[target] < RANK[module], (
                    f"{path}: {module} (rank {RANK[module]}) imports {target} "
                    f"(rank {RANK[target]}); dependencies point one way"
                )


def test_imports_are_at_module_level_except_optional_ones():
    for path, _, tree in _modules():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    parts = path.relative_to(PACKAGE).parent.parts
                    for name in _imported(node, parts):
                        assert name.startswith(LAZY_OK), (
                            f"{path}:{node.lineno}: {fn.name} imports {name} inside the function"
                        )


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for path, _, tree in _modules()
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        and fn.end_lineno - fn.lineno + 1 > 80
    ]
    assert not long, long
