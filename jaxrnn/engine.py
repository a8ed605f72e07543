"""The training engine: optimizer, torch's clipping, mixed precision, compiled steps, evaluation.

:func:`make_steps` turns a task and its model into a :class:`Steps`: the jitted train step
(``value_and_grad`` + Optax update, skipped on a non-finite loss or gradient), the jitted eval
step and the on-device epoch. :func:`jaxrnn.runs.fit` builds one per run and hands it to the
task's hooks, so evaluation reuses what training compiled. Nothing here is cached between
runs: a second run compiles again, unless JAX's persistent compilation cache is on.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from .task import Batch, Task, TaskConfig, iterate_batches

COMPUTE_DTYPES = ("float32", "bfloat16")  # TaskConfig.compute_dtype: the train step's
NO_FAULT = int(np.iinfo(np.int32).max)  # the fault carry's step while every step was finite

# torch.nn.utils.clip_grad_norm_ (torch/nn/utils/clip_grad.py) adds 1e-6 to the norm
TORCH_CLIP_EPS = 1e-6


class TrainState(train_state.TrainState):
    key: jax.Array  # base key; step t uses fold_in(key, t)


def make_optimizer(config: TaskConfig) -> optax.GradientTransformation:
    """Adam (torch's eps placement), with :func:`clip_grad_norm` first if ``grad_clip > 0``.

    ``weight_decay > 0`` gives AdamW with torch's decoupled decay (``p -= lr * wd * p``).
    """
    if config.weight_decay > 0:
        adam = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    else:
        adam = optax.adam(config.learning_rate)
    if config.grad_clip > 0:
        return optax.chain(clip_grad_norm(config.grad_clip), adam)
    return adam


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
    """``g · min(1, max_norm / (‖g‖ + 1e-6))`` over all gradients: ``clip_grad_norm_`` exactly.

    Not ``optax.clip_by_global_norm`` (``g · max_norm / ‖g‖`` when ``‖g‖ > max_norm``, no
    1e-6): the clipped gradients would differ from torch's by a factor ``1 - 1e-6/‖g‖``, which
    Adam with a large eps passes on (copy-masked's float64 20-step parity: 4.2e-8 against
    4.2e-16 with this formula). The norm is written out (``optax.tree.norm`` is the same sum,
    but only in optax ≥ 0.2.5).
    """

    def update(updates, state, params=None):
        del params
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(updates)))
        coef = jnp.minimum(max_norm / (norm + TORCH_CLIP_EPS), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def create_state(model: nn.Module, params, config: TaskConfig, seed: int) -> TrainState:
    """The train state at step 0: params, the config's optimizer and the step-key base."""
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=make_optimizer(config),
        key=jax.random.PRNGKey(seed + 1),
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


@dataclasses.dataclass(frozen=True)
class Steps:
    """A task's model with its jitted steps — built once per run by :func:`make_steps`.

    * ``train(state, batch, fault) -> (state, metrics, fault)``: one Optax update;
    * ``eval(params, batch) -> metrics``: the task's loss and metrics, ``train=False``;
    * ``epoch(state, batches, fault) -> (state, mean metrics, fault)``: a whole epoch as one
      ``lax.scan`` over ``[n_batches, batch, ...]`` arrays.

    ``state`` is donated to ``train`` and ``epoch``: use the state they return.
    """

    task: Task
    model: nn.Module
    compute_dtype: str
    train: Callable
    eval: Callable
    epoch: Callable

    def evaluate(self, params, batches: Iterable[Batch]) -> dict[str, float]:
        """Mean eval metrics over ``batches``, weighted by batch size."""
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            n = len(next(iter(batch.values())))
            for k, v in self.eval(params, batch).items():
                totals[k] = totals.get(k, 0.0) + float(v) * n
            count += n
        return {k: v / count for k, v in totals.items()}

    def evaluate_split(self, params, split: Batch, batch_size: int) -> dict[str, float]:
        """:meth:`evaluate` over a split cut in order into batches of ``batch_size``."""
        return self.evaluate(params, iterate_batches(split, batch_size, None))


def make_steps(task: Task, model: nn.Module, compute_dtype: str = "float32") -> Steps:
    """The jitted train, eval and epoch steps of ``task``'s ``model``.

    ``compute_dtype`` is the train step's (:func:`mixed_precision`); evaluation always runs in
    float32. Each call makes new jitted functions (which compile on first use).
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
        def body(carry, batch):
            state, metrics, fault = train_step(carry[0], batch, carry[1])
            return (state, fault), metrics

        (state, fault), metrics = jax.lax.scan(body, (state, fault), batches)
        return state, jax.tree.map(jnp.mean, metrics), fault

    return Steps(
        task=task,
        model=model,
        compute_dtype=compute_dtype,
        train=jax.jit(train_step, donate_argnums=(0, 2)),
        eval=jax.jit(eval_step),
        epoch=jax.jit(train_epoch, donate_argnums=(0, 2)),
    )


def stack_batches(batches: list[Batch], task_name: str) -> Batch:
    """``[n_batches, batch, ...]`` arrays for an on-device epoch: every batch needs one shape."""
    shapes = {tuple((k, v.shape) for k, v in b.items()) for b in batches}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise ValueError(
            f"on_device_epoch=True stacks an epoch's batches into one array, but task "
            f"{task_name!r} gives batches of {len(shapes)} different shapes (e.g. {dict(a)} and "
            f"{dict(b)}: bucketed by length?); set on_device_epoch=False"
        )
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def check_config(config: TaskConfig) -> None:
    """The engine's fields of a resolved config: clear errors before any data is built."""
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("learning_rate", "grad_clip", "weight_decay"):
        value = getattr(config, name)
        number = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
        if not number or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype must be one of {COMPUTE_DTYPES}, got {config.compute_dtype!r}"
        )


# ----------------------------------------------------------------------------- compilation

# The events JAX records while it turns a traced function into an executable (or fetches one
# from the persistent cache): the seconds a run spends compiling rather than computing.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
    "/jax/compilation_cache/cache_retrieval_time_sec",
)
_compile_seconds = [0.0]
_compile_lock = threading.Lock()


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event in COMPILE_EVENTS:
        with _compile_lock:
            _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compile_seconds() -> float:
    """Seconds this process has spent tracing, lowering and compiling (or loading compiled
    code from the persistent cache) so far; a difference of two readings times a stretch."""
    with _compile_lock:
        return _compile_seconds[0]


def enable_compilation_cache(path: str | os.PathLike) -> pathlib.Path:
    """Turn on JAX's persistent compilation cache in ``path`` (for the whole process).

    A second run of the same model then loads its compiled steps instead of compiling them.
    Every executable is cached, however quick its compile (JAX's default skips those under
    one second — most of this library's steps).
    """
    path = pathlib.Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
