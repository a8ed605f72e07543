"""What a task is: a config dataclass, a data function, a model, a loss and an evaluation.

A task never has its own training loop: :func:`jaxrnn.runs.fit` runs every task. To add one,
subclass :class:`Task`, give it a frozen :class:`TaskConfig` subclass with its defaults, and
list it in ``jaxrnn.tasks.TASKS`` (or pass an instance to ``fit`` directly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import numpy as np

Array = jax.Array
Batch = dict[str, np.ndarray]
Dataset = dict[str, Batch]  # split name ("train", "test", ...) -> arrays with a leading N axis


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Fields every task has; a task's config subclasses this with the seed's defaults."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    grad_clip: float = 0.0  # global-norm clipping as torch.nn.utils.clip_grad_norm_; 0 = off
    weight_decay: float = 0.0  # decoupled (torch.optim.AdamW); 0 = plain Adam
    on_device_epoch: bool = False  # run each epoch as one lax.scan over pre-batched data
    # the train step's forward pass: "bfloat16" = mixed precision (float32 master weights and
    # evaluation; jaxrnn.engine.mixed_precision). For GPU/TPU: slower on CPUs without bf16 units.
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    def replace(self, **changes) -> TaskConfig:
        return dataclasses.replace(self, **changes)


class Task:
    """Base class of a task. Subclasses set ``name``, ``Config``, ``metric`` and implement:

        * ``data(config, rng) -> Dataset``: NumPy arrays, ``{"train": {...}, "test": {...}}``;
        * ``model(config) -> nn.Module``;
        * ``loss(model, params, batch, *, key, train) -> (loss, metrics)`` — pure, jit-able;
        * ``evaluate(steps, params, data, config) -> dict`` of final metrics (after training).

    The hooks that run after compilation (``evaluate``, ``epoch_report``, ``plot``) get the run's
    :class:`jaxrnn.engine.Steps`: the model (``steps.model``) and its compiled train and eval
    steps, so evaluating reuses what training compiled (``steps.evaluate(params, batches)``).

        Optional hooks: ``init_batch`` (what ``model.init`` sees), ``batches`` (how a split is cut
        into batches, e.g. bucketed by length), ``epoch_report`` (a line printed after each epoch),
        ``plot`` (extra PNGs), ``check_data`` (validation at the data boundary).

        After each epoch the engine evaluates the loss's metrics on ``data["valid"]`` if there is
        one, else ``"test"``, else ``"train"`` (history keys ``valid_loss``, ``valid_accuracy``, …).
        Model selection: with ``select = "valid_accuracy"`` (a history key) and ``select_mode``
        ``"max"`` (or ``"min"``), the engine keeps the best epoch's parameters, writes them to
        ``best.msgpack``, and the final ``evaluate`` sees those parameters.
    """

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    metric: ClassVar[str]  # the eval metric shown in the progress bar, e.g. "test_accuracy"
    description: ClassVar[str] = ""
    select: ClassVar[str | None] = None  # history key that picks the best epoch; None = last
    select_mode: ClassVar[Literal["max", "min"]] = "max"

    def data(self, config: TaskConfig, rng: np.random.Generator) -> Dataset:
        raise NotImplementedError

    def model(self, config: TaskConfig) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, params, batch: Batch, *, key: Array, train: bool):
        raise NotImplementedError

    def evaluate(self, steps, params, data: Dataset, config: TaskConfig) -> dict:
        raise NotImplementedError

    def resolve(self, config: TaskConfig) -> TaskConfig:
        """Fill fields left ``None`` with values that depend on others (e.g. a variant)."""
        return config

    def init_batch(self, data: Dataset, config: TaskConfig) -> Batch:
        return {k: v[:2] for k, v in data["train"].items()}

    def init(self, model: nn.Module, key: Array, batch: Batch):
        return model.init(key, **self.model_inputs(batch))["params"]

    def model_inputs(self, batch: Batch) -> dict[str, Any]:
        """The keyword arguments of ``model.apply`` for a batch (default: ``x=batch["x"]``)."""
        return {"x": batch["x"]}

    def batches(
        self, split: Batch, config: TaskConfig, rng: np.random.Generator | None
    ) -> Iterable[Batch]:
        """One pass over ``split``: shuffled training batches when ``rng`` is given (the engine
        passes a fresh generator per epoch), every example exactly once, in order, for
        evaluation when ``rng`` is None. Default: :func:`iterate_batches` of ``batch_size``.

        Batches may differ in shape (each shape compiles once); ``on_device_epoch`` then fails.
        """
        return iterate_batches(split, config.batch_size, rng)

    def check_data(self, data: Dataset, config: TaskConfig) -> None:
        """Validate the data once, on the host (e.g. token ids), before anything compiles."""

    def epoch_report(
        self, steps, params, data: Dataset, config: TaskConfig, epoch: int
    ) -> str | None:
        return None

    def plot(self, steps, params, data: Dataset, config: TaskConfig, out_dir) -> list[str]:
        return []


def iterate_batches(
    split: Batch, batch_size: int, rng: np.random.Generator | None
) -> Iterator[Batch]:
    """Batches of ``batch_size`` (shuffled when ``rng`` is given; the remainder is dropped
    when shuffling so that every training step has one shape)."""
    n = len(next(iter(split.values())))
    order = rng.permutation(n) if rng is not None else np.arange(n)
    stop = n - n % batch_size if rng is not None and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in split.items()}
