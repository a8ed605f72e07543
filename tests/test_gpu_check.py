"""The GPU check's dry run: every step of ``benchmarks/gpu_check.py`` on the CPU, so that the
script a GPU machine runs does not rot where no GPU is."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_its_table():
    pytest.importorskip("torch")  # the parity step compares with torch
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--steps", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "# jaxrnn GPU check — cpu" in out and "(dry run)" in out
    checks = dict(
        re.findall(r"^\| (cudnn tests|cudnn parity|layer parity) \| (\w+) \|$", out, re.M)
    )
    assert checks == {"cudnn tests": "pass", "cudnn parity": "pass", "layer parity": "pass"}
    rows = re.findall(r"^\| ([a-z-]+) \| ([\d.]+) \| ([\d.]+|—) \|", out, re.M)
    assert [r[0] for r in rows] == ["index-recall", "charlm", "hihello"]
    assert all(float(ms) > 0 for _, ms, _ in rows)
