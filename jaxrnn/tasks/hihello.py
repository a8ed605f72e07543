"""``hihello`` (seed 001): an RNN(5 → 5) learns to turn "hihell" into "ihello".

Two modes, as in the seed: ``sequence`` (``Model2``: one RNN call over the whole one-hot
sequence, mean cross-entropy) and ``step`` (``Model``: one character at a time with the hidden
state carried between calls, cross-entropy summed over the steps) — the step loop is a
``flax.linen.scan`` over the same RNN layer, not a Python loop.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..layers import RNN
from ..task import Task, TaskConfig

IDX2CHAR = ("h", "i", "e", "l", "o")
X_DATA = (0, 1, 0, 2, 3, 3)  # "hihell"
Y_DATA = (1, 0, 2, 3, 3, 4)  # "ihello"


@dataclasses.dataclass(frozen=True)
class HiHelloConfig(TaskConfig):
    """Seed 001: Adam, 100 epochs, one sentence per batch, hidden = classes = 5.

    The seed's lr 0.1 reaches "ihello" from 4 of 8 initialisations (seeds 0–7; the RNN's tanh
    output, used as logits, makes local minima such as "ilello" common); lr 0.05 from 6 of 8,
    seed 0 included (measured, both modes alike). Seeds 2 and 6 stay at "ihillo"/"ihelll"
    with lr 0.1, 0.05, 0.02 and 300 epochs alike."""

    mode: Literal["sequence", "step"] = "sequence"
    epochs: int = 100
    batch_size: int = 1
    learning_rate: float = 0.05


class HiHelloModel(nn.Module):
    """One-hot [B, T] ids → RNN(5, batch_first) → logits [B, T, 5] (the RNN output itself)."""

    mode: str = "sequence"
    num_classes: int = len(IDX2CHAR)

    @nn.compact
    def __call__(self, x):  # x: [B, T] ints
        one_hot = jax.nn.one_hot(x, self.num_classes)  # [B, T, 5]
        rnn = RNN(hidden_size=self.num_classes, batch_first=True, name="rnn")
        if self.mode == "sequence":  # Model2
            return rnn(one_hot)[0]

        hidden = jnp.zeros((1, x.shape[0], self.num_classes), one_hot.dtype)

        def step(rnn, h, x_t):  # Model: x_t [B, 1, 5], h [1, B, 5]
            out, h = rnn(x_t, h)
            # the carry keeps the initial dtype (with compute_dtype=bfloat16 the rnn gives bf16)
            return h.astype(hidden.dtype), out[:, 0]

        scan = nn.scan(
            step,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
        )
        _, out = scan(rnn, hidden, one_hot[:, :, None, :])  # scan over T
        return out


def decode(ids) -> str:
    return "".join(IDX2CHAR[int(i)] for i in ids)


class HiHello(Task):
    name = "hihello"
    Config = HiHelloConfig
    metric = "test_accuracy"
    description = 'seed 001: RNN(5) learns "hihell" -> "ihello" (modes: sequence, step)'

    def data(self, config, rng):
        split = {"x": np.array([X_DATA], np.int32), "y": np.array([Y_DATA], np.int32)}
        return {"train": split, "test": split}

    def model(self, config):
        return HiHelloModel(mode=config.mode)

    def loss(self, model, params, batch, *, key, train):
        logits = model.apply({"params": params}, batch["x"])  # [B, T, 5]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])  # [B, T]
        # Model2 averages over the sequence; Model adds one criterion(...) per step.
        loss = ce.mean() if model.mode == "sequence" else ce.sum(axis=1).mean()
        return loss, {"accuracy": jnp.mean(logits.argmax(-1) == batch["y"])}

    def _predict(self, model, params, x) -> str:
        return decode(model.apply({"params": params}, x).argmax(-1)[0])

    def evaluate(self, steps, params, data, config):
        batch = data["test"]
        metrics = steps.eval(params, batch)
        return {
            "predicted": self._predict(steps.model, params, batch["x"]),
            "loss": float(metrics["loss"]),
            "accuracy": float(metrics["accuracy"]),
        }

    def epoch_report(self, steps, params, data, config, epoch):
        if epoch == 1 or epoch % 10 == 0:
            return f"predicted {self._predict(steps.model, params, data['test']['x'])!r}"
        return None
