"""Forward+backward time of jaxrnn.LSTM vs torch.nn.LSTM vs Flax nn.RNN(OptimizedLSTMCell).

All three are measured in one process, alternating which framework runs first in each round,
and reported as medians and ratios (torch time / jaxrnn time: > 1 means jaxrnn is faster).
Before each timed phase the script waits for the machine to be idle (1-minute load average),
because another process on one of the 2 vCPUs slows torch's OpenMP threads by far more than
the differences measured here.

    python benchmarks/bench_lstm.py            # B=32, T=100, H in {128, 512}, 1 and 2 layers
    python benchmarks/bench_lstm.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: the checkout's root on the path
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jaxrnn
from benchmarks.bench import timed


def wait_idle(max_load: float = 0.6, timeout: float = 60.0) -> float:
    """Wait (up to ``timeout`` s) for the 1-minute load average to drop below ``max_load``."""
    start = time.time()
    while os.getloadavg()[0] > max_load and time.time() - start < timeout:
        time.sleep(2.0)
    return os.getloadavg()[0]


class FlaxLSTM(nn.Module):
    """The plain-Flax baseline: stacked ``nn.RNN(nn.OptimizedLSTMCell)``, time-major."""

    hidden_size: int
    num_layers: int

    @nn.compact
    def __call__(self, x):  # [T, B, I]
        for _ in range(self.num_layers):
            x = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size), time_major=True)(x)
        return x


def jax_step(module, x):
    variables = module.init(jax.random.key(0), x)

    def loss(params, x):
        out = module.apply({"params": params}, x)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.mean(out**2)

    grad = jax.jit(jax.value_and_grad(loss))
    params = variables["params"]

    def run():
        value, g = grad(params, x)
        jax.block_until_ready(g)

    return run


def torch_step(lstm, x):
    def run():
        lstm.zero_grad(set_to_none=True)
        out, _ = lstm(x)
        (out**2).mean().backward()

    return run


def bench(B: int, T: int, H: int, L: int, repeats: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((T, B, H)).astype(np.float32)
    x = jnp.asarray(x_np)
    t_lstm = torch.nn.LSTM(H, H, num_layers=L)
    fns = {
        "jaxrnn": jax_step(jaxrnn.LSTM(hidden_size=H, num_layers=L), x),
        "flax": jax_step(FlaxLSTM(H, L), x),
        "torch": torch_step(t_lstm, torch.from_numpy(x_np)),
    }
    compile_s = {}
    for name, fn in fns.items():  # warm-up (compiles the jax functions)
        t0 = time.perf_counter()
        fn()
        compile_s[name] = time.perf_counter() - t0
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        wait_idle()
        for name in order if r % 2 == 0 else order[::-1]:
            samples[name] += timed(fns[name], repeats)
    return {name: (statistics.median(s), min(s), max(s)) for name, s in samples.items()} | {
        "compile": compile_s
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time", type=int, default=100)
    args = parser.parse_args(argv)
    repeats, rounds = (3, 2) if args.quick else (10, 4)

    print(f"# LSTM forward+backward, B={args.batch}, T={args.time}, float32, input size = H")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, flax {__import__('flax').__version__}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d')}"
    )
    header = (
        "| H | layers | jaxrnn ms | flax nn.RNN ms | torch ms | torch/jaxrnn | flax/jaxrnn "
        "| jaxrnn compile s |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for H in (128, 512):
        for L in (1, 2):
            r = bench(args.batch, args.time, H, L, repeats, rounds)
            j, f, t = r["jaxrnn"][0], r["flax"][0], r["torch"][0]
            print(
                f"| {H} | {L} | {j * 1e3:.1f} | {f * 1e3:.1f} | {t * 1e3:.1f} | "
                f"{t / j:.2f} | {f / j:.2f} | {r['compile']['jaxrnn']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
