#!/usr/bin/env python3
"""The declared floors of pyproject.toml as pip constraints, so CI tests exactly what it promises.

    python3 .ci/lowest.py                   # name==floor, one a line, for pip install -c FILE
    python3 .ci/lowest.py --check FILE      # each package of FILE installed at exactly that version

Reads ``[project].dependencies`` and the ``parity`` and ``dev`` extras (``--extras`` to change)
and prints ``name==floor`` for each requirement, its floor being its ``>=`` bound. A requirement
without one (``torch==2.13.0``, ``numpy``, ``numpy<3``) is an error: every dependency must say
the lowest version it works with, and that version is what the lowest-versions CI step installs.
The floors are never written anywhere else, so they cannot drift from pyproject.toml. Standard
library only (Python >= 3.11, for tomllib): it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_EXTRAS = ("parity", "dev")

# PEP 508, the subset a pyproject.toml here uses: name, [extras], specifiers, ; marker
REQUIREMENT = re.compile(
    r"""\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*
        (?:\[(?P<extras>[^\]]*)\])?\s*
        \(?(?P<specs>[^;()]*)\)?\s*
        (?:;\s*(?P<marker>.+?))?\s*$""",
    re.X,
)
SPECIFIER = re.compile(r"\s*(~=|===|==|!=|<=|>=|<|>)\s*([^\s,]+)\s*")


class FloorError(ValueError):
    """A requirement pyproject.toml declares without a usable ``>=`` floor."""


def normalize(name: str) -> str:
    """PEP 503: ``Pytest_XDist`` and ``pytest-xdist`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: pathlib.Path, extras=DEFAULT_EXTRAS) -> list[str]:
    """``[project].dependencies`` then each extra's list, as written."""
    project = tomllib.loads(pyproject.read_text())["project"]
    found = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise FloorError(
                f"{pyproject}: no extra {extra!r} in [project.optional-dependencies] "
                f"(it has {sorted(optional)})"
            )
        found += optional[extra]
    return found


def floor(requirement: str) -> tuple[str, str, str | None]:
    """``"numpy>=1.25,<3; python_version<'4'"`` → ``("numpy", "1.25", "python_version<'4'")``."""
    match = REQUIREMENT.fullmatch(requirement)
    if not match:
        raise FloorError(f"{requirement!r}: not a requirement this script can read")
    specs = [s for s in match["specs"].split(",") if s.strip()]
    parsed = [SPECIFIER.fullmatch(s) for s in specs]
    if not all(parsed):
        raise FloorError(f"{requirement!r}: cannot read its version specifiers")
    lows = [m[2] for m in parsed if m[1] == ">="]
    if len(lows) != 1 or "*" in lows[0]:
        raise FloorError(
            f"{requirement!r}: has no floor; declare the lowest version it works "
            "with as NAME>=VERSION"
        )
    return match["name"], lows[0], match["marker"]


def floors(pyproject: pathlib.Path, extras=DEFAULT_EXTRAS) -> list[str]:
    """One ``name==floor`` constraint per package (``; marker`` kept), or FloorError naming
    every requirement without a floor and every package given two different floors."""
    lines, seen, errors = [], {}, []
    for requirement in requirements(pyproject, extras):
        try:
            name, low, marker = floor(requirement)
        except FloorError as e:
            errors.append(str(e))
            continue
        key = (normalize(name), marker)
        if key in seen:
            if seen[key] != low:
                errors.append(f"{name}: two floors, {seen[key]} and {low}")
            continue
        seen[key] = low
        lines.append(f"{name}=={low}" + (f" ; {marker}" if marker else ""))
    if errors:
        raise FloorError(f"{pyproject}:\n  " + "\n  ".join(errors))
    return lines


def same_version(installed: str, pinned: str) -> bool:
    """PEP 440 ``==`` without a local label: ``2.13.0+cpu`` is ``2.13``, ``0.10.0`` is ``0.10``."""

    def key(version: str):
        release, rest = re.fullmatch(r"v?(\d+(?:\.\d+)*)(.*)", version.split("+", 1)[0]).groups()
        parts = [int(p) for p in release.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return parts, rest.lower()

    return key(installed) == key(pinned)


def check(constraints: pathlib.Path) -> list[str]:
    """The packages of a ``name==version`` file that are not installed at that version."""
    wrong = []
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        name, _, want = line.partition("==")
        try:
            have = importlib.metadata.version(name.strip())
        except importlib.metadata.PackageNotFoundError:
            have = None
        ok = have is not None and same_version(have, want.strip())
        print(f"  {name.strip():<16} {want.strip():<12} {'ok' if ok else f'INSTALLED: {have}'}")
        if not ok:
            wrong.append(f"{name.strip()}: wanted {want.strip()}, installed {have}")
    return wrong


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=pathlib.Path, default=ROOT / "pyproject.toml")
    parser.add_argument(
        "--extras",
        default=",".join(DEFAULT_EXTRAS),
        help="comma-separated extras (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        type=pathlib.Path,
        metavar="FILE",
        help="verify the installed versions, print no floors",
    )
    args = parser.parse_args(argv)
    if args.check:
        wrong = check(args.check)
        if wrong:
            print(
                "lowest.py: not installed at the floor:\n  " + "\n  ".join(wrong), file=sys.stderr
            )
            return 1
        return 0
    try:
        lines = floors(args.pyproject, [e for e in args.extras.split(",") if e])
    except FloorError as e:
        print(f"lowest.py: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
