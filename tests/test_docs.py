"""The documentation stands alone: README.md and docs/*.md name nothing outside the repository
(no planning files, no sibling folders, no issue numbers, no work sessions), and every file path
they name exists. The code does not point at the planning files either."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Built from parts so that this file does not contain what it forbids.
PLANNING = ("DESIGN" + ".md", "TASKS" + ".md")
FORBIDDEN = [
    (re.escape(name), f"names {name}, which is not in the repository") for name in PLANNING
] + [
    (r"\.\./", "points outside the repository (../)"),
    (r"\bshared/", "points at a shared/ folder outside the repository"),
    (r"\bissues? #?\d", "cites an issue number"),
    (r"\bsessions?\b", 'mentions a "session"'),
]
CODE_DIRS = ("jaxrnn", "parity", "tests", "examples", "benchmarks")
PATH_SUFFIXES = (".py", ".md", ".toml", ".txt")


def doc_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def forbidden_mentions(text: str) -> list[str]:
    """``line N: why: the line`` for each line that names something outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            if re.search(pattern, line, flags=re.IGNORECASE):
                found.append(f"line {number}: {why}: {line.strip()}")
    return found


def named_paths(text: str) -> set[str]:
    """Repository paths a markdown file names: relative link targets ``[..](path)``, and the
    words of inline code that contain a ``/`` and end in .py/.md/.toml/.txt
    (``benchmarks/bench.py``, also inside a command: ``python examples/sinusoid.py``)."""
    paths = set()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # not a URL, not an anchor
            paths.add(target.split("#")[0])
    for code in re.findall(r"`([^`\n]+)`", text):
        for word in code.split():
            if "/" in word and word.endswith(PATH_SUFFIXES) and not re.search(r"[{}*$~]", word):
                paths.add(word)
    return {p for p in paths if p}


def missing_paths(doc: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """Named paths that exist neither relative to the repository root nor to the document."""
    return sorted(
        p
        for p in named_paths(doc.read_text())
        if not (root / p).exists() and not (doc.parent / p).exists()
    )


def planning_mentions(root: pathlib.Path = ROOT) -> list[str]:
    """``path:line`` of every .py file in the code folders that names a planning file."""
    found = []
    for folder in CODE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if any(name in line for name in PLANNING):
                    found.append(f"{path.relative_to(root)}:{number}")
    return found


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_nothing_outside_the_repository(doc):
    assert doc.exists(), doc
    problems = forbidden_mentions(doc.read_text())
    assert not problems, f"{doc.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_name_exists(doc):
    missing = missing_paths(doc)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_there_are_docs():
    assert (ROOT / "docs").is_dir() and len(doc_files()) > 1


def test_code_does_not_cite_planning_files():
    found = planning_mentions()
    assert not found, f"these lines cite {' / '.join(PLANNING)}: {found}"


# --- the checks can fail


def test_checks_catch_planted_violations(tmp_path):
    text = (
        "See DESIGN" + ".md and ../shared/notes.txt; issue 6 has the numbers from this session.\n"
        "Run `python benchmarks/nope.py --x`, read [the notes](docs/nope.md), keep "
        "`jaxrnn/cells.py` and [a site](https://example.com/a.md).\n"
    )
    problems = "\n".join(forbidden_mentions(text))
    for why in ("DESIGN", "../", "shared/", "issue number", "session"):
        assert why in problems, (why, problems)
    assert forbidden_mentions("A [link](https://example.com/issues/6) and a ## heading.") == []

    (tmp_path / "jaxrnn").mkdir()
    (tmp_path / "jaxrnn" / "cells.py").write_text("")
    (tmp_path / "README.md").write_text(text)
    assert missing_paths(tmp_path / "README.md", tmp_path) == ["benchmarks/nope.py", "docs/nope.md"]

    for folder in CODE_DIRS:
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "parity" / "x.py").write_text('"""As TASKS' + '.md says."""\n')
    assert planning_mentions(tmp_path) == ["parity/x.py:1"]
