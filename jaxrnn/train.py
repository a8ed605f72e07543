"""One Optax training engine for every task.

``fit(task, config, seed=..., out_dir=...)`` builds the data, model and optimiser, then runs
jitted train steps (``value_and_grad`` + Optax update) epoch by epoch, evaluating after each
epoch, showing a tqdm bar, and writing to ``out_dir``:

* ``metrics.json``  ``{"task", "config", "history", "final"}``;
* ``loss.png``      the loss curve, plus each task's own pictures;
* ``checkpoint.msgpack``  params, optimiser state, step, history and the effective config,
  written atomically (temp file, fsync, rename) after every epoch.

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
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from flax.training import train_state

from .tasks.base import Batch, Task, TaskConfig

CHECKPOINT = "checkpoint.msgpack"


class TrainState(train_state.TrainState):
    key: jax.Array  # base key; step t uses fold_in(key, t)


def make_optimizer(config: TaskConfig) -> optax.GradientTransformation:
    """Adam (torch's eps placement), with global-norm clipping first if ``grad_clip > 0``."""
    adam = optax.adam(config.learning_rate)
    if config.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), adam)
    return adam


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


def iterate_batches(split: Batch, batch_size: int, rng: np.random.Generator | None):
    """Batches of ``batch_size`` (shuffled when ``rng`` is given; the remainder is dropped
    when shuffling so that every training step has one shape)."""
    n = len(next(iter(split.values())))
    order = rng.permutation(n) if rng is not None else np.arange(n)
    stop = n - n % batch_size if rng is not None and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in split.items()}


def evaluate_task(task: Task, model, params, split: Batch, batch_size: int) -> dict[str, float]:
    """Mean eval metrics of ``task``'s loss over a split, with the cached eval step."""
    return evaluate_split(make_steps(task, model)[1], params, split, batch_size)


def evaluate_split(eval_step, params, split: Batch, batch_size: int) -> dict[str, float]:
    """Mean of the eval metrics over a split, weighted by batch size."""
    totals: dict[str, float] = {}
    count = 0
    for batch in iterate_batches(split, batch_size, None):
        n = len(next(iter(batch.values())))
        for k, v in eval_step(params, batch).items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / count for k, v in totals.items()}


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: pathlib.Path, state: TrainState, meta: dict[str, Any]) -> None:
    """Write ``state`` and ``meta`` (JSON-able) to ``path`` atomically.

    The bytes go to a temp file in the same directory, are fsynced, then renamed over
    ``path``: a save killed midway leaves the previous checkpoint intact.
    """
    payload = {"state": serialization.to_state_dict(state), "meta": json.dumps(meta)}
    data = serialization.msgpack_serialize(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: pathlib.Path, target: TrainState | None = None):
    """Read a checkpoint: ``(state, meta)``; with ``target`` the state is restored into its
    structure (shapes checked), else returned as a raw state dict."""
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
    if target is None:
        return payload["state"], meta
    want = jax.tree.map(np.shape, serialization.to_state_dict(target))
    got = jax.tree.map(np.shape, payload["state"])
    if want != got:
        raise ValueError(
            f"checkpoint {path} (task {meta.get('task')!r}) does not fit this model: "
            f"parameter or optimiser shapes differ"
        )
    return serialization.from_state_dict(target, payload["state"]), meta


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Result:
    state: TrainState
    history: list[dict]
    final: dict
    model: Any
    data: dict


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
) -> Result:
    """Train ``task`` with ``config`` (default: the task's) and evaluate it.

    ``max_epochs`` stops early after that many epochs of this call (used by tests to
    interrupt a run and resume it).
    """
    from tqdm.auto import tqdm

    config = task.resolve(config or task.Config())
    out = pathlib.Path(out_dir) if out_dir is not None else None
    data = task.data(config, np.random.default_rng([seed, 0]))
    task.check_data(data, config)
    model = task.model(config)
    params = task.init(model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    state = TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=make_optimizer(config),
        key=jax.random.PRNGKey(seed + 1),
    )
    history: list[dict] = []
    start_epoch = 0
    if resume:
        if out is None or not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}")
        state, meta = load_checkpoint(out / CHECKPOINT, state)
        if meta["task"] != task.name or meta["config"] != json.loads(
            json.dumps(config_to_dict(config))
        ):
            raise ValueError(
                f"--resume: the checkpoint in {out} is for task {meta['task']!r} with config "
                f"{meta['config']}, not {task.name!r} with {config_to_dict(config)}"
            )
        history, start_epoch = meta["history"], meta["epoch"]

    train_step, eval_step, train_epoch = make_steps(task, model)
    train_split, eval_name = data["train"], "test" if "test" in data else "train"
    n_train = len(next(iter(train_split.values())))
    steps_per_epoch = max(1, n_train // config.batch_size)
    last_epoch = config.epochs if max_epochs is None else min(config.epochs, start_epoch + max_epochs)
    bar = tqdm(
        total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
        desc=task.name, disable=not progress, unit="step", dynamic_ncols=True,
    )  # fmt: skip
    t0 = time.time()
    for epoch in range(start_epoch, last_epoch):
        rng = np.random.default_rng([seed, 1, epoch])
        if config.on_device_epoch:
            batches = list(iterate_batches(train_split, config.batch_size, rng))
            stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
            state, metrics = train_epoch(state, stacked)
            bar.update(len(batches))
            train_metrics = {k: float(v) for k, v in metrics.items()}
        else:
            sums: dict[str, Any] = {}
            for i, batch in enumerate(iterate_batches(train_split, config.batch_size, rng)):
                state, metrics = train_step(state, batch)
                sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
                bar.update(1)
            train_metrics = {k: float(v) / (i + 1) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in train_metrics.values()):
            bar.close()
            raise FloatingPointError(
                f"{task.name}: non-finite training metrics at epoch {epoch + 1} "
                f"(step {int(state.step)}): {train_metrics}. The last good checkpoint is kept; "
                f"resume with a lower learning_rate (--set learning_rate=...)"
            )
        evals = evaluate_split(eval_step, state.params, data[eval_name], config.batch_size)
        row = {
            "epoch": epoch + 1,
            "step": int(state.step),
            "time": round(time.time() - t0, 3),
            **{f"train_{k}": v for k, v in train_metrics.items()},
            **{f"{eval_name}_{k}": v for k, v in evals.items()},
        }
        history.append(row)
        shown = {"loss": row["train_loss"]}
        if task.metric in row:
            shown[task.metric] = row[task.metric]
        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
        if progress:
            report = task.epoch_report(model, state.params, data, config, epoch + 1)
            if report:
                bar.write(f"epoch {epoch + 1}: {report}")
        if out is not None:
            meta = {
                "task": task.name,
                "config": config_to_dict(config),
                "seed": seed,
                "epoch": epoch + 1,
                "history": history,
            }
            save_checkpoint(out / CHECKPOINT, state, meta)
    bar.close()

    final = task.evaluate(model, state.params, data, config) if last_epoch == config.epochs else {}
    if out is not None:
        write_outputs(task, config, model, state, data, history, final, out)
    return Result(state=state, history=history, final=final, model=model, data=data)


def write_outputs(task, config, model, state, data, history, final, out: pathlib.Path):
    """metrics.json, loss.png and the task's own plots."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"task": task.name, "config": config_to_dict(config), "history": history,
              "final": final}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(record, indent=2, default=_jsonable))
    plot_history(history, out / "loss.png", title=task.name)
    if final:
        task.plot(model, state.params, data, config, out)


def _jsonable(value):
    if isinstance(value, (np.generic, jax.Array)):
        return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def plot_history(history: list[dict], path: pathlib.Path, title: str = "") -> None:
    """Loss per epoch (train and eval) as a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in [k for k in history[-1] if k.endswith("_loss")]:
        ax.plot(epochs, [row.get(key, np.nan) for row in history], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_checkpoint(task_name: str, checkpoint: str | os.PathLike) -> dict:
    """Rebuild a run's data and model from its checkpoint's config and seed, and evaluate."""
    from .tasks.base import get_task

    task = get_task(task_name)
    raw_state, meta = load_checkpoint(pathlib.Path(checkpoint))
    if meta["task"] != task.name:
        raise ValueError(f"{checkpoint} holds a {meta['task']!r} checkpoint, not {task.name!r}")
    config = task.Config(**_tuples(meta["config"]))
    seed = meta["seed"]
    data = task.data(config, np.random.default_rng([seed, 0]))
    model = task.model(config)
    like = task.init(model, jax.random.PRNGKey(seed), task.init_batch(data, config))
    params = serialization.from_state_dict(like, raw_state["params"])
    return task.evaluate(model, params, data, config)


def _tuples(config: dict) -> dict:
    """JSON turned the config's tuples into lists; turn them back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
