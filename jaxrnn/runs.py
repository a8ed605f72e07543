"""A run: ``fit`` trains a task epoch by epoch, checkpoints it, resumes it and writes its outputs.

``fit(task, config, seed=..., out_dir=...)`` builds the data, the model and its compiled
:class:`~jaxrnn.engine.Steps`, then trains with a tqdm bar, evaluating after each epoch, and
writes to ``out_dir``:

* ``metrics.json``  ``{"task", "config", "history", "final"}``;
* ``loss.png``      the loss curve, plus each task's own pictures;
* ``checkpoint.msgpack``  params, optimiser state, step, history, seed and the effective
  config, with a sha256 of its contents, written atomically (temp file, fsync, rename) after
  every epoch; a truncated, damaged or foreign file is refused naming it;
* ``best.msgpack``  for a task that selects (``Task.select``, e.g. ``"valid_accuracy"``): the
  best epoch's params, written atomically when an epoch improves on it. The checkpoint holds
  a copy too, so a resumed run keeps its best-so-far; the final ``evaluate`` uses them.

Each epoch is evaluated on ``data["valid"]`` if the task has that split, else ``"test"``,
else ``"train"``; the task's ``batches`` hook cuts every split into batches.

Randomness flows from one seed: the data from ``np.random.default_rng([seed, 0])``, the init
from ``PRNGKey(seed)``, each epoch's shuffle from ``default_rng([seed, 1, epoch])`` and each
step's key from ``fold_in(key, step)``. So ``resume=True`` continues bit-identically: the next
step sees the same batch, key and state as in the uninterrupted run. A resume may change
``epochs`` and ``learning_rate`` (:data:`RESUMABLE`), nothing else.

Numerical faults: the jitted step applies no update when the loss or any gradient is
non-finite, nor at any later step, and records the first such step on device; the host reads
it once per epoch and raises :class:`NonFiniteError` naming the step. The epoch is then not
checkpointed, so the last good checkpoint stays on disk.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import parallel
from .checkpoints import (
    BEST,
    CHECKPOINT,
    read_checkpoint,
    restore_into,
    save_checkpoint,
    save_params,
)
from .engine import (
    NO_FAULT,
    Steps,
    TrainState,
    check_config,
    create_state,
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

    ``saved_epoch`` is the epoch of the last good checkpoint in ``out_dir`` (None if none):
    ``fit(..., resume=True)`` with a lower ``learning_rate`` continues from it.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        epoch: int,
        out_dir=None,
        saved_epoch=None,
        learning_rate: float | None = None,
    ):
        super().__init__(message)
        self.step, self.epoch = step, epoch
        self.out_dir, self.saved_epoch, self.learning_rate = out_dir, saved_epoch, learning_rate


@dataclasses.dataclass
class Best:
    """The best epoch so far by ``metric`` (a history key), its value and its params (host)."""

    metric: str
    mode: str  # "max" or "min"
    epoch: int | None = None
    value: float | None = None
    params: Any = None

    def improves(self, value: float) -> bool:
        """Strictly better than the best so far (ties keep the earlier epoch; NaN never wins)."""
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(self, row: dict, params) -> bool:
        """Take epoch ``row["epoch"]`` (and a host copy of ``params``) if it improves."""
        if self.metric not in row:
            raise ValueError(
                f"select={self.metric!r} is not a history key; the keys are {', '.join(row)}"
            )
        if not self.improves(row[self.metric]):
            return False
        self.epoch, self.value = row["epoch"], row[self.metric]
        self.params = jax.tree.map(np.array, params)
        return True

    def meta(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "epoch": self.epoch, "value": self.value}


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
    """What a run carries from epoch to epoch: the train state, the history, the best epoch,
    the epochs done and the epoch of the checkpoint on disk."""

    task: Task
    config: TaskConfig
    seed: int
    out: pathlib.Path | None
    state: TrainState
    history: list[dict]
    best: Best | None
    epoch: int = 0  # epochs done
    saved_epoch: int | None = None  # the checkpoint on disk, for a fault's message

    def meta(self) -> dict:
        """The checkpoint's meta after :attr:`epoch` epochs."""
        meta = {
            "task": self.task.name,
            "config": dataclasses.asdict(self.config),
            "seed": self.seed,
            "epoch": self.epoch,
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
    best: Best | None = None  # the selected epoch of a task with ``select``
    steps: Steps | None = None  # the compiled steps (for evaluating ``state.params`` again)


def fit(
    task: Task,
    config: TaskConfig | None = None,
    *,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    max_epochs: int | None = None,
    init_state_dict=None,
    devices: int | None = None,
) -> Result:
    """Train ``task`` with ``config`` (default: the task's) and evaluate it.

    ``resume``: continue from ``out_dir``'s checkpoint (same task, seed and config but for
    :data:`RESUMABLE`). ``devices``: data-parallel on that many devices
    (:mod:`jaxrnn.parallel`). ``init_state_dict`` (a torch-named ``{name: array}``, e.g. a torch
    model's ``state_dict()``) replaces the initial params, matched by name. ``max_epochs``
    stops after that many epochs of this call. A task with ``select`` is evaluated with its
    best epoch's params (``final["best_epoch"]``); ``Result.state`` is the last epoch's.
    """
    config = checked_config(task, config)
    out = pathlib.Path(out_dir) if out_dir is not None else None
    data = make_data(task, config, seed)
    steps = make_steps(task, task.model(config), config.compute_dtype)
    run = start_run(steps, config, data, seed, out, resume, init_state_dict)
    mesh = parallel.data_mesh(devices) if devices is not None else None
    if mesh is not None:
        run.state = run.state.replace(
            **parallel.replicate(
                {
                    "params": run.state.params,
                    "opt_state": run.state.opt_state,
                    "key": run.state.key,
                },
                mesh,
            )
        )
    last = config.epochs if max_epochs is None else min(config.epochs, run.epoch + max_epochs)
    bar = tqdm(desc=task.name, disable=not progress, unit="step", dynamic_ncols=True)
    t0 = time.time()
    try:
        for epoch in range(run.epoch, last):
            batches = epoch_batches(task, data["train"], config, seed, epoch)
            show_total(bar, config.epochs, epoch, len(batches))
            train_metrics = train_one_epoch(steps, run, batches, mesh, bar)
            row = evaluate_epoch(steps, run, data, train_metrics, time.time() - t0)
            end_epoch(steps, run, data, row, bar, progress)
    finally:
        bar.close()
    params = (
        run.best.params
        if run.best is not None and run.best.params is not None
        else (run.state.params)
    )
    final = task.evaluate(steps, params, data, config) if last == config.epochs else {}
    if final and run.best is not None:
        final["best_epoch"] = run.best.epoch
    if out is not None:
        write_outputs(steps, config, params, data, run.history, final, out, run.best)
    return Result(
        state=run.state,
        history=run.history,
        final=final,
        model=steps.model,
        data=data,
        best=run.best,
        steps=steps,
    )


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


def make_data(task: Task, config: TaskConfig, seed: int) -> Dataset:
    """The task's data for ``seed``, with its splits and contents checked."""
    data = task.data(config, np.random.default_rng([seed, 0]))
    check_splits(task, data)
    task.check_data(data, config)
    return data


def start_run(steps: Steps, config, data, seed, out, resume: bool, init_state_dict) -> Run:
    """The run at its first epoch: fresh params (or ``init_state_dict``'s), or — with
    ``resume`` — the state, history and best epoch of ``out``'s checkpoint."""
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
    if run.out is None or not (run.out / CHECKPOINT).exists():
        raise FileNotFoundError(f"resume=True: no checkpoint in out_dir={run.out}")
    path = run.out / CHECKPOINT
    payload, meta = read_checkpoint(path)
    check_resumable(run.task, run.config, run.seed, meta, path)
    if meta["epoch"] > run.config.epochs:
        raise ValueError(
            f"resume=True: the checkpoint in {run.out} is at epoch "
            f"{meta['epoch']}, beyond epochs={run.config.epochs}"
        )
    state = restore_into(run.state, payload["state"], path, meta)
    run.state = state.replace(step=int(state.step))  # a Python int, as in create: no retrace
    run.history, run.epoch = meta["history"], meta["epoch"]
    run.saved_epoch = run.epoch
    best = run.best
    if best is not None and meta.get("best", {}).get("epoch") is not None:
        best.epoch, best.value = meta["best"]["epoch"], meta["best"]["value"]
        best.params = restore_into(params, payload["best"], path, meta)


def epoch_batches(task: Task, split: Batch, config, seed: int, epoch: int) -> list[Batch]:
    """Epoch ``epoch``'s training batches, shuffled by ``default_rng([seed, 1, epoch])``."""
    batches = list(task.batches(split, config, np.random.default_rng([seed, 1, epoch])))
    if not batches:
        raise ValueError(
            f"{task.name}: no training batches; the train split has "
            f"{_size(split)} examples, batch_size={config.batch_size}"
        )
    return batches


def show_total(bar, epochs: int, epoch: int, n_batches: int) -> None:
    """Give the progress bar its total once the first epoch is cut into batches."""
    if bar.total is None:
        bar.total, bar.initial = epochs * n_batches, epoch * n_batches
        bar.n = bar.last_print_n = bar.initial
        bar.refresh()


def train_one_epoch(steps: Steps, run: Run, batches: list[Batch], mesh, bar) -> dict:
    """One epoch of updates on ``run.state``; its mean training metrics. Raises
    :class:`NonFiniteError` at a non-finite loss or gradient (no update applied from it on)."""
    start_step, fault = int(run.state.step), no_fault()
    if run.config.on_device_epoch:
        stacked = stack_batches(batches, run.task.name)
        stacked = stacked if mesh is None else parallel.shard(stacked, mesh, axis=1)
        run.state, metrics, fault = steps.epoch(run.state, stacked, fault)
        bar.update(len(batches))
        means = {k: float(v) for k, v in metrics.items()}
    else:
        sums: dict[str, Any] = {}
        for batch in batches:
            batch = batch if mesh is None else parallel.shard(batch, mesh)
            run.state, metrics, fault = steps.train(run.state, batch, fault)
            sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
            bar.update(1)
        means = {k: float(v) / len(batches) for k, v in sums.items()}
    if int(fault["step"]) != NO_FAULT:  # one read per epoch, with the metrics'
        raise non_finite_error(
            run,
            int(fault["step"]),
            float(fault["loss"]),
            batch=int(fault["step"]) - start_step,
            n_batches=len(batches),
        )
    if not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(
            f"{run.task.name}: non-finite training metrics at epoch {run.epoch + 1} "
            f"(step {int(run.state.step)}) although every step's loss and gradients were "
            f"finite: {means}. Nothing was saved for this epoch."
        )
    return means


def non_finite_error(run: Run, step: int, loss: float, *, batch: int, n_batches: int):
    """The :class:`NonFiniteError` for a fault at ``step`` (``batch`` of the epoch)."""
    what = f"loss ({loss})" if not math.isfinite(loss) else f"gradients (loss {loss:.6g})"
    if run.out is None:
        kept = "Nothing was saved (no out_dir)."
    elif run.saved_epoch is None:
        kept = f"No checkpoint was written to {run.out}: no epoch finished."
    else:
        kept = (
            f"The last good checkpoint, {run.out / CHECKPOINT} (epoch {run.saved_epoch}), "
            "is kept: fit(..., resume=True) with a lower learning_rate continues from it."
        )
    lr = run.config.learning_rate
    message = (
        f"{run.task.name}: non-finite {what} at step {step} (epoch {run.epoch + 1}, batch "
        f"{batch} of {n_batches}, learning_rate={lr:g}); training stopped and no update was "
        f"applied from that step on. {kept} Try a lower learning rate, e.g. {lr / 10:g}."
    )
    return NonFiniteError(
        message,
        step=step,
        epoch=run.epoch + 1,
        out_dir=run.out,
        saved_epoch=run.saved_epoch,
        learning_rate=lr,
    )


def evaluate_epoch(steps: Steps, run: Run, data: Dataset, train_metrics: dict, seconds) -> dict:
    """The history row of the epoch just trained: train metrics and the eval split's."""
    name = next(name for name in ("valid", "test", "train") if name in data)
    batches = run.task.batches(data[name], run.config, None)
    evals = steps.evaluate(run.state.params, batches)
    return {
        "epoch": run.epoch + 1,
        "step": int(run.state.step),
        "time": round(seconds, 3),
        **{f"train_{k}": v for k, v in train_metrics.items()},
        **{f"{name}_{k}": v for k, v in evals.items()},
    }


def end_epoch(steps: Steps, run: Run, data: Dataset, row: dict, bar, progress: bool) -> None:
    """Record ``row``, keep the best epoch, show progress and write the checkpoint."""
    run.history.append(row)
    run.epoch = row["epoch"]
    best, task = run.best, run.task
    if best is not None and best.update(row, run.state.params) and run.out is not None:
        save_params(run.out / BEST, best.params, run.meta())
    shown, key = {"loss": row["train_loss"]}, task.select or task.metric
    if key in row:
        shown[key] = row[key]
    bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
    if progress:
        report = task.epoch_report(steps, run.state.params, data, run.config, run.epoch)
        if report:
            bar.write(f"epoch {run.epoch}: {report}")
    if run.out is not None:
        save_checkpoint(run.out / CHECKPOINT, run.state, run.meta(), best.params if best else None)
        run.saved_epoch = run.epoch


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


def write_outputs(steps: Steps, config, params, data, history, final, out: pathlib.Path, best=None):
    """metrics.json, loss.png and the task's own plots (with the params ``final`` was made with)."""
    task = steps.task
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "task": task.name,
        "config": dataclasses.asdict(config),
        "history": history,
        "final": final,
    }
    if best is not None:
        record["best_epoch"] = best.epoch
        record["selected_by"] = {"metric": best.metric, "mode": best.mode, "value": best.value}
    (out / "metrics.json").write_text(json.dumps(record, indent=2, default=_jsonable))
    plot_history(history, out / "loss.png", title=task.name, best_epoch=best and best.epoch)
    if final:
        task.plot(steps, params, data, config, out)


def _jsonable(value):
    if isinstance(value, (np.generic, jax.Array)):
        return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def plot_history(
    history: list[dict], path: pathlib.Path, title: str = "", best_epoch: int | None = None
) -> None:
    """Loss per epoch (train and eval) as a PNG; the selected epoch marked if given."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in [k for k in history[-1] if k.endswith("_loss")]:
        ax.plot(epochs, [row.get(key, np.nan) for row in history], label=key)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="gray", ls="--", label=f"selected (epoch {best_epoch})")
    ax.set_xlabel("epoch")
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
