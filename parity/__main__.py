"""``python -m parity``: the parity report of jaxrnn against torch.nn, as tables.

Three tables: the torch.nn layer configurations (parity/cases.py) against jaxrnn's linen
layers, the same configurations against its NNX layers (jaxrnn.nnx), then the task models (each
jaxrnn task model against its seed's torch model, and charlm's Markov baseline against the
seed's dict version, parity/tasks.py). One row per configuration or model and dtype with the
worst relative error of each check, PASS/FAIL, then the worst error per check per dtype.
Exits 1 if any check fails.

    python -m parity              every case and task model, float64 and float32
    python -m parity --quick      a handful of each
    python -m parity -k lstm-L3   only the rows whose id contains the substring
    python -m parity --only tasks one table (layers | nnx | tasks)
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings

import torch

from . import checks, tasks
from .cases import CASES, DTYPES, QUICK, case_id

COLUMNS = {  # check -> column title
    "out": "out",
    "out_jit": "out·jit",
    "h_n": "h_n",
    "h_n_jit": "h_n·jit",
    "grads": "grads",
    "adam5": "adam×5",
    "roundtrip": "roundtrip",
    "names": "names",
}
NUM_WIDTH = 9


def cell(errors: dict, check: str, dtype: str, passed=checks.passed) -> str:
    """``1.2e-16``, ``0`` for exact zeros, ``ok`` for the names check, ``-`` for a check the
    row does not have; ``!`` marks a failure."""
    if check not in errors:
        return "-"
    err = errors[check]
    ok = passed(err, check, dtype)
    if check == "names":
        text = "ok" if ok else "MISMATCH"
    elif err == 0:
        text = "0"
    elif math.isnan(err):
        text = "NaN"
    else:
        text = f"{err:.1e}"
    return text + ("" if ok else "!")


TASK_COLUMNS = {  # check -> column title, parity/tasks.py
    "out": "out",
    "grads": "grads",
    "adam20": "adam×20",
    "decode": "decode",
    "roundtrip": "roundtrip",
    "names": "names",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a handful of cases and models")
    parser.add_argument(
        "-k",
        metavar="SUBSTRING",
        default="",
        help="only rows whose id (e.g. lstm-L3-bi-tf-bias-lengths+hx-f64, "
        "copy-masked-f32) contains SUBSTRING",
    )
    parser.add_argument(
        "--only",
        choices=("layers", "nnx", "tasks"),
        help="one table: torch.nn layers vs jaxrnn's linen layers, vs its NNX layers, or the "
        "task models",
    )
    args = parser.parse_args(argv)

    runs = [(c, d) for c in (QUICK if args.quick else CASES) for d in DTYPES]
    runs = [(c, d) for c, d in runs if args.k in case_id(c, d)]
    layer_runs = runs if args.only in (None, "layers") else []
    nnx_runs = runs if args.only in (None, "nnx") else []
    entries = [e for e in tasks.ROWS if not args.quick or e.id in tasks.QUICK]
    task_runs = [
        (e, d)
        for e in entries
        for d in DTYPES
        if d in tasks.row_dtypes(e) and args.k in tasks.task_id(e, d)
    ]
    task_runs = task_runs if args.only in (None, "tasks") else []
    if not layer_runs and not nnx_runs and not task_runs:
        print(f"no case matches -k {args.k!r}", file=sys.stderr)
        return 2

    torch.set_num_threads(1)  # tiny tensors: no thread contention with XLA
    warnings.filterwarnings("ignore", "LSTM with projections is not supported")  # torch's
    failed = layer_table(layer_runs) if layer_runs else []
    if nnx_runs:
        if layer_runs:
            print()
        failed += layer_table(nnx_runs, impl="nnx")
    if task_runs:
        if layer_runs or nnx_runs:
            print()
        failed += task_table(task_runs)
    if failed:
        print("FAILED: " + ", ".join(failed))
    return 1 if failed else 0


def layer_table(runs, impl: str = "linen") -> list[str]:
    """The table of torch.nn configurations against jaxrnn's ``impl`` layers (``"linen"`` or
    ``"nnx"``); returns the labels of failed runs."""
    what = "jaxrnn" if impl == "linen" else "jaxrnn.nnx"
    title = (
        f"{what} vs torch {torch.__version__}: max |Δ| / max(1, max|ref|) per tensor; "
        f"tolerance float64 {checks.TOL['float64']:.0e}, float32 "
        f"{checks.TOL['float32']:.0e}; names and roundtrip exact; ! = fails"
    )
    run = functools.partial(checks.run_case, impl=impl)
    label = case_id if impl == "linen" else lambda c, d: f"{case_id(c, d)}-nnx"
    return table(title, "config", "runs", runs, label, run, COLUMNS, checks.passed)


def task_table(runs) -> list[str]:
    """The table of task models (parity/tasks.py): the seed's torch model vs the jaxrnn task
    model; returns the labels of failed runs."""
    title = (
        "jaxrnn task models vs the seeds' torch models (parity/models.py): out = outputs "
        "and loss, grads of the task loss, 20 Adam steps, decode = generation, greedy "
        "or sampled tokens (tokens exact); markov: the seed's dict counts (exact) and "
        "Witten-Bell probabilities vs jaxrnn.markov; same errors and tolerances"
    )
    return table(
        title,
        "task model",
        "task-model runs",
        runs,
        tasks.task_id,
        tasks.run_row,
        TASK_COLUMNS,
        tasks.passed,
    )


def table(title, first, noun, runs, label_of, run, columns, passed) -> list[str]:
    """Run ``run(row, dtype)`` for each of ``runs`` and print a line per run, then the worst
    error per check per dtype; a crash is a failure of every check, reported, not hidden.
    Returns the labels of failed runs."""
    width = max(len(label_of(r, d)) for r, d in runs)
    header = f"{first:<{width}}  " + " ".join(f"{t:>{NUM_WIDTH}}" for t in columns.values())
    print(title)
    print(header + "  result")
    print("-" * (len(header) + 8))
    show = lambda errors, dtype: " ".join(  # noqa: E731
        f"{cell(errors, c, dtype, passed):>{NUM_WIDTH}}" for c in columns
    )
    worst: dict[str, dict[str, float]] = {d: {} for d in DTYPES}  # only checks that ran
    failed = []
    start = time.perf_counter()
    for row, dtype in runs:
        label = label_of(row, dtype)
        try:
            with checks.parity_mode(dtype):
                report = run(row, dtype)
        except Exception as e:
            print(f"{label:<{width}}  raised {type(e).__name__}: {e}")
            failed.append(label)
            worst[dtype].update({c: float("nan") for c in columns})
            continue
        bad = report.failures(dtype)
        print(
            f"{label:<{width}}  {show(report.errors, dtype)}  {'FAIL' if bad else 'PASS'}",
            flush=True,
        )
        if bad:
            failed.append(label)
            where = ", ".join(f"{c} at {report.notes.get(c) or '-'}" for c in bad)
            print(f"{'':<{width}}  ^ worst: {where}")
        for check, err in report.errors.items():
            w = worst[dtype].get(check)
            if w is None or (not math.isnan(w) and (math.isnan(err) or err > w)):
                worst[dtype][check] = err

    print("-" * (len(header) + 8))
    for dtype in DTYPES:
        if any(d == dtype for _, d in runs):
            print(f"{'worst ' + dtype:<{width}}  {show(worst[dtype], dtype)}")
    seconds = time.perf_counter() - start
    print(f"\n{len(runs) - len(failed)} of {len(runs)} {noun} pass ({seconds:.0f} s)")
    return failed


if __name__ == "__main__":
    sys.exit(main())
