"""One Optax training engine for every task.

``fit(task, config, seed=..., out_dir=...)`` builds the data, model and optimiser, then runs
jitted train steps (``value_and_grad`` + Optax update) epoch by epoch, evaluating after each
epoch, showing a tqdm bar, and writing to ``out_dir``:

* ``metrics.json``  ``{"task", "config", "history", "final"}``;
* ``loss.png``      the loss curve, plus each task's own pictures;
* ``checkpoint.msgpack``  params, optimiser state, step, history and the effective config,
  written atomically (temp file, fsync, rename) after every epoch;
* ``best.msgpack``  for a task that selects (``Task.select``, e.g. ``"valid_accuracy"``): the
  best epoch's params, written atomically when an epoch improves on it. The checkpoint holds
  a copy too, so a resumed run keeps its best-so-far; the final ``evaluate`` uses them.

Each epoch is evaluated on ``data["valid"]`` if the task has that split, else ``"test"``,
else ``"train"``; the task's ``batches`` hook cuts every split into batches.

Randomness flows from one seed: the data from ``np.random.default_rng([seed, 0])``, the init
from ``PRNGKey(seed)``, each epoch's shuffle from ``default_rng([seed, 1, epoch])`` and each
step's key from ``fold_in(key, step)``. So ``resume=True`` continues bit-identically: the next
step sees the same batch, key and state as in the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from flax.training import train_state

from .files import atomic_write, save_figure
from .tasks.base import Batch, Task, TaskConfig, iterate_batches

CHECKPOINT = "checkpoint.msgpack"
BEST = "best.msgpack"


class TrainState(train_state.TrainState):
    key: jax.Array  # base key; step t uses fold_in(key, t)


def make_optimizer(config: TaskConfig) -> optax.GradientTransformation:
    """Adam (torch's eps placement), with global-norm clipping first if ``grad_clip > 0``.

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
        return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
    return adam


@functools.lru_cache(maxsize=16)
def shared(model):
    """The first model seen that equals ``model`` (Flax modules compare by their fields).

    ``TrainState.apply_fn`` is static pytree metadata and bound methods compare their
    instance by identity: one instance per architecture lets a second ``fit`` of the same
    model hit jit's cache instead of retracing and recompiling every step.
    """
    return model


@functools.lru_cache(maxsize=16)
def make_steps(task: Task, model):
    """The jitted train, eval and epoch steps for a task's model.

    Cached per (task, model) — Flax modules hash by their fields — so a task's ``evaluate``
    gets the very functions ``fit`` compiled, and jit's cache is hit instead of recompiling.
    """

    def train_step(state: TrainState, batch: Batch):
        key = jax.random.fold_in(state.key, state.step)
        grad_fn = jax.value_and_grad(task.loss, argnums=1, has_aux=True)
        (loss, metrics), grads = grad_fn(model, state.params, batch, key=key, train=True)
        return state.apply_gradients(grads=grads), {"loss": loss, **metrics}

    def eval_step(params, batch: Batch):
        loss, metrics = task.loss(model, params, batch, key=jax.random.key(0), train=False)
        return {"loss": loss, **metrics}

    def train_epoch(state: TrainState, batches: Batch):
        """A whole epoch on device: ``lax.scan`` over ``[n_batches, batch, ...]`` arrays."""
        state, metrics = jax.lax.scan(train_step, state, batches)
        return state, jax.tree.map(jnp.mean, metrics)

    return (
        jax.jit(train_step, donate_argnums=0),
        jax.jit(eval_step),
        jax.jit(train_epoch, donate_argnums=0),
    )


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


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: pathlib.Path, state: TrainState, meta: dict[str, Any], best_params=None
) -> None:
    """Write ``state``, ``meta`` (JSON-able) and the best params so far (if any) to ``path``
    atomically (see :func:`atomic_write`)."""
    payload = {"state": serialization.to_state_dict(state), "meta": json.dumps(meta)}
    if best_params is not None:
        payload["best"] = serialization.to_state_dict(best_params)
    atomic_write(path, serialization.msgpack_serialize(payload))


def save_params(path: pathlib.Path, params, meta: dict[str, Any]) -> None:
    """Params alone, in the checkpoint layout (``{"state": {"params": ...}, "meta": ...}``):
    ``load_checkpoint`` and ``jaxrnn eval --checkpoint`` read it like a checkpoint."""
    payload = {"state": {"params": serialization.to_state_dict(params)}, "meta": json.dumps(meta)}
    atomic_write(path, serialization.msgpack_serialize(payload))


def read_checkpoint(path: pathlib.Path) -> tuple[dict, dict]:
    """The raw payload (``state``, optional ``best``) and the meta of a checkpoint file (or of
    a run directory's ``checkpoint.msgpack``)."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        meta = json.loads(payload["meta"])
    except Exception as e:  # msgpack/JSON errors: say which file, and what it should be
        raise ValueError(f"{path} is not a readable jaxrnn checkpoint ({e})") from e
    return payload, meta


def load_checkpoint(path: pathlib.Path, target: TrainState | None = None):
    """Read a checkpoint: ``(state, meta)``; with ``target`` the state is restored into its
    structure (shapes checked), else returned as a raw state dict."""
    payload, meta = read_checkpoint(path)
    if target is None:
        return payload["state"], meta
    return _restore(target, payload["state"], path, meta), meta


def _restore(target, raw, path, meta):
    want = jax.tree.map(np.shape, serialization.to_state_dict(target))
    got = jax.tree.map(np.shape, raw)
    if want != got:
        raise ValueError(
            f"checkpoint {path} (task {meta.get('task')!r}) does not fit this model: "
            f"parameter or optimiser shapes differ"
        )
    return serialization.from_state_dict(target, raw)


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
) -> Result:
    """Train ``task`` with ``config`` (default: the task's) and evaluate it.

    ``init_state_dict`` (a torch-named ``{name: array}``, e.g. a torch model's
    ``state_dict()``) replaces the initial params, matched by name with
    ``state_dict_to_params``: missing, unexpected or misshapen keys are an error.
    ``max_epochs`` stops early after that many epochs of this call (used by tests to
    interrupt a run and resume it). A task with ``select`` is evaluated with its best epoch's
    params (``final["best_epoch"]``); ``Result.state`` is always the last epoch's.
    """
    from tqdm.auto import tqdm

    config = task.resolve(config or task.Config())
    out = pathlib.Path(out_dir) if out_dir is not None else None
    data = task.data(config, np.random.default_rng([seed, 0]))
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
    if resume:
        if out is None or not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}")
        state, meta = load_checkpoint(out / CHECKPOINT, state)
        # Only ``epochs`` may differ: a finished run can be extended (the data, the shuffles
        # and the step keys do not depend on it, so this continues bit-identically too).
        ours = json.loads(json.dumps(config_to_dict(config)))
        theirs = dict(meta["config"], epochs=ours["epochs"])
        if meta["task"] != task.name or theirs != ours:
            diff = {k: (meta["config"].get(k), v) for k, v in ours.items() if theirs.get(k) != v}
            raise ValueError(
                f"--resume: the checkpoint in {out} is for task {meta['task']!r} with another "
                f"config ({{key: (checkpoint, now)}}: {diff}); only epochs may change"
            )
        history, start_epoch = meta["history"], meta["epoch"]
        if start_epoch > config.epochs:
            raise ValueError(f"--resume: the checkpoint in {out} is at epoch {start_epoch}, "
                             f"beyond epochs={config.epochs}")  # fmt: skip
        state = state.replace(step=int(state.step))  # a Python int, as in create: no retrace
        if best is not None and meta.get("best", {}).get("epoch") is not None:
            best.epoch, best.value = meta["best"]["epoch"], meta["best"]["value"]
            payload, _ = read_checkpoint(out / CHECKPOINT)
            best.params = _restore(params, payload["best"], out / CHECKPOINT, meta)

    train_step, eval_step, train_epoch = make_steps(task, model)
    train_split = data["train"]
    eval_name = next(name for name in ("valid", "test", "train") if name in data)
    last_epoch = config.epochs if max_epochs is None else min(config.epochs, start_epoch + max_epochs)
    bar = tqdm(desc=task.name, disable=not progress, unit="step", dynamic_ncols=True)
    t0 = time.time()
    for epoch in range(start_epoch, last_epoch):
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
            state, metrics = train_epoch(state, stack_batches(batches, task.name))
            bar.update(len(batches))
            train_metrics = {k: float(v) for k, v in metrics.items()}
        else:
            sums: dict[str, Any] = {}
            for batch in batches:
                state, metrics = train_step(state, batch)
                sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
                bar.update(1)
            train_metrics = {k: float(v) / len(batches) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in train_metrics.values()):
            bar.close()
            raise FloatingPointError(
                f"{task.name}: non-finite training metrics at epoch {epoch + 1} "
                f"(step {int(state.step)}): {train_metrics}. The last good checkpoint is kept; "
                f"resume with a lower learning_rate (--set learning_rate=...)"
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
    config = config_from_meta(task, meta)
    seed = meta["seed"]
    data = task.data(config, np.random.default_rng([seed, 0]))
    model = task.model(config)
    like = task.init(model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    selected = task.select is not None and "best" in payload  # else: the last (or best.msgpack)
    raw = payload["best"] if selected else payload["state"]["params"]
    params = _restore(like, raw, checkpoint, meta)
    return task, config, model, params, data, meta


def evaluate_checkpoint(task_name: str, checkpoint: str | os.PathLike) -> dict:
    """Re-evaluate a run from its checkpoint (see :func:`restore_run`)."""
    task, config, model, params, data, meta = restore_run(task_name, checkpoint)
    final = task.evaluate(model, params, data, config)
    if task.select is not None and meta.get("best"):
        final["best_epoch"] = meta["best"]["epoch"]
    return final


def config_from_meta(task: Task, meta: dict) -> TaskConfig:
    """The effective config stored in a checkpoint's meta (JSON turned its tuples into lists;
    they are turned back)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return task.Config(**fields)
