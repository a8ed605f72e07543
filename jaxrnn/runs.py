"""A run: ``fit`` trains a task, evaluates it as it goes, checkpoints, resumes, writes outputs.

``fit(task, config, seed=..., out_dir=...)`` builds the data, the model and its compiled
:class:`~jaxrnn.engine.Steps`, then trains with a tqdm bar, evaluating after each epoch (and
every ``eval_every`` steps if asked), and writes to ``out_dir``:

* ``metrics.jsonl`` one JSON line per evaluation, appended and flushed as the run goes;
* ``metrics.json``  ``{"task", "config", "history", "final", "seconds"}`` at the end, where
  ``seconds`` splits the wall clock into compiling, training and evaluating;
* ``loss.png``      the loss curve, plus each task's own pictures;
* ``checkpoint.msgpack``  params, optimiser state, step, history, seed and the effective
  config, with a sha256 of its contents, written atomically (temp file, fsync, rename) after
  every evaluation; a truncated, damaged or foreign file is refused naming it;
* ``best.msgpack``  for a task that selects (``Task.select``, e.g. ``"valid_accuracy"``): the
  best evaluation's params, written atomically when an evaluation improves on it. The
  checkpoint holds a copy too, so a resumed run keeps its best-so-far; the final
  ``evaluate`` uses them.

A directory that holds a run is never written over unasked: ``resume=True`` continues it,
``overwrite=True`` replaces it, and without either ``fit`` raises :class:`RunExistsError`.

Each evaluation uses ``data["valid"]`` if the task has that split, else ``"test"``, else
``"train"``; the task's ``batches`` hook cuts every split into batches.

Randomness flows from one seed: the data from ``np.random.default_rng([seed, 0])``, the init
from ``PRNGKey(seed)``, each epoch's shuffle from ``default_rng([seed, 1, epoch])`` and each
step's key from ``fold_in(key, step)``. So ``resume=True`` continues bit-identically — from
an epoch's end or, with ``eval_every``, from within an epoch: the next step sees the same
batch, key and state as in the uninterrupted run. A resume may change ``epochs`` and
``learning_rate`` (:data:`RESUMABLE`), nothing else.

Several processes (``distributed=``, :mod:`jaxrnn.distributed`): every process runs ``fit``
alike on the same global batches; process 0 alone writes the files above, shows the bar and
calls the callbacks, and every process waits at each evaluation until its checkpoint is on
disk (:func:`~jaxrnn.distributed.agree`, which also raises one process's error on all).

Numerical faults: the jitted step applies no update when the loss or any gradient is
non-finite, nor at any later step, and records the first such step on device; the host reads
it once per evaluation and raises :class:`NonFiniteError` naming the step. Nothing is then
checkpointed, so the last good checkpoint stays on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import parallel
from .callbacks import METRICS_LOG, Callback, MetricsLog, jsonable
from .checkpoints import (
    BEST,
    CHECKPOINT,
    read_checkpoint,
    restore_into,
    save_checkpoint,
    save_params,
)
from .distributed import (
    Distributed,
    agree,
    check_same,
    initialize,
    is_writer,
    may_cache_compilations,
    reports_lost_peers,
)
from .engine import (
    NO_FAULT,
    Steps,
    TrainState,
    check_config,
    compile_seconds,
    create_state,
    enable_compilation_cache,
    make_steps,
    no_fault,
    stack_batches,
)
from .files import save_figure
from .interop import state_dict_to_params
from .task import Batch, Dataset, Task, TaskConfig

RESUMABLE = ("epochs", "learning_rate")  # the config keys a resume may change


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN or infinite at training step ``step`` (1-based, as
    the history's ``step``) of epoch ``epoch``; no update was applied from that step on.

    ``checkpoint`` is the last good checkpoint file (None if none was written):
    ``fit(..., resume=True)`` with a lower ``learning_rate`` continues from it.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        epoch: int,
        out_dir=None,
        checkpoint=None,
        learning_rate: float | None = None,
    ):
        super().__init__(message)
        self.step, self.epoch = step, epoch
        self.out_dir, self.checkpoint, self.learning_rate = out_dir, checkpoint, learning_rate


@dataclasses.dataclass
class Best:
    """The best evaluation so far by ``metric`` (a history key): its epoch (a fraction for one
    mid-epoch), step, value and params (on the host)."""

    metric: str
    mode: str  # "max" or "min"
    epoch: int | float | None = None
    value: float | None = None
    step: int | None = None
    params: Any = None

    def improves(self, value: float) -> bool:
        """Strictly better than the best so far (ties keep the earlier epoch; NaN never wins)."""
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(self, row: dict, params) -> bool:
        """Take the evaluation ``row`` (and a host copy of ``params``) if it improves."""
        if self.metric not in row:
            raise ValueError(
                f"select={self.metric!r} is not a history key; the keys are {', '.join(row)}"
            )
        if not self.improves(row[self.metric]):
            return False
        self.epoch, self.step, self.value = row["epoch"], row["step"], row[self.metric]
        self.params = jax.tree.map(np.array, params)
        return True

    def meta(self) -> dict:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "epoch": self.epoch,
            "step": self.step,
            "value": self.value,
        }


def selection(task: Task) -> Best | None:
    """A fresh :class:`Best` for a task that selects its model on a history key, else None."""
    if task.select is None:
        return None
    if task.select_mode not in ("max", "min"):
        raise ValueError(
            f"{type(task).__name__}.select_mode must be 'max' or 'min', got {task.select_mode!r}"
        )
    return Best(task.select, task.select_mode)


@dataclasses.dataclass
class Run:
    """What a run carries from evaluation to evaluation: the train state, the history, the
    best evaluation, how far it is (``epoch`` epochs and ``batch`` batches of the next one)
    and the checkpoint on disk."""

    task: Task
    config: TaskConfig
    seed: int
    out: pathlib.Path | None
    state: TrainState
    history: list[dict]
    best: Best | None
    epoch: int = 0  # epochs done
    batch: int = 0  # batches done of epoch ``epoch`` (a run evaluated mid-epoch)
    saved: str | None = None  # how far the checkpoint on disk is ("epoch 2.5, step 40")

    def progress(self, n_batches: int) -> int | float:
        """Epochs done: an int at an epoch's end, else a fraction (``2.25``)."""
        return self.epoch if not self.batch else round(self.epoch + self.batch / n_batches, 4)

    def position(self) -> str:
        """Where the run is, in words: ``"epoch 1"`` or ``"epoch 2, batch 5 of the next"``."""
        if not self.batch:
            return f"epoch {self.epoch}"
        return f"epoch {self.epoch} and {self.batch} batches of the next"

    def meta(self) -> dict:
        """The checkpoint's meta at this point of the run."""
        meta = {
            "task": self.task.name,
            "config": dataclasses.asdict(self.config),
            "seed": self.seed,
            "epoch": self.epoch,
            "batch": self.batch,
            "history": self.history,
        }
        if self.best is not None:
            meta["best"] = self.best.meta()
        return meta


@dataclasses.dataclass
class Result:
    state: TrainState
    history: list[dict]
    final: dict
    model: Any
    data: dict
    best: Best | None = None  # the selected evaluation of a task with ``select``
    steps: Steps | None = None  # the compiled steps (for evaluating ``state.params`` again)
    seconds: dict | None = None  # compile / train / eval / total wall seconds of this call


class RunExistsError(FileExistsError):
    """``out_dir`` already holds a run; ``fit`` neither continues nor replaces it unasked."""

    def __init__(self, path: pathlib.Path, found: list[str], hint: str = ""):
        hint = hint or "pass resume=True to continue it or overwrite=True to replace it"
        super().__init__(f"{path} already holds a run ({', '.join(found)}): {hint}")
        self.path, self.found = path, found


@reports_lost_peers()  # a collective whose peer died: PeerLostError naming it
def fit(
    task: Task,
    config: TaskConfig | None = None,
    *,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_epochs: int | None = None,
    eval_every: int | None = None,
    callbacks: Sequence[Callback] = (),
    init_state_dict=None,
    devices: int | None = None,
    compilation_cache: str | os.PathLike | None = None,
    distributed: Distributed | bool | None = None,
) -> Result:
    """Train ``task`` with ``config`` (default: the task's) and evaluate it.

    Args:
      out_dir: where the run's files go (see the module docs); None writes nothing. A
        directory that already holds a run is refused (:class:`RunExistsError`) unless
        ``resume`` (continue from its checkpoint: same task, seed and config but for
        :data:`RESUMABLE`) or ``overwrite`` (delete its run files and start again).
      max_epochs: stop after that many epochs of this call (the run can be resumed).
      eval_every: also evaluate (and checkpoint, and select the best) every that many
        steps, not only at each epoch's end; a run stopped mid-epoch resumes there.
      callbacks: :class:`~jaxrnn.callbacks.Callback` objects (``metrics.jsonl`` is always
        written when there is an ``out_dir``).
      init_state_dict: a torch-named ``{name: array}`` (e.g. a torch model's
        ``state_dict()``) replacing the initial params, matched by name.
      devices: train data-parallel on that many devices (:mod:`jaxrnn.parallel`).
      compilation_cache: a directory for JAX's persistent compilation cache (process-wide):
        a second run of the same model loads its compiled steps instead of compiling them.
      distributed: train as one of several processes: a
        :class:`~jaxrnn.distributed.Distributed` or True (jax's cluster auto-detection),
        before jax computes anything. Every process calls ``fit`` alike; process 0 alone
        writes, shows the bar and calls ``callbacks`` (see the module docs).

    A task with ``select`` is evaluated with its best evaluation's params
    (``final["best_epoch"]``); ``Result.state`` is the last step's.
    """
    clock = Clock()
    config = checked_config(task, config)
    initialize(distributed)  # jax.distributed, before jax computes anything
    with agree("setting up the run"):  # every process gets past it, or every one raises
        out = prepare_out_dir(out_dir, resume=resume, overwrite=overwrite)
        if compilation_cache is not None and may_cache_compilations():
            enable_compilation_cache(compilation_cache)
        data = make_data(task, config, seed)
        steps = make_steps(task, task.model(config), config.compute_dtype)
        run = start_run(steps, config, data, seed, out, resume, init_state_dict)
    multi = jax.process_count() > 1  # the mesh spans every process's devices
    mesh = parallel.data_mesh(devices) if devices is not None or multi else None
    run.state = replicate_state(run.state, mesh)
    listeners, progress = start_listeners(run, callbacks), progress and is_writer()
    reports = StepReports(listeners)
    last = config.epochs if max_epochs is None else min(config.epochs, run.epoch + max_epochs)
    with tqdm(desc=task.name, disable=not progress, unit="step", dynamic_ncols=True) as bar:
        while run.epoch < last:
            batches = epoch_batches(task, data["train"], config, seed, run.epoch)
            show_total(bar, config.epochs, run, len(batches))
            for n in chunk_sizes(run.batch, len(batches), int(run.state.step), eval_every):
                chunk = batches[run.batch : run.batch + n]
                with clock.phase("train"):
                    metrics = train_steps(steps, run, chunk, len(batches), mesh, bar, reports)
                advance(run, n, len(batches))
                with clock.phase("eval"):
                    row = evaluate_now(steps, run, data, metrics, len(batches), clock.elapsed())
                with agree(f"recording {run.position()}"):  # none runs ahead of a checkpoint
                    record(steps, run, data, row, bar, listeners, progress and not run.batch)
    result = finish(steps, run, data, clock, complete=run.epoch == config.epochs)
    with agree("ending the run"):
        for callback in listeners:
            callback.on_end(result)
    return result


def checked_config(task: Task, config: TaskConfig | None) -> TaskConfig:
    """``config`` (default: the task's) resolved and checked, before any data is built."""
    config = config or task.Config()
    if not isinstance(config, task.Config):
        raise TypeError(
            f"config must be a {task.Config.__name__} (task {task.name!r}), got "
            f"{type(config).__name__}"
        )
    config = task.resolve(config)
    check_config(config)
    return config


RUN_FILES = (CHECKPOINT, BEST, "metrics.json", METRICS_LOG, "loss.png")


def prepare_out_dir(out_dir, *, resume: bool, overwrite: bool) -> pathlib.Path | None:
    """``out_dir`` as a path, after the rule that keeps a finished run: a directory holding
    one of :data:`RUN_FILES` needs ``resume`` or ``overwrite``; ``overwrite`` deletes them."""
    if resume and overwrite:
        raise ValueError(
            "resume=True continues the run in out_dir, overwrite=True replaces it: pass one of them"
        )
    if out_dir is None:
        if resume:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        return None
    out = pathlib.Path(out_dir)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not (resume or overwrite):
        raise RunExistsError(out, found)
    if overwrite and is_writer():  # in a multi-process run, process 0 alone deletes
        for name in found:
            (out / name).unlink()
    return out


def make_data(task: Task, config: TaskConfig, seed: int) -> Dataset:
    """The task's data for ``seed``, with its splits and contents checked."""
    data = task.data(config, np.random.default_rng([seed, 0]))
    check_splits(task, data)
    task.check_data(data, config)
    return data


def start_run(steps: Steps, config, data, seed, out, resume: bool, init_state_dict) -> Run:
    """The run at its first step: fresh params (or ``init_state_dict``'s), or — with
    ``resume`` — the state, history and best evaluation of ``out``'s checkpoint."""
    task = steps.task
    params = task.init(steps.model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    if init_state_dict is not None:
        if resume:
            raise ValueError(
                "init_state_dict and resume=True exclude each other: a resumed "
                "run continues from its checkpoint"
            )
        params = state_dict_to_params(init_state_dict, like=params)
    state = create_state(steps.model, params, config, seed)
    run = Run(task, config, seed, out, state, history=[], best=selection(task))
    if resume:
        resume_from_checkpoint(run, params)
    return run


def resume_from_checkpoint(run: Run, params) -> None:
    """Load ``run.out``'s checkpoint into ``run`` (``params``: the structure to restore into)."""
    path = run.out / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"resume=True: no checkpoint in out_dir={run.out}")
    payload, meta = read_checkpoint(path)
    check_resumable(run.task, run.config, run.seed, meta, path)
    if meta["epoch"] > run.config.epochs:
        raise ValueError(
            f"resume=True: the checkpoint in {run.out} is at epoch "
            f"{meta['epoch']}, beyond epochs={run.config.epochs}"
        )
    state = restore_into(run.state, payload["state"], path, meta)
    run.state = state.replace(step=int(state.step))  # a Python int, as in create: no retrace
    run.history, run.epoch, run.batch = meta["history"], meta["epoch"], meta.get("batch", 0)
    run.saved = run.position()
    best = run.best
    if best is not None and meta.get("best", {}).get("epoch") is not None:
        best.epoch, best.value = meta["best"]["epoch"], meta["best"]["value"]
        best.step = meta["best"].get("step")
        best.params = restore_into(params, payload["best"], path, meta)


def start_listeners(run: Run, callbacks: Sequence[Callback]) -> list[Callback]:
    """``metrics.jsonl``'s writer (with an ``out_dir``) and ``callbacks``, started; none but
    on process 0 of a multi-process run, which writes for all."""
    listeners = ([MetricsLog(run.out)] if run.out is not None else []) + list(callbacks)
    listeners = listeners if is_writer() else []
    with agree("starting the run's outputs"):
        for callback in listeners:
            callback.on_start(run)
    return listeners


def replicate_state(state: TrainState, mesh) -> TrainState:
    """The train state replicated over ``mesh``'s devices (as is without a mesh), its step
    too: the step's output then has its input's sharding, and the next call no recompile.
    Across processes it must be the same on each (checked: a ValueError on every one)."""
    if mesh is None:
        return state
    parts = {"params": state.params, "opt_state": state.opt_state, "key": state.key}
    check_same(parts, "the train state")
    return state.replace(**parallel.replicate({**parts, "step": state.step}, mesh))


def epoch_batches(task: Task, split: Batch, config, seed: int, epoch: int) -> list[Batch]:
    """Epoch ``epoch``'s training batches, shuffled by ``default_rng([seed, 1, epoch])``."""
    batches = list(task.batches(split, config, np.random.default_rng([seed, 1, epoch])))
    if not batches:
        raise ValueError(
            f"{task.name}: no training batches; the train split has "
            f"{_size(split)} examples, batch_size={config.batch_size}"
        )
    return batches


def chunk_sizes(done: int, total: int, step: int, eval_every: int | None) -> list[int]:
    """How many of an epoch's ``total`` batches to train between evaluations, from batch
    ``done`` at global ``step``: up to every multiple of ``eval_every`` and the epoch's end."""
    if eval_every is not None and (isinstance(eval_every, bool) or eval_every < 1):
        raise ValueError(f"eval_every must be None or an int >= 1 (steps), got {eval_every!r}")
    sizes = []
    while done < total:
        n = total - done
        if eval_every:
            n = min(n, eval_every - step % eval_every)
        sizes.append(n)
        done, step = done + n, step + n
    return sizes


def show_total(bar, epochs: int, run: Run, n_batches: int) -> None:
    """Give the progress bar its total once the first epoch is cut into batches."""
    if bar.total is None:
        bar.total = epochs * n_batches
        bar.initial = bar.n = bar.last_print_n = run.epoch * n_batches + run.batch
        bar.refresh()


class StepReports:
    """Feeds each callback with ``every > 0`` its ``on_steps``: the mean training metrics of
    the steps since its last call, at every multiple of ``every`` (read from the device only
    then)."""

    def __init__(self, listeners):
        self.due = [cb for cb in listeners if getattr(cb, "every", 0)]
        self.sums: list[dict | None] = [None] * len(self.due)
        self.counts = [0] * len(self.due)

    def add(self, step: int, sums: dict, n: int = 1) -> None:
        """``sums``: the metrics summed over the ``n`` steps that end at global ``step``."""
        sums = parallel.local(sums) if self.due else sums  # process 0 adds them alone
        for i, cb in enumerate(self.due):
            old = self.sums[i]
            self.sums[i] = sums if old is None else jax.tree.map(jnp.add, old, sums)
            self.counts[i] += n
            if step // cb.every > (step - n) // cb.every:
                means = {k: float(v) / self.counts[i] for k, v in self.sums[i].items()}
                cb.on_steps(step, means)
                self.sums[i], self.counts[i] = None, 0


def train_steps(steps: Steps, run: Run, batches: list[Batch], n_batches: int, mesh, bar, reports):
    """Updates of ``run.state`` on ``batches``, the next of the epoch's ``n_batches`` (of which
    ``run.batch`` are done); their mean training metrics. Raises
    :class:`NonFiniteError` at a non-finite loss or gradient (no update applied from it on)."""
    start, fault = int(run.state.step), no_fault()
    fault = fault if mesh is None else parallel.replicate(fault, mesh)  # as the step returns it
    if run.config.on_device_epoch:
        stacked = stack_batches(batches, run.task.name)
        stacked = stacked if mesh is None else parallel.shard(stacked, mesh, axis=1)
        run.state, metrics, fault = steps.epoch(run.state, stacked, fault)
        total = jax.tree.map(lambda m: m * len(batches), metrics)
        reports.add(start + len(batches), total, len(batches))
        bar.update(len(batches))
    else:
        total = {}
        for i, batch in enumerate(batches):
            batch = batch if mesh is None else parallel.shard(batch, mesh)
            run.state, metrics, fault = steps.train(run.state, batch, fault)
            total = metrics if not total else jax.tree.map(jnp.add, total, metrics)
            reports.add(start + i + 1, metrics)
            bar.update(1)
    means = {k: float(v) / len(batches) for k, v in total.items()}
    if int(fault["step"]) != NO_FAULT:  # one read per evaluation, with the metrics'
        batch = run.batch + int(fault["step"]) - start  # 1-based, in the epoch
        where = f"epoch {run.epoch + 1}, batch {batch} of {n_batches}"
        raise non_finite_error(run, int(fault["step"]), float(fault["loss"]), where)
    if not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(
            f"{run.task.name}: non-finite training metrics before step {int(run.state.step)} "
            f"although every step's loss and gradients were finite: {means}. Nothing was "
            "saved for these steps."
        )
    return means


def non_finite_error(run: Run, step: int, loss: float, where: str) -> NonFiniteError:
    """The :class:`NonFiniteError` for a fault at global ``step`` (``where`` in words)."""
    what = f"loss ({loss})" if not math.isfinite(loss) else f"gradients (loss {loss:.6g})"
    if run.out is None:
        kept = "Nothing was saved (no out_dir)."
    elif run.saved is None:
        kept = f"No checkpoint was written to {run.out}: no evaluation finished."
    else:
        kept = (
            f"The last good checkpoint, {run.out / CHECKPOINT} ({run.saved}), is kept: "
            "fit(..., resume=True) with a lower learning_rate continues from it."
        )
    lr = run.config.learning_rate
    message = (
        f"{run.task.name}: non-finite {what} at step {step} ({where}, learning_rate={lr:g}); "
        f"training stopped and no update was applied from that step on. {kept} Try a lower "
        f"learning rate, e.g. {lr / 10:g}."
    )
    return NonFiniteError(
        message,
        step=step,
        epoch=run.epoch + 1,
        out_dir=run.out,
        checkpoint=run.out / CHECKPOINT if run.saved else None,
        learning_rate=lr,
    )


def evaluate_now(steps: Steps, run: Run, data: Dataset, train: dict, n_batches: int, seconds):
    """The history row at this point: train metrics since the last evaluation and the eval
    split's (``valid``, else ``test``, else ``train``)."""
    name = next(name for name in ("valid", "test", "train") if name in data)
    evals = steps.evaluate(run.state.params, run.task.batches(data[name], run.config, None))
    return {
        "epoch": run.progress(n_batches),
        "step": int(run.state.step),
        "time": round(seconds, 3),
        **{f"train_{k}": v for k, v in train.items()},
        **{f"{name}_{k}": v for k, v in evals.items()},
    }


def advance(run: Run, n: int, n_batches: int) -> None:
    """``n`` more batches of the current epoch are done."""
    run.batch += n
    if run.batch == n_batches:
        run.epoch, run.batch = run.epoch + 1, 0


def record(steps: Steps, run: Run, data: Dataset, row: dict, bar, listeners, report: bool):
    """Keep ``row``: the history, the best evaluation, the progress bar, the callbacks and the
    checkpoint; ``report``: print the task's epoch report too."""
    run.history.append(row)
    best, task = run.best, run.task
    write = run.out is not None and is_writer()  # process 0 alone, in a multi-process run
    if best is not None and best.update(row, run.state.params) and write:
        save_params(run.out / BEST, best.params, run.meta())
    shown, key = {"loss": row["train_loss"]}, task.select or task.metric
    if key in row:
        shown[key] = row[key]
    bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
    if report:
        params = parallel.local(run.state.params)  # this process's copy: it reports alone
        text = task.epoch_report(steps, params, data, run.config, run.epoch)
        if text:
            bar.write(f"epoch {run.epoch}: {text}")
    if run.out is not None:
        if write:
            save_checkpoint(run.out / CHECKPOINT, run.state, run.meta(), best and best.params)
        run.saved = run.position()
    for callback in listeners:
        callback.on_evaluation(row)


def finish(steps: Steps, run: Run, data: Dataset, clock: Clock, complete: bool) -> Result:
    """The final evaluation (of the best params, for a task that selects) of a complete
    run, and its outputs."""
    best, config = run.best, run.config
    params = best.params if best is not None and best.params is not None else run.state.params
    with clock.phase("eval"):
        final = run.task.evaluate(steps, params, data, config) if complete else {}
    if final and best is not None:
        final["best_epoch"] = best.epoch
    seconds = clock.seconds()
    with agree("writing the outputs"):
        if run.out is not None and is_writer():
            local = parallel.local(params)
            write_outputs(steps, config, local, data, run.history, final, run.out, best, seconds)
    return Result(
        state=run.state,
        history=run.history,
        final=final,
        model=steps.model,
        data=data,
        best=best,
        steps=steps,
        seconds=seconds,
    )


class Clock:
    """Wall seconds of a run by phase, with the compiling inside each phase taken out."""

    def __init__(self):
        self.start, self.compile_start = time.perf_counter(), compile_seconds()
        self.wall: dict[str, float] = {}
        self.compile: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def phase(self, name: str):
        wall, compiling = time.perf_counter(), compile_seconds()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            compiled = compile_seconds() - compiling
            self.compile[name] = self.compile.get(name, 0.0) + compiled

    def seconds(self) -> dict[str, float]:
        """``compile``, ``train`` and ``eval`` (each without its compiling) and ``total``."""
        total = self.elapsed()
        out = {"compile": compile_seconds() - self.compile_start}
        for name in ("train", "eval"):
            out[name] = self.wall.get(name, 0.0) - self.compile.get(name, 0.0)
        out["total"] = total
        return {k: round(v, 3) for k, v in out.items()}


def _size(split: Batch) -> int:
    return len(next(iter(split.values())))


def check_splits(task: Task, data: dict) -> None:
    """Every split has one row per example in each array, and at least one example."""
    if "train" not in data:
        raise ValueError(f"{task.name}: the data has no 'train' split (splits: {list(data)})")
    for name, split in data.items():
        sizes = {k: len(v) for k, v in split.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"{task.name}: the arrays of the {name!r} split differ in length "
                f"({sizes}); each needs one row per example"
            )
        if not sizes or not next(iter(sizes.values())):
            raise ValueError(
                f"{task.name}: the {name!r} split is empty (0 examples); every split "
                "needs at least one: check the config's sizes and fractions"
            )


def check_resumable(task: Task, config: TaskConfig, seed: int, meta: dict, path) -> None:
    """A checkpoint can be resumed with ``config`` if it is the same task, seed and config,
    except for the keys in :data:`RESUMABLE` (``epochs``: extend a run; ``learning_rate``: e.g.
    lower it after a fault; the optimiser state does not depend on either)."""
    if meta["task"] != task.name:
        raise ValueError(
            f"cannot resume: {path} holds a {meta['task']!r} checkpoint, not {task.name!r}"
        )
    if meta["seed"] != seed:
        raise ValueError(
            f"cannot resume: {path} was trained with seed {meta['seed']}, not "
            f"{seed} (the data and shuffles depend on it)"
        )
    ours = json.loads(json.dumps(dataclasses.asdict(config)))
    theirs = meta["config"]
    keys = [k for k in {**theirs, **ours} if k not in RESUMABLE]
    diff = {
        k: (theirs.get(k, "<missing>"), ours.get(k, "<missing>"))
        for k in keys
        if theirs.get(k) != ours.get(k)
    }
    if diff:
        raise ValueError(
            f"cannot resume: the checkpoint in {pathlib.Path(path).parent} is for task "
            f"{meta['task']!r} with another config ({{key: (checkpoint, now)}}: {diff}); only "
            f"{' and '.join(RESUMABLE)} may change"
        )


# ----------------------------------------------------------------------------- outputs


def write_outputs(steps: Steps, config, params, data, history, final, out, best, seconds):
    """metrics.json, loss.png and the task's own plots (with the params ``final`` was made with).

    ``seconds``: this call's wall clock by phase (see :class:`Clock`), as ``"seconds"``.
    """
    task = steps.task
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "task": task.name,
        "config": dataclasses.asdict(config),
        "history": history,
        "final": final,
        "seconds": seconds,
    }
    if best is not None:
        record["best_epoch"] = best.epoch
        record["selected_by"] = {"metric": best.metric, "mode": best.mode, "value": best.value}
    (out / "metrics.json").write_text(json.dumps(record, indent=2, default=jsonable))
    plot_history(history, out / "loss.png", title=task.name, best_step=best and best.step)
    if final:
        task.plot(steps, params, data, config, out)


def plot_history(history: list[dict], path: pathlib.Path, title: str = "", best_step=None):
    """Train and eval loss per evaluation against the step, on a log scale, as a PNG; the
    selected evaluation marked. Points are marked too (a one-evaluation run shows a dot); an
    upper axis counts epochs."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    marker = "o" if len(history) <= 60 else None
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in [k for k in history[-1] if k.endswith("_loss")]:
        ax.plot(steps, [row.get(key, np.nan) for row in history], marker=marker, ms=3, label=key)
    if best_step is not None:
        ax.axvline(best_step, color="gray", ls="--", label=f"selected (step {best_step})")
    per_epoch = [(r["step"], r["epoch"]) for r in history if r["epoch"] and r["step"]]
    if per_epoch:  # steps per epoch, from any evaluation: the epoch axis on top
        rate = per_epoch[-1][0] / per_epoch[-1][1]
        top = ax.secondary_xaxis("top", functions=(lambda s: s / rate, lambda e: e * rate))
        top.set_xlabel("epoch")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- saved runs


def config_from_meta(task: Task, meta: dict, where=None) -> TaskConfig:
    """The effective config stored in a checkpoint's meta (JSON turned its tuples into lists;
    they are turned back). ``where`` (the file) is named in the error for unknown keys."""
    known = {f.name for f in dataclasses.fields(task.Config)}
    unknown = sorted(set(meta["config"]) - known)
    if unknown:
        raise ValueError(
            f"{where or 'the checkpoint'}: its config has keys that "
            f"{task.Config.__name__} does not know: {', '.join(unknown)} (another "
            f"task's checkpoint, or another jaxrnn version's?)"
        )
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return task.Config(**fields)


def restore_run(task: Task, checkpoint: str | os.PathLike):
    """A run's config, compiled steps, data and params, rebuilt from its checkpoint's config
    and seed (the best epoch's params when the task selects; ``checkpoint`` may also be a
    ``best.msgpack``). Returns ``(config, steps, params, data, meta)``."""
    payload, meta = read_checkpoint(pathlib.Path(checkpoint))
    if meta["task"] != task.name:
        raise ValueError(f"{checkpoint} holds a {meta['task']!r} checkpoint, not {task.name!r}")
    config = config_from_meta(task, meta, checkpoint)
    seed = meta["seed"]
    data = task.data(config, np.random.default_rng([seed, 0]))
    steps = make_steps(task, task.model(config))
    like = task.init(steps.model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    selected = task.select is not None and "best" in payload  # else: the last (or best.msgpack)
    raw = payload["best"] if selected else payload["state"]["params"]
    params = restore_into(like, raw, checkpoint, meta)
    return config, steps, params, data, meta


def evaluate_checkpoint(task: Task, checkpoint: str | os.PathLike) -> dict:
    """Re-evaluate a run from its checkpoint (see :func:`restore_run`)."""
    config, steps, params, data, meta = restore_run(task, checkpoint)
    final = task.evaluate(steps, params, data, config)
    if task.select is not None and meta.get("best"):
        final["best_epoch"] = meta["best"]["epoch"]
    return final


def resume_config(task: Task, out: str | os.PathLike, changes: dict) -> tuple[TaskConfig, int]:
    """The config and seed that resuming the run in ``out`` continues with: the checkpoint's
    own, with ``changes`` on top (``fit`` then checks that only :data:`RESUMABLE` keys
    changed)."""
    path = pathlib.Path(out) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: no checkpoint in {out}")
    _, meta = read_checkpoint(path)
    if meta["task"] != task.name:
        raise ValueError(
            f"cannot resume: {path} holds a {meta['task']!r} checkpoint, not {task.name!r}"
        )
    return config_from_meta(task, meta, path).replace(**changes), meta["seed"]
