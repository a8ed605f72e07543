"""The packaging's promises: one version string; a floor on every dependency, which CI's
lowest-versions step installs through ``.ci/lowest.py``; constraints.txt pins within them."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

import jaxrnn

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOWEST = ROOT / ".ci" / "lowest.py"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements() -> list[str]:
    extras = PROJECT["optional-dependencies"]
    return PROJECT["dependencies"] + extras["parity"] + extras["dev"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.match(r"\d+(?:\.\d+)*", version).group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _lowest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LOWEST), *args], capture_output=True, text=True)


def test_version_has_one_source():
    assert "version" in PROJECT and "version" not in PROJECT.get("dynamic", [])
    installed = importlib.metadata.version("jaxrnn")
    assert jaxrnn.__version__ == installed
    assert installed == PROJECT["version"], (
        f"the installed metadata says {installed}, pyproject.toml {PROJECT['version']}: "
        'reinstall (pip install -e ".[dev,parity]" -c constraints.txt)'
    )
    init = (ROOT / "jaxrnn" / "__init__.py").read_text()
    assert PROJECT["version"] not in init, "jaxrnn/__init__.py repeats the version string"


def test_lowest_prints_every_declared_floor():
    done = _lowest()
    assert done.returncode == 0, done.stderr
    pins = dict(line.split("==") for line in done.stdout.split())
    requirements = {_name(r): r for r in _requirements()}
    assert {_name(p) for p in pins} == set(requirements)
    for name, low in pins.items():
        assert f">={low}" in requirements[_name(name)].replace(" ", "")


def test_lowest_rejects_a_requirement_without_a_floor(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\nversion = "1"\n'
        'dependencies = ["jax>=0.5.3", "torch==2.13.0", "numpy", "tqdm<5", "flax>=0.10,<1"]\n'
        "[project.optional-dependencies]\nparity = []\n"
        "dev = [\"pytest >= 7.0 ; python_version >= '3.11'\"]\n"
    )
    done = _lowest("--pyproject", str(pyproject))
    assert done.returncode == 1 and not done.stdout
    for bad in ("'torch==2.13.0': has no floor", "'numpy': has no floor", "'tqdm<5': has no floor"):
        assert bad in done.stderr
    assert "'jax>=0.5.3'" not in done.stderr and "'flax>=0.10,<1'" not in done.stderr
    pyproject.write_text(pyproject.read_text().replace('"torch==2.13.0", "numpy", "tqdm<5", ', ""))
    done = _lowest("--pyproject", str(pyproject))
    assert done.stdout.splitlines() == [
        "jax==0.5.3",
        "flax==0.10",
        "pytest==7.0 ; python_version >= '3.11'",
    ]
    assert "no extra 'docs'" in _lowest("--pyproject", str(pyproject), "--extras", "docs").stderr


def test_lowest_check_compares_installed_versions(tmp_path):
    pins = tmp_path / "floors.txt"
    pytest_version = importlib.metadata.version("pytest")
    pins.write_text(f"pytest=={pytest_version}\n")
    assert _lowest("--check", str(pins)).returncode == 0
    pins.write_text("pytest==0.1\nno-such-package-here==1.0\n")
    done = _lowest("--check", str(pins))
    assert done.returncode == 1
    assert "pytest: wanted 0.1" in done.stderr and "no-such-package-here: wanted 1.0" in done.stderr


def test_constraints_pin_every_dependency_within_its_floor():
    text = (ROOT / "constraints.txt").read_text()
    assert text.startswith("#"), "constraints.txt opens with a comment saying what it is for"
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[_name(name)] = version
    for requirement in _requirements():
        name = _name(requirement)
        if name == "pip":  # never pinned: installing jaxrnn must not downgrade the user's pip
            assert name not in pins
            continue
        low = re.search(r">=\s*([^\s,;]+)", requirement).group(1)
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert _release(pins[name]) >= _release(low), f"{name}=={pins[name]} is below {low}"
    assert pins["jaxlib"] == pins["jax"]


@pytest.mark.parametrize("step", ["lowest.py", "-c constraints.txt && pytest -q"])
def test_ci_runs_the_lowest_versions_then_the_pinned_suite(step):
    ci = (ROOT / ".ci" / "run").read_text()
    assert step in ci
    assert ci.index("lowest.py") < ci.index("-c constraints.txt && pytest -q")
