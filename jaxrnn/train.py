"""One Optax training engine for every task.

``fit(task, config, seed=..., out_dir=...)`` builds the data, model and optimiser, then runs
jitted train steps (``value_and_grad`` + Optax update) epoch by epoch, evaluating after each
epoch, showing a tqdm bar, and writing to ``out_dir``:

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
non-finite, nor at any later step, and records the first such step in a small ``fault`` carry
that stays on device; the host reads it once per epoch and raises :class:`NonFiniteError`
naming the step. The epoch is then not checkpointed, so the last good checkpoint stays on disk
(:func:`save_checkpoint` also refuses non-finite params).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from . import parallel
from .checkpoints import (
    BEST,
    CHECKPOINT,
    read_checkpoint,
    restore_into,
    save_checkpoint,
    save_params,
)
from .files import save_figure
from .tasks.base import Batch, Task, TaskConfig, iterate_batches

RESUMABLE = ("epochs", "learning_rate")  # the config keys a resume may change
COMPUTE_DTYPES = ("float32", "bfloat16")  # TaskConfig.compute_dtype: the train step's
NO_FAULT = int(np.iinfo(np.int32).max)  # the fault carry's step while every step was finite


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN or infinite at training step ``step`` (1-based, as
    the history's ``step``) of epoch ``epoch``; no update was applied from that step on."""

    def __init__(self, message: str, *, step: int, epoch: int):
        super().__init__(message)
        self.step, self.epoch = step, epoch


class TrainState(train_state.TrainState):
    key: jax.Array  # base key; step t uses fold_in(key, t)


def make_optimizer(config: TaskConfig) -> optax.GradientTransformation:
    """Adam (torch's eps placement), with :func:`clip_grad_norm` first if ``grad_clip > 0``.

    ``weight_decay > 0`` gives AdamW with torch's decoupled decay (``p -= lr * wd * p``).
    """
    return _optimizer(config.learning_rate, config.grad_clip, config.weight_decay)


@functools.lru_cache(maxsize=16)
def _optimizer(learning_rate: float, grad_clip: float, weight_decay: float):
    # Cached: the optimiser is a static field of TrainState, so the same settings must give
    # the same object, or every fit would retrace and recompile the jitted steps.
    if weight_decay > 0:
        adam = optax.adamw(learning_rate, weight_decay=weight_decay)
    else:
        adam = optax.adam(learning_rate)
    if grad_clip > 0:
        return optax.chain(clip_grad_norm(grad_clip), adam)
    return adam


# torch.nn.utils.clip_grad_norm_ (torch/nn/utils/clip_grad.py) adds 1e-6 to the norm
TORCH_CLIP_EPS = 1e-6


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
    """``g · min(1, max_norm / (‖g‖ + 1e-6))`` over all gradients: ``clip_grad_norm_`` exactly.

    Not ``optax.clip_by_global_norm`` (``g · max_norm / ‖g‖`` when ``‖g‖ > max_norm``, no
    1e-6): the clipped gradients would differ from torch's by a factor ``1 - 1e-6/‖g‖``, which
    Adam with a large eps passes on (copy-masked's float64 20-step parity: 4.2e-8 against
    4.2e-16 with this formula).
    """

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(max_norm / (norm + TORCH_CLIP_EPS), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


@functools.lru_cache(maxsize=16)
def shared(model):
    """The first model seen that equals ``model`` (Flax modules compare by their fields).

    ``TrainState.apply_fn`` is static pytree metadata and bound methods compare their
    instance by identity: one instance per architecture lets a second ``fit`` of the same
    model hit jit's cache instead of retracing and recompiling every step.
    """
    return model


@functools.lru_cache(maxsize=16)
def make_steps(task: Task, model, compute_dtype: str = "float32"):
    """The jitted train, eval and epoch steps for a task's model.

    Cached per (task, model, compute_dtype) — Flax modules hash by their fields — so a task's
    ``evaluate`` gets the very functions ``fit`` compiled, and jit's cache is hit instead of
    recompiling. ``compute_dtype`` is the train step's (:func:`mixed_precision`); evaluation
    always runs in float32.
    """
    train_loss = mixed_precision(task.loss, compute_dtype)

    def train_step(state: TrainState, batch: Batch, fault: dict):
        """One Optax update, skipped when the loss or a gradient is non-finite — and at every
        step after that one, so the state stays the last good one. ``fault`` (see
        :func:`no_fault`) records the first bad step and its loss, on device: no host sync."""
        key = jax.random.fold_in(state.key, state.step)
        grad_fn = jax.value_and_grad(train_loss, argnums=1, has_aux=True)
        (loss, metrics), grads = grad_fn(model, state.params, batch, key=key, train=True)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        clean = fault["step"] == NO_FAULT
        here = {"step": jnp.asarray(state.step + 1, jnp.int32), "loss": loss.astype(jnp.float32)}
        fault = jax.tree.map(lambda new, old: jnp.where(clean & ~finite, new, old), here, fault)
        updated = state.apply_gradients(grads=grads)
        state = jax.tree.map(lambda new, old: jnp.where(clean & finite, new, old), updated, state)
        return state, {"loss": loss, **metrics}, fault

    def eval_step(params, batch: Batch):
        loss, metrics = task.loss(model, params, batch, key=jax.random.key(0), train=False)
        return {"loss": loss, **metrics}

    def train_epoch(state: TrainState, batches: Batch, fault: dict):
        """A whole epoch on device: ``lax.scan`` over ``[n_batches, batch, ...]`` arrays."""

        def body(carry, batch):
            state, metrics, fault = train_step(carry[0], batch, carry[1])
            return (state, fault), metrics

        (state, fault), metrics = jax.lax.scan(body, (state, fault), batches)
        return state, jax.tree.map(jnp.mean, metrics), fault

    return (
        jax.jit(train_step, donate_argnums=(0, 2)),
        jax.jit(eval_step),
        jax.jit(train_epoch, donate_argnums=(0, 2)),
    )


def mixed_precision(loss: Callable, compute_dtype: str) -> Callable:
    """``loss`` computed in ``compute_dtype`` ("float32" | "bfloat16") from float32 weights.

    Like ``torch.autocast``: floating parameters and batch arrays are cast on the way in, and
    so is every floating array argument of every Flax module call (``nn.intercept_methods``),
    which catches what a model makes itself, such as one-hot encodings. The forward pass —
    the loss included — runs in ``compute_dtype``; loss and metrics come back as float32, and
    the gradient reaches the float32 master weights through the casts, where the optimizer
    updates them. bfloat16 keeps float32's exponent range: no loss scaling is needed.
    """
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    if compute_dtype == "float32":
        return loss
    dtype = jnp.dtype(compute_dtype)

    def cast(tree, to):
        def leaf(a):
            is_array = isinstance(a, (jax.Array, np.ndarray))
            return a.astype(to) if is_array and jnp.issubdtype(a.dtype, jnp.floating) else a

        return jax.tree.map(leaf, tree)

    def autocast(call, args, kwargs, context):
        del context
        return call(*cast(args, dtype), **cast(kwargs, dtype))

    def low_precision_loss(model, params, batch, **kwargs):
        with nn.intercept_methods(autocast):
            value, metrics = loss(model, cast(params, dtype), cast(batch, dtype), **kwargs)
        return cast(value, jnp.float32), cast(metrics, jnp.float32)

    return low_precision_loss


def no_fault() -> dict:
    """The fault carry of the train step before any non-finite step."""
    return {"step": jnp.asarray(NO_FAULT, jnp.int32), "loss": jnp.asarray(0.0, jnp.float32)}


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def evaluate_task(task: Task, model, params, split: Batch, batch_size: int) -> dict[str, float]:
    """Mean eval metrics of ``task``'s loss over a split in batches of ``batch_size``, with the
    cached eval step."""
    batches = iterate_batches(split, batch_size, None)
    return mean_metrics(make_steps(task, model)[1], params, batches)


def evaluate_batched(task: Task, model, params, split: Batch, config: TaskConfig) -> dict:
    """Like :func:`evaluate_task`, with the batches of the task's ``batches`` hook."""
    return mean_metrics(make_steps(task, model)[1], params, task.batches(split, config, None))


def mean_metrics(eval_step, params, batches: Iterable[Batch]) -> dict[str, float]:
    """Mean of the eval metrics over batches, weighted by batch size."""
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        n = len(next(iter(batch.values())))
        for k, v in eval_step(params, batch).items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / count for k, v in totals.items()}


# ----------------------------------------------------------------------------- the loop


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
            raise ValueError(f"select={self.metric!r} is not a history key; the keys are "
                             f"{', '.join(row)}")  # fmt: skip
        if not self.improves(row[self.metric]):
            return False
        self.epoch, self.value = row["epoch"], row[self.metric]
        self.params = jax.tree.map(np.array, params)
        return True

    def meta(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "epoch": self.epoch, "value": self.value}


@dataclasses.dataclass
class Result:
    state: TrainState
    history: list[dict]
    final: dict
    model: Any
    data: dict
    best: Best | None = None  # the selected epoch of a task with ``select``


def selection(task: Task) -> Best | None:
    """A fresh :class:`Best` for a task that selects its model on a history key, else None."""
    if task.select is None:
        return None
    if task.select_mode not in ("max", "min"):
        raise ValueError(f"{type(task).__name__}.select_mode must be 'max' or 'min', "
                         f"got {task.select_mode!r}")  # fmt: skip
    return Best(task.select, task.select_mode)


def config_to_dict(config: TaskConfig) -> dict:
    return dataclasses.asdict(config)


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

    ``devices``: train data-parallel on that many devices (:mod:`jaxrnn.parallel`: each
    batch split across them, the train state replicated); None trains on the default device.

    ``init_state_dict`` (a torch-named ``{name: array}``, e.g. a torch model's
    ``state_dict()``) replaces the initial params, matched by name with
    ``state_dict_to_params``: missing, unexpected or misshapen keys are an error.
    ``max_epochs`` stops early after that many epochs of this call (used by tests to
    interrupt a run and resume it). A task with ``select`` is evaluated with its best epoch's
    params (``final["best_epoch"]``); ``Result.state`` is always the last epoch's.
    """
    from tqdm.auto import tqdm

    config = config or task.Config()
    if not isinstance(config, task.Config):
        raise TypeError(f"config must be a {task.Config.__name__} (task {task.name!r}), got "
                        f"{type(config).__name__}")  # fmt: skip
    config = task.resolve(config)
    check_config(config)
    out = pathlib.Path(out_dir) if out_dir is not None else None
    data = task.data(config, np.random.default_rng([seed, 0]))
    check_splits(task, data)
    task.check_data(data, config)
    model = shared(task.model(config))
    params = task.init(model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    if init_state_dict is not None:
        from .interop import state_dict_to_params

        if resume:
            raise ValueError("an initial state_dict and resume exclude each other: a resumed "
                             "run continues from its checkpoint")  # fmt: skip
        params = state_dict_to_params(init_state_dict, like=params)
    state = TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=make_optimizer(config),
        key=jax.random.PRNGKey(seed + 1),
    )
    history: list[dict] = []
    best = selection(task)
    start_epoch = 0
    saved_epoch = None  # the epoch of the checkpoint on disk, for a fault's message
    if resume:
        if out is None or not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}")
        payload, meta = read_checkpoint(out / CHECKPOINT)
        check_resumable(task, config, seed, meta, out / CHECKPOINT)
        state = restore_into(state, payload["state"], out / CHECKPOINT, meta)
        history, start_epoch = meta["history"], meta["epoch"]
        saved_epoch = start_epoch
        if start_epoch > config.epochs:
            raise ValueError(f"--resume: the checkpoint in {out} is at epoch {start_epoch}, "
                             f"beyond epochs={config.epochs}")  # fmt: skip
        state = state.replace(step=int(state.step))  # a Python int, as in create: no retrace
        if best is not None and meta.get("best", {}).get("epoch") is not None:
            best.epoch, best.value = meta["best"]["epoch"], meta["best"]["value"]
            best.params = restore_into(params, payload["best"], out / CHECKPOINT, meta)

    train_step, eval_step, train_epoch = make_steps(task, model, config.compute_dtype)
    mesh = None
    if devices is not None:
        mesh = parallel.data_mesh(devices)
        state = state.replace(**parallel.replicate(
            {"params": state.params, "opt_state": state.opt_state, "key": state.key}, mesh))
    train_split = data["train"]
    eval_name = next(name for name in ("valid", "test", "train") if name in data)
    last_epoch = config.epochs if max_epochs is None else min(config.epochs, start_epoch + max_epochs)
    bar = tqdm(desc=task.name, disable=not progress, unit="step", dynamic_ncols=True)
    t0 = time.time()
    fault = no_fault()
    for epoch in range(start_epoch, last_epoch):
        epoch_start_step = int(state.step)
        batches = list(task.batches(train_split, config, np.random.default_rng([seed, 1, epoch])))
        if not batches:
            n = _size(train_split)
            raise ValueError(f"{task.name}: no training batches; the train split has {n} "
                             f"examples, batch_size={config.batch_size}")  # fmt: skip
        if bar.total is None:  # the number of steps is known once the first epoch is cut
            bar.total, bar.initial = config.epochs * len(batches), start_epoch * len(batches)
            bar.n = bar.last_print_n = bar.initial
            bar.refresh()
        if config.on_device_epoch:
            stacked = stack_batches(batches, task.name)
            stacked = stacked if mesh is None else parallel.shard(stacked, mesh, axis=1)
            state, metrics, fault = train_epoch(state, stacked, fault)
            bar.update(len(batches))
            train_metrics = {k: float(v) for k, v in metrics.items()}
        else:
            sums: dict[str, Any] = {}
            for batch in batches:
                batch = batch if mesh is None else parallel.shard(batch, mesh)
                state, metrics, fault = train_step(state, batch, fault)
                sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
                bar.update(1)
            train_metrics = {k: float(v) / len(batches) for k, v in sums.items()}
        if int(fault["step"]) != NO_FAULT:  # one read per epoch, with the metrics'
            bar.close()
            where = dict(epoch=epoch + 1, batch=int(fault["step"]) - epoch_start_step,
                         n_batches=len(batches))  # fmt: skip
            raise NonFiniteError(
                _fault_message(task, config, int(fault["step"]), float(fault["loss"]), where,
                               out, saved_epoch),
                step=int(fault["step"]), epoch=epoch + 1,
            )  # fmt: skip
        if not all(math.isfinite(v) for v in train_metrics.values()):
            bar.close()  # the loss and gradients were finite, a metric was not (e.g. 0/0)
            raise FloatingPointError(
                f"{task.name}: non-finite training metrics at epoch {epoch + 1} "
                f"(step {int(state.step)}) although every step's loss and gradients were "
                f"finite: {train_metrics}. Nothing was saved for this epoch."
            )
        evals = mean_metrics(eval_step, state.params, task.batches(data[eval_name], config, None))
        row = {
            "epoch": epoch + 1,
            "step": int(state.step),
            "time": round(time.time() - t0, 3),
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"{eval_name}_{k}": v for k, v in evals.items()},
        }
        history.append(row)
        meta = {
            "task": task.name,
            "config": config_to_dict(config),
            "seed": seed,
            "epoch": epoch + 1,
            "history": history,
        }
        if best is not None:
            if best.update(row, state.params) and out is not None:
                save_params(out / BEST, best.params, {**meta, "best": best.meta()})
            meta["best"] = best.meta()
        shown, key = {"loss": row["train_loss"]}, task.select or task.metric
        if key in row:
            shown[key] = row[key]
        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
        if progress:
            report = task.epoch_report(model, state.params, data, config, epoch + 1)
            if report:
                bar.write(f"epoch {epoch + 1}: {report}")
        if out is not None:
            save_checkpoint(out / CHECKPOINT, state, meta, best.params if best else None)
            saved_epoch = epoch + 1
    bar.close()

    params = best.params if best is not None and best.params is not None else state.params
    final = task.evaluate(model, params, data, config) if last_epoch == config.epochs else {}
    if final and best is not None:
        final["best_epoch"] = best.epoch
    if out is not None:
        write_outputs(task, config, model, params, data, history, final, out, best)
    return Result(state=state, history=history, final=final, model=model, data=data, best=best)


def _size(split: Batch) -> int:
    return len(next(iter(split.values())))


def _fault_message(task, config, step, loss, where, out, saved_epoch) -> str:
    what = f"loss ({loss})" if not math.isfinite(loss) else f"gradients (loss {loss:.6g})"
    if out is None:
        kept = "Nothing was saved (no out_dir)."
    elif saved_epoch is None:
        kept = f"No checkpoint was written to {out}: no epoch finished."
    else:
        kept = f"The last good checkpoint, {out / CHECKPOINT} (epoch {saved_epoch}), is kept."
    lower = f"{config.learning_rate / 10:g}"
    how = (f"jaxrnn train {task.name} --out {out} --resume --set learning_rate={lower}"
           if saved_epoch is not None else f"--set learning_rate={lower}")  # fmt: skip
    return (
        f"{task.name}: non-finite {what} at step {step} (epoch {where['epoch']}, batch "
        f"{where['batch']} of {where['n_batches']}, learning_rate={config.learning_rate:g}); "
        f"training stopped and no update was applied from that step on. {kept} Try a lower "
        f"learning rate: {how} (in Python: fit(..., resume=True) with a lower learning_rate)."
    )


def check_config(config: TaskConfig) -> None:
    """The engine's fields of a resolved config: clear errors before any data is built."""
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("learning_rate", "grad_clip", "weight_decay"):
        value = getattr(config, name)
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                or not math.isfinite(value) or value < 0):  # fmt: skip
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_splits(task: Task, data: dict) -> None:
    """Every split has one row per example in each array, and at least one example."""
    if "train" not in data:
        raise ValueError(f"{task.name}: the data has no 'train' split (splits: {list(data)})")
    for name, split in data.items():
        sizes = {k: len(v) for k, v in split.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{task.name}: the arrays of the {name!r} split differ in length "
                             f"({sizes}); each needs one row per example")  # fmt: skip
        if not sizes or not next(iter(sizes.values())):
            raise ValueError(f"{task.name}: the {name!r} split is empty (0 examples); every split "
                             "needs at least one: check the config's sizes and fractions")  # fmt: skip


def check_resumable(task: Task, config: TaskConfig, seed: int, meta: dict, path) -> None:
    """A checkpoint can be resumed with ``config`` if it is the same task, seed and config,
    except for the keys in :data:`RESUMABLE` (``epochs``: extend a run; ``learning_rate``: e.g.
    lower it after a fault; the optimiser state does not depend on either)."""
    if meta["task"] != task.name:
        raise ValueError(f"--resume: {path} holds a {meta['task']!r} checkpoint, not "
                         f"{task.name!r}")  # fmt: skip
    if meta["seed"] != seed:
        raise ValueError(f"--resume: {path} was trained with seed {meta['seed']}, not {seed} "
                         "(the data and shuffles depend on it)")  # fmt: skip
    ours = json.loads(json.dumps(config_to_dict(config)))
    theirs = meta["config"]
    keys = [k for k in {**theirs, **ours} if k not in RESUMABLE]
    diff = {k: (theirs.get(k, "<missing>"), ours.get(k, "<missing>"))
            for k in keys if theirs.get(k) != ours.get(k)}  # fmt: skip
    if diff:
        raise ValueError(
            f"--resume: the checkpoint in {pathlib.Path(path).parent} is for task "
            f"{meta['task']!r} with another config ({{key: (checkpoint, now)}}: {diff}); only "
            f"{' and '.join(RESUMABLE)} may change"
        )


def stack_batches(batches: list[Batch], task_name: str) -> Batch:
    """``[n_batches, batch, ...]`` arrays for an on-device epoch: every batch needs one shape."""
    shapes = {tuple((k, v.shape) for k, v in b.items()) for b in batches}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise ValueError(
            f"on_device_epoch=True stacks an epoch's batches into one array, but task "
            f"{task_name!r} gives batches of {len(shapes)} different shapes (e.g. {dict(a)} and "
            f"{dict(b)}: bucketed by length?); set on_device_epoch=false"
        )
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def write_outputs(task, config, model, params, data, history, final, out: pathlib.Path, best=None):
    """metrics.json, loss.png and the task's own plots (with the params ``final`` was made with)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"task": task.name, "config": config_to_dict(config), "history": history,
              "final": final}  # fmt: skip
    if best is not None:
        record["best_epoch"] = best.epoch
        record["selected_by"] = {"metric": best.metric, "mode": best.mode, "value": best.value}
    (out / "metrics.json").write_text(json.dumps(record, indent=2, default=_jsonable))
    plot_history(history, out / "loss.png", title=task.name, best_epoch=best and best.epoch)
    if final:
        task.plot(model, params, data, config, out)


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


def restore_run(task_name: str, checkpoint: str | os.PathLike):
    """A run's task, config, model, data and params, rebuilt from its checkpoint's config and
    seed (the best epoch's params when the task selects; ``checkpoint`` may also be a
    ``best.msgpack``). Returns ``(task, config, model, params, data, meta)``."""
    from .tasks.base import get_task

    task = get_task(task_name)
    payload, meta = read_checkpoint(pathlib.Path(checkpoint))
    if meta["task"] != task.name:
        raise ValueError(f"{checkpoint} holds a {meta['task']!r} checkpoint, not {task.name!r}")
    config = config_from_meta(task, meta, checkpoint)
    seed = meta["seed"]
    data = task.data(config, np.random.default_rng([seed, 0]))
    model = task.model(config)
    like = task.init(model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    selected = task.select is not None and "best" in payload  # else: the last (or best.msgpack)
    raw = payload["best"] if selected else payload["state"]["params"]
    params = restore_into(like, raw, checkpoint, meta)
    return task, config, model, params, data, meta


def evaluate_checkpoint(task_name: str, checkpoint: str | os.PathLike) -> dict:
    """Re-evaluate a run from its checkpoint (see :func:`restore_run`)."""
    task, config, model, params, data, meta = restore_run(task_name, checkpoint)
    final = task.evaluate(model, params, data, config)
    if task.select is not None and meta.get("best"):
        final["best_epoch"] = meta["best"]["epoch"]
    return final


def config_from_meta(task: Task, meta: dict, where=None) -> TaskConfig:
    """The effective config stored in a checkpoint's meta (JSON turned its tuples into lists;
    they are turned back). ``where`` (the file) is named in the error for unknown keys."""
    known = {f.name for f in dataclasses.fields(task.Config)}
    unknown = sorted(set(meta["config"]) - known)
    if unknown:
        raise ValueError(f"{where or 'the checkpoint'}: its config has keys that "
                         f"{task.Config.__name__} does not know: {', '.join(unknown)} (another "
                         f"task's checkpoint, or another jaxrnn version's?)")  # fmt: skip
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return task.Config(**fields)


def resume_config(task: Task, out: str | os.PathLike, overrides: dict) -> tuple[TaskConfig, int]:
    """The config and seed a ``--resume`` continues with: the checkpoint's own, with
    ``overrides`` (``--set``) on top — ``fit`` then checks that only :data:`RESUMABLE` keys
    changed."""
    path = pathlib.Path(out) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    _, meta = read_checkpoint(path)
    if meta["task"] != task.name:
        raise ValueError(f"--resume: {path} holds a {meta['task']!r} checkpoint, not "
                         f"{task.name!r}")  # fmt: skip
    return config_from_meta(task, meta, path).replace(**overrides), meta["seed"]
