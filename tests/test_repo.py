"""The repository's promises about itself: CI runs exactly the README's test command."""

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
