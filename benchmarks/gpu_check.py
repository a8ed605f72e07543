"""jaxrnn on an NVIDIA GPU, checked and timed by one script (a few minutes from a checkout).

    python benchmarks/gpu_check.py               # a machine with an NVIDIA GPU
    python benchmarks/gpu_check.py --install     # ... installing jax's CUDA wheels first
    python benchmarks/gpu_check.py --dry-run     # anywhere: the same steps on the CPU, tiny

The steps, each reported as it ends:

1. **device**: jax must see a GPU (``--dry-run``: the CPU). With ``--install`` and no GPU in
   sight, ``pip install "jax[cuda12]"`` at the installed jax version, then the script starts
   again (the machine needs the registry; an image with CUDA jax already needs nothing);
2. **tests**: ``tests/test_cudnn.py`` and the cuDNN layer parity of ``parity/test_layers.py``,
   which run the real cuDNN kernel on a GPU (and are skipped on a CPU);
3. **parity**: ``python -m parity --only layers`` on the device — float64, and float32 at
   ``jax_default_matmul_precision=highest`` (TF32 would miss the 2e-5 bound);
4. **timings**: a train step of each LSTM-bound task model with ``backend="scan"`` and
   ``backend="cudnn"``, and of the dense jit-only models, median ms over ``--steps``;

then one table: the device, the versions, ms per step and the cudnn/scan ratios. Exits
non-zero if a test or a parity check failed (the timings are reported either way).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: the checkout's root on the path
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench import ROWS, jax_step, timed, train_batches, workload  # noqa: E402
from jaxrnn import layers  # noqa: E402

LSTM_ROWS = ("index-recall", "addition-sumlstm", "charlm", "sentiment-lstm")
DENSE_ROWS = ("hihello", "sinusoid", "copy", "addition")
# --dry-run: two LSTM rows and one dense row, the same code paths at sizes a CPU runs at once
TINY = {
    "index-recall": dict(hidden_size=16, n=64),
    "charlm": dict(hidden_size=16, embedding_dim=8, seq_length=20, max_chars=5000),
    "hihello": {},
}


def device_ok(dry_run: bool, install: bool) -> str:
    """The device the checks run on; restarts the script after installing CUDA jax."""
    kind = jax.default_backend()
    if dry_run or kind == "gpu":
        return f"{kind}: {jax.devices()[0].device_kind}"
    if not install:
        raise SystemExit(
            f"jax sees no GPU (backend {kind!r}); run with --install to pip-install "
            "jax's CUDA wheels, or --dry-run to rehearse on the CPU"
        )
    wheel = f"jax[cuda12]=={jax.__version__}"
    print(f"# installing {wheel}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", wheel], check=True)
    os.execv(sys.executable, [sys.executable, *sys.argv, "--no-install"])
    raise AssertionError("unreachable")


def run_step(name: str, command: list[str], env: dict | None = None) -> bool:
    """Run one check as a subprocess from the checkout's root; report it; True if it passed."""
    t0 = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    verdict = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    print(f"## {name}: {verdict} in {time.perf_counter() - t0:.0f} s\n{tail}\n", flush=True)
    return done.returncode == 0


def checks(dry_run: bool) -> dict[str, bool]:
    """Steps 2 and 3: the cuDNN tests and the layer parity on the device (a dry run collects
    the tests and runs the quick LSTM parity rows only)."""
    pytest = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
    parity = [sys.executable, "-m", "parity", "--only", "layers"]
    if dry_run:  # the same commands, cheaply: the tests collected, one parity configuration
        pytest, parity = [*pytest, "--collect-only"], [*parity, "--quick", "-k", "lstm"]
    highest = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    return {
        "cudnn tests": run_step("cuDNN backend tests", [*pytest, "tests/test_cudnn.py"], highest),
        "cudnn parity": run_step(
            "cuDNN layer parity vs torch",
            [*pytest, "parity/test_layers.py", "-k", "cudnn"],
            highest,
        ),
        "layer parity": run_step("layer parity (float64, float32 @ highest)", parity, highest),
    }


@contextlib.contextmanager
def lstm_backend(task_name: str, choice: str):
    """Within the block the task's module builds ``jaxrnn.LSTM(..., backend=choice)``."""
    module = importlib.import_module(f"jaxrnn.tasks.{task_name.replace('-', '_')}")
    original = module.LSTM

    class BackendLSTM(layers.LSTM, kw_only=True):
        backend: str = choice

    module.LSTM = BackendLSTM
    try:
        yield
    finally:
        module.LSTM = original


def step_ms(row, backend: str | None, steps: int, dry_run: bool, tmp: pathlib.Path) -> float:
    """Median ms of one train step of ``row``'s model (``backend``: the LSTMs')."""
    task, config, _ = workload(row, tmp)
    if dry_run:
        config = task.resolve(config.replace(**TINY.get(row.id, {})))
    batches = train_batches(task, config, 4)
    with lstm_backend(row.task, backend) if backend else contextlib.nullcontext():
        run = jax_step(task, task.model(config), config, batches)
        for _ in batches:  # compile every batch shape (bucketed tasks have several)
            run()
        times = timed(run, steps)
    return 1e3 * statistics.median(times)


def timings(steps: int, dry_run: bool) -> list[tuple[str, float, float | None]]:
    """Step 4: ``(row, scan ms, cudnn ms | None)`` for the LSTM rows, then the dense rows."""
    cudnn = "auto" if dry_run else "cudnn"  # no GPU in a dry run: "auto" runs the scan
    rows = {r.id: r for r in ROWS}
    out = []
    with tempfile.TemporaryDirectory(prefix="jaxrnn-gpu-") as tmp:
        for name in [r for r in LSTM_ROWS if not dry_run or r in TINY]:
            scan = step_ms(rows[name], "scan", steps, dry_run, pathlib.Path(tmp))
            fused = step_ms(rows[name], cudnn, steps, dry_run, pathlib.Path(tmp))
            out.append((name, scan, fused))
            print(f"# {name}: scan {scan:.2f} ms, cudnn {fused:.2f} ms", flush=True)
        for name in [r for r in DENSE_ROWS if not dry_run or r in TINY]:
            out.append((name, step_ms(rows[name], None, steps, dry_run, pathlib.Path(tmp)), None))
            print(f"# {name}: {out[-1][1]:.2f} ms", flush=True)
    return out


def versions() -> str:
    import flax

    return (
        f"{platform.machine()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"jaxlib {importlib.metadata.version('jaxlib')}, "
        f"flax {flax.__version__}, numpy {np.__version__}, {time.strftime('%Y-%m-%d')}"
    )


def print_table(device: str, results: dict[str, bool], rows, dry_run: bool) -> None:
    print(f"# jaxrnn GPU check — {device}; {versions()}" + (" (dry run)" if dry_run else ""))
    print("| check | result |\n|---|---|")
    for name, ok in results.items():
        print(f"| {name} | {'pass' if ok else '**FAIL**'} |")
    print("\n| model | scan ms | cudnn ms | scan/cudnn |\n|---|---|---|---|")
    for name, scan, fused in rows:
        ratio = f"**{scan / fused:.2f}**" if fused else "—"
        print(f"| {name} | {scan:.2f} | {'—' if fused is None else f'{fused:.2f}'} | {ratio} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes")
    parser.add_argument("--install", action="store_true", help="pip-install CUDA jax if needed")
    parser.add_argument("--no-install", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model")
    args = parser.parse_args(argv)
    device = device_ok(args.dry_run, args.install and not args.no_install)
    print(f"# device: {device}", flush=True)
    results = checks(args.dry_run)
    rows = timings(args.steps or (3 if args.dry_run else 20), args.dry_run)
    print_table(device, results, rows, args.dry_run)
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
