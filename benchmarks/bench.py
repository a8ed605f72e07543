"""Every task's training step, jaxrnn against the seeds' PyTorch models.

Run from a checkout (it needs the torch twins in ``parity/`` and the ``parity`` extra)::

    python -m benchmarks.bench [ROWS...] [--steps N] [--rounds N] [--to-target]
    python benchmarks/bench.py ...          (the same)

For each task's default model, configuration and batch size (one row per model variant), in
one process and on the same batches:

  jaxrnn     the engine's jitted train step (``engine.make_steps``): loss, gradients, optax update
  autodiff   the same with ``fused_backward=False``: plain autodiff through ``lax.scan``
  flax       the same task model with its jaxrnn layers swapped for stacked
             ``flax.linen.RNN(OptimizedLSTMCell | SimpleCell)`` — what a straightforward Flax
             port runs (input projection inside the loop); "—" where the task has no layer to swap
  torch      the seed's model from ``parity/models.py`` (its Python loops kept), the seed's
             criterion, ``torch.optim.Adam`` (``AdamW`` with weight decay, gradient clipping as
             configured): ``zero_grad, loss.backward(), step()``

Times are medians over ``--steps`` steps per round, the frameworks alternating in each round
(the order reversed every other round), after a warm-up that also measures the compile time.
Ratios > 1 mean jaxrnn is faster. ``GFLOP`` is the matmul work of one jaxrnn step, counted
from its jaxpr (``dot_general`` shapes times scan lengths); ``peak`` is the best of a large
float32 matmul in jax and in torch, measured in the same run, and ``%peak`` is the jaxrnn
step's achieved fraction of it.

torch is only in the ``parity`` extra: ``pip install -e ".[parity]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import math
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # run as a script: the checkout's root on the path, for parity/
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxrnn import data as corpora
from jaxrnn import layers
from jaxrnn.cells import affine, output_of
from jaxrnn.engine import create_state, make_steps, no_fault
from jaxrnn.interop import state_dict_to_params
from jaxrnn.scan import masked_scan
from jaxrnn.task import Task, TaskConfig
from jaxrnn.tasks import get_task


class Row(NamedTuple):
    """A benchmarked model: ``task`` with ``config`` (model-choosing keys only, on top of the
    task's defaults) and the ``parity.tasks.MODELS`` row that holds its torch twin."""

    id: str
    task: str
    parity: str
    config: dict


ROWS = [
    Row("index-recall", "index-recall", "index-recall", {}),
    Row("hihello", "hihello", "hihello-sequence", dict(mode="sequence")),
    Row("hihello-step", "hihello", "hihello-step", dict(mode="step")),
    Row("bitflip", "bitflip", "bitflip-concat", dict(mode="concat")),
    Row("bitflip-sum", "bitflip", "bitflip-sum", dict(mode="sum")),
    Row("sinusoid", "sinusoid", "sinusoid", {}),
    Row("copy", "copy", "copy", dict(variant="copy")),
    Row("copy-masked", "copy", "copy-masked", dict(variant="masked")),
    Row("copy-builtin", "copy", "copy-builtin", dict(variant="variable", cell="builtin")),
    Row("addition", "addition", "addition-seq2seq", dict(model="seq2seq")),
    Row("addition-sumrnn", "addition", "addition-sumrnn", dict(model="sumrnn")),
    Row("addition-sumlstm", "addition", "addition-sumlstm", dict(model="sumlstm")),
    Row("charlm", "charlm", "charlm", {}),
    Row("sentiment", "sentiment", "sentiment-tanh", dict(cell="tanh")),
    Row("sentiment-lstm", "sentiment", "sentiment-lstm", dict(cell="lstm")),
]

# A stand-in corpus when the real one is not in the cache (the bench never fetches): the
# workload's shapes are what matter — alphabet size, window length, review lengths.
STAND_IN_CHARS = 300_000
STAND_IN_REVIEWS = 2_000


# ----------------------------------------------------------------------------- FLOPs, peak


def matmul_flops(jaxpr) -> float:
    """Matmul FLOPs (2·M·N·K per ``dot_general``) of a closed jaxpr, scans times their length.

    Sub-jaxprs (``pjit``, ``custom_vjp``/``custom_jvp`` calls, ``remat``, ``cond`` — its
    most expensive branch) are followed; a ``while`` with an unknown trip count counts once.
    """
    total = 0.0
    for eqn in jaxpr.eqns:
        name, params = eqn.primitive.name, eqn.params
        if name == "dot_general":
            (contract, _), _ = params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
        elif name == "scan":
            total += params["length"] * matmul_flops(params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(matmul_flops(b.jaxpr) for b in params["branches"])
        else:
            for value in params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        total += matmul_flops(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        total += matmul_flops(sub)
    return total


def matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    """The best GFLOP/s of an ``n × n`` float32 matmul, jax and torch, in this process."""
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ja, ta = jnp.asarray(a), torch.from_numpy(a)
    mm = jax.jit(jnp.matmul)
    runs = {"jax": lambda: mm(ja, ja).block_until_ready(), "torch": lambda: ta @ ta}
    best = min(min(timed(run, repeats)) for run in runs.values())
    return 2 * n**3 / best / 1e9


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------------------- data


def workload(row: Row, tmp: pathlib.Path) -> tuple[Task, TaskConfig, str]:
    """The row's task and resolved default config; a stand-in corpus if the real one is not
    cached (``source`` says which)."""
    task = get_task(row.task)
    config = task.Config(**row.config)
    source = "generated"
    corpus_field = {"charlm": "corpus", "sentiment": "dataset"}.get(row.task)
    if corpus_field:
        name = getattr(config, corpus_field)
        if name in corpora.CORPORA and corpora.cached(name):
            source = f"{name} (cached)"
        else:
            path = tmp / ("text.txt" if row.task == "charlm" else "reviews.csv")
            if not path.exists():
                path.write_text(stand_in_text() if row.task == "charlm" else stand_in_reviews())
            config = dataclasses.replace(config, **{corpus_field: str(path)})
            source = f"stand-in for {name}"
    return task, task.resolve(config), source


def stand_in_text() -> str:
    """Random characters over an 81-symbol alphabet (Shakespeare's size), with line breaks."""
    rng = np.random.default_rng(0)
    alphabet = list(
        "\n !&',-.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$[]_()\"*"
    )
    assert len(set(alphabet)) == len(alphabet) == 81
    return "".join(rng.choice(np.array(alphabet), STAND_IN_CHARS))


def stand_in_reviews() -> str:
    """``text,label`` rows of random words, 5–40 words long (Rotten Tomatoes' range)."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(8000)]
    lines = ["text,label"]
    for i in range(STAND_IN_REVIEWS):
        n = int(rng.integers(5, 41))
        lines.append(" ".join(rng.choice(words, n)) + f",{i % 2}")
    return "\n".join(lines) + "\n"


def train_batches(task: Task, config: TaskConfig, n: int) -> list[dict]:
    """``n`` training batches exactly as the engine cuts them (cycled if the epoch is shorter)."""
    split = task.data(config, np.random.default_rng(0))["train"]
    batches = list(task.batches(split, config, np.random.default_rng(1)))
    return [batches[i % len(batches)] for i in range(n)]


# ----------------------------------------------------------------------------- the steps


def jax_step(task: Task, model, config: TaskConfig, batches: list[dict]) -> Callable[[], None]:
    """One engine train step per call, cycling through ``batches``."""
    params = task.init(model, jax.random.key(0), batches[0])
    state = create_state(model, params, config, seed=0)
    train_step = make_steps(task, model, config.compute_dtype).train
    holder, i = [state, no_fault()], [0]

    def run():
        b = batches[i[0] % len(batches)]
        i[0] += 1
        holder[0], metrics, holder[1] = train_step(holder[0], b, holder[1])
        jax.block_until_ready(metrics)

    run.flops = lambda: matmul_flops(
        jax.make_jaxpr(train_step)(*holder[:1], batches[0], holder[1]).jaxpr
    )
    return run


def torch_step(row: Row, config: TaskConfig, batches: list[dict], module=None) -> Callable:
    """``run(batch=None)``: one train step of the seed's torch model on ``batch`` (default:
    the next of ``batches``, converted once). ``module``: the model (default: the parity
    reference, seeded)."""
    import torch

    from parity import tasks as ptasks

    entry = next(e for e in ptasks.MODELS if e.id == row.parity)
    if module is None:
        module = ptasks.torch_reference(entry, config, "float32", np.random.default_rng(0))
    opt_cls = torch.optim.AdamW if config.weight_decay else torch.optim.Adam
    kw = dict(weight_decay=config.weight_decay) if config.weight_decay else {}
    opt = opt_cls(module.parameters(), lr=config.learning_rate, **kw)
    tb = [ptasks.to_torch(b, "float32") for b in batches]
    i = [0]

    def run(b=None):
        if b is None:
            b = tb[i[0] % len(tb)]
            i[0] += 1
        opt.zero_grad(set_to_none=True)
        loss, _ = entry.torch_loss(module, b)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        opt.step()

    return run


# ----------------------------------------------------------------------------- plain Flax


class FlaxStack(nn.Module, kw_only=True):
    """A plain-Flax stand-in for ``jaxrnn.RNN`` / ``LSTM`` (same fields, same call, same
    output shapes): ``num_layers`` × ``nn.RNN(OptimizedLSTMCell | SimpleCell)``, each step
    projecting its input inside the loop, plain autodiff. Timing only: the parameters are
    Flax's own, not torch's."""

    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    input_size: int | None = None
    unroll: int = 1
    fused_backward: bool = True
    dtype: object = None
    param_dtype: object = jnp.float32
    lstm = False

    @nn.compact
    def __call__(self, x, hx=None, *, lengths=None, deterministic: bool = True):
        if self.bidirectional:
            raise NotImplementedError("FlaxStack: bidirectional")
        finals = []
        for layer in range(self.num_layers):
            if self.lstm:
                cell = nn.OptimizedLSTMCell(self.hidden_size)
                init = None if hx is None else (hx[1][layer], hx[0][layer])  # flax: (c, h)
            else:
                act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[self.nonlinearity]
                cell = nn.SimpleCell(self.hidden_size, activation_fn=act)
                init = None if hx is None else hx[layer]
            rnn = nn.RNN(cell, time_major=not self.batch_first, return_carry=True)
            carry, x = rnn(x, initial_carry=init, seq_lengths=lengths)
            finals.append((carry[1], carry[0]) if self.lstm else carry)
            if self.dropout > 0 and layer < self.num_layers - 1:
                x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        h_n = jax.tree.map(lambda *c: jnp.stack(c), *finals)
        return x, h_n


class FlaxLSTMStack(FlaxStack, kw_only=True):
    proj_size: int = 0
    lstm = True


@contextlib.contextmanager
def flax_layers(task_name: str) -> Iterator[bool]:
    """Within the block, the task's module uses :class:`FlaxStack` for ``RNN``/``LSTM``;
    yields whether it had any to swap."""
    module = importlib.import_module(f"jaxrnn.tasks.{task_name.replace('-', '_')}")
    swaps = {n: s for n, s in (("RNN", FlaxStack), ("LSTM", FlaxLSTMStack)) if hasattr(module, n)}
    saved = {n: getattr(module, n) for n in swaps}
    try:
        for name, stand_in in swaps.items():
            setattr(module, name, stand_in)
        yield bool(swaps)
    finally:
        for name, original in saved.items():
            setattr(module, name, original)


@contextlib.contextmanager
def autodiff_layers() -> Iterator[None]:
    """Within the block, jaxrnn layers scan with plain autodiff (``masked_scan`` of the same
    core), as ``fused_backward=False`` does."""

    def plain(core, carry, gx, weight_hh, bias_hh=None, mask=None, *, reverse=False, unroll=1):
        def step(c, g):
            return core.fwd(c, g, affine(output_of(c), weight_hh, bias_hh))[0]

        return masked_scan(step, carry, gx, mask, reverse=reverse, unroll=unroll)

    saved = layers.recurrent_scan
    layers.recurrent_scan = plain
    try:
        yield
    finally:
        layers.recurrent_scan = saved


# ----------------------------------------------------------------------------- the table


class Result(NamedTuple):
    ms: dict[str, float]  # median step time per column
    compile_s: dict[str, float]  # first step (trace + compile + run)
    gflop: float
    source: str
    batch_size: int  # the resolved config's (a preset may set it)


def bench_row(row: Row, steps: int, rounds: int, tmp: pathlib.Path) -> Result:
    task, config, source = workload(row, tmp)
    batches = train_batches(task, config, max(steps, 4))
    runs, compile_s = {}, {}

    def warm(name, make):
        t0 = time.perf_counter()
        run = make()
        run()
        compile_s[name] = time.perf_counter() - t0
        for _ in batches:  # every batch shape (sentiment's buckets) compiles before timing
            run()
        runs[name] = run

    warm("jaxrnn", lambda: jax_step(task, task.model(config), config, batches))
    with autodiff_layers():
        warm("autodiff", lambda: jax_step(task, task.model(config), config, batches))
    # plain flax.linen.RNN cells start from a float32 carry: no column under mixed precision
    with flax_layers(row.task) as swapped:
        if swapped and config.compute_dtype == "float32":
            warm("flax", lambda: jax_step(task, task.model(config), config, batches))
    warm("torch", lambda: torch_step(row, config, batches))
    gflop = runs["jaxrnn"].flops() / 1e9

    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            samples[name] += timed(runs[name], steps)
    ms = {name: 1e3 * statistics.median(s) for name, s in samples.items()}
    return Result(ms, compile_s, gflop, source, config.batch_size)


# ----------------------------------------------------------------------------- time to target


class Target(NamedTuple):
    """Train ``row`` until the per-epoch eval metric ``metric`` (the engine's ``{split}_{name}``
    over the eval split) reaches ``value``, at most ``epochs`` epochs."""

    row: str
    metric: str
    value: float
    epochs: int


TARGETS = [
    Target("index-recall", "test_accuracy", 0.99, 10),
    Target("bitflip", "test_bit_accuracy", 1.0, 20),
    Target("copy", "test_token_accuracy", 0.995, 100),
    Target("sentiment", "valid_accuracy", 0.72, 10),
]


def time_to_target(target: Target, tmp: pathlib.Path) -> dict[str, tuple[float, int | None]]:
    """``{framework: (seconds, epoch)}``: training wall clock from the start (compile
    included, evaluation excluded) until the target epoch; epoch None if not reached;
    ``"compile"``: (jaxrnn's first step, which traces and compiles, None).

    Both frameworks start from the same weights (the torch reference's, converted) and see
    the same batches in the same order — the engine's, ``task.batches`` with its per-epoch
    generators. After each epoch the clock stops and the current weights (torch's converted
    with ``state_dict_to_params``) are scored by the same jitted eval step.
    """
    from parity import tasks as ptasks

    row = next(r for r in ROWS if r.id == target.row)
    entry = next(e for e in ptasks.MODELS if e.id == row.parity)
    out = {}
    task, config, _ = workload(row, tmp)
    data = task.data(config, np.random.default_rng([0, 0]))
    eval_name, _, metric = target.metric.partition("_")
    model = task.model(config)
    like = task.init(model, jax.random.key(0), task.init_batch(data, config))
    module = ptasks.torch_reference(entry, config, "float32", np.random.default_rng(0))
    start = state_dict_to_params(module.state_dict(), like=like)
    steps = make_steps(task, model, config.compute_dtype)

    def score(params) -> float:
        return steps.evaluate(params, task.batches(data[eval_name], config, None))[metric]

    def epochs():
        for epoch in range(target.epochs):
            yield (
                epoch,
                list(task.batches(data["train"], config, np.random.default_rng([0, 1, epoch]))),
            )

    # jaxrnn: the engine's step
    state = create_state(model, start, config, seed=0)
    fault, clock, reached = no_fault(), 0.0, None
    for epoch, batches in epochs():
        t0 = time.perf_counter()
        for b in batches:
            state, metrics, fault = steps.train(state, b, fault)
            if "compile" not in out:
                out["compile"] = (time.perf_counter() - t0, None)
        jax.block_until_ready(state.params)
        clock += time.perf_counter() - t0
        if score(state.params) >= target.value:
            reached = epoch + 1
            break
    out["jaxrnn"] = (clock, reached)

    # torch: the seed's model, criterion and optimiser
    run = torch_step(row, config, [], module=module)
    clock, reached = 0.0, None
    for epoch, batches in epochs():
        t0 = time.perf_counter()
        for b in batches:
            run(ptasks.to_torch(b, "float32"))
        clock += time.perf_counter() - t0
        params = state_dict_to_params(module.state_dict(), like=like)
        if score(params) >= target.value:
            reached = epoch + 1
            break
    out["torch"] = (clock, reached)
    return out


def versions() -> str:
    import flax
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} ({jax.default_backend()}), flax {flax.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{time.strftime('%Y-%m-%d')}"
    )


def main(
    only: list[str] | None = None,
    steps: int = 10,
    rounds: int = 3,
    to_target: bool = False,
    compute_dtype: str = "float32",
) -> int:
    try:
        import parity.tasks  # noqa: F401  (torch and the reference models)
    except ImportError as e:
        raise SystemExit(f'the benchmark needs torch: pip install -e ".[parity]" ({e})') from e
    rows = [r for r in ROWS if not only or r.id in only or r.task in only]
    if not rows:
        raise SystemExit(f"bench: no row matches {only}; rows: {', '.join(r.id for r in ROWS)}")
    if compute_dtype != "float32":  # jaxrnn's columns in mixed precision; torch stays float32
        rows = [r._replace(config={**r.config, "compute_dtype": compute_dtype}) for r in rows]
    with tempfile.TemporaryDirectory(prefix="jaxrnn-bench-") as tmp:
        if to_target:
            print_targets([t for t in TARGETS if t.row in {r.id for r in rows}], pathlib.Path(tmp))
        else:
            print_steps(rows, steps, rounds, pathlib.Path(tmp))
    return 0


def print_header(header: str) -> None:
    """A markdown table's header row and its rule."""
    print(header)
    print("|---" * (header.count("|") - 1) + "|", flush=True)


def print_steps(rows: list[Row], steps: int, rounds: int, tmp: pathlib.Path) -> None:
    peak = matmul_peak()
    print(f"# jaxrnn bench — train step per batch, median ms; {versions()}")
    print(
        f"# float32 matmul peak (1024², best of jax/torch): {peak:.0f} GFLOP/s; "
        f"{steps} steps x {rounds} rounds per column"
    )
    header = (
        "| model | batch | jaxrnn ms | autodiff ms | flax ms | torch ms | torch/jaxrnn "
        "| flax/jaxrnn | GFLOP | %peak | compile s | data |"
    )
    print_header(header)
    for row in rows:
        r = bench_row(row, steps, rounds, tmp)
        ms = r.ms
        fmt = lambda k: f"{ms[k]:.2f}" if k in ms else "—"  # noqa: E731
        flax_ratio = f"{ms['flax'] / ms['jaxrnn']:.2f}" if "flax" in ms else "—"
        achieved = r.gflop / (ms["jaxrnn"] / 1e3) / peak
        print(
            f"| {row.id} | {r.batch_size} | {fmt('jaxrnn')} | {fmt('autodiff')} "
            f"| {fmt('flax')} | {fmt('torch')} | **{ms['torch'] / ms['jaxrnn']:.2f}** "
            f"| {flax_ratio} | {r.gflop:.3g} | {100 * achieved:.1f} "
            f"| {r.compile_s['jaxrnn']:.1f} | {r.source} |",
            flush=True,
        )


def print_targets(targets: list[Target], tmp: pathlib.Path) -> None:
    print(
        f"# jaxrnn bench --to-target — training wall clock to the target (compile included, "
        f"evaluation excluded), same start weights and batches; {versions()}"
    )
    header = (
        "| model | target | jaxrnn s (epoch) | of which compile s | torch s (epoch) "
        "| torch/jaxrnn |"
    )
    print_header(header)
    for target in targets:
        r = time_to_target(target, tmp)
        cell = lambda k: f"{r[k][0]:.1f} ({r[k][1] or f'not in {target.epochs}'})"  # noqa: E731
        ratio = r["torch"][0] / r["jaxrnn"][0] if r["torch"][1] and r["jaxrnn"][1] else None
        print(
            f"| {target.row} | {target.metric} ≥ {target.value} | {cell('jaxrnn')} "
            f"| {r['compile'][0]:.1f} | {cell('torch')} "
            f"| {'—' if ratio is None else f'**{ratio:.2f}**'} |",
            flush=True,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="time every task's train step against its torch twin (needs the parity extra)",
    )
    parser.add_argument("rows", nargs="*", help="row ids or task names (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and column")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds (the column order alternates)"
    )
    parser.add_argument(
        "--compute-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="the jax columns' train-step dtype (torch stays float32)",
    )
    parser.add_argument(
        "--to-target",
        action="store_true",
        help="instead: wall clock to each task's target, jaxrnn vs its torch twin",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(
        main(
            args.rows,
            steps=args.steps,
            rounds=args.rounds,
            to_target=args.to_target,
            compute_dtype=args.compute_dtype,
        )
    )
