"""``index-recall`` (seed 000): read a row of digits, answer the digit at ``target_idx``.

Data as the seed's ``gen_data``: ints in ``[low, high)``, ``N × d``, target = column
``target_idx``. Model: Embedding(high-low, 128) → LSTM → Linear(high-low) on the last state.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax

from ..embedding import Embed, check_ids
from ..layers import LSTM
from ..task import Task, TaskConfig


@dataclasses.dataclass(frozen=True)
class IndexRecallConfig(TaskConfig):
    """Seed 000: N=5000 train and test rows of d=10 digits in [0, 10), target column 3,
    embedding 128. The seed's notebook stops before the LSTM: hidden 128, Adam 1e-3, batch 64."""

    n: int = 5000
    d: int = 10
    low: int = 0
    high: int = 10
    target_idx: int = 3
    embedding_dim: int = 128
    hidden_size: int = 128
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 1e-3


class IndexRecallModel(nn.Module):
    """ids [B, d] → Embed → LSTM (batch_first) → Dense on the last hidden state → [B, V].

    Parameter paths are the torch attribute names of ``parity.models.Net`` (the seed's ``Net``
    names its LSTM ``self.rnn``), so a torch state_dict maps by name: ``embedding.weight``,
    ``rnn.weight_ih_l0`` …, ``fc.weight``.
    """

    vocab: int
    embedding_dim: int
    hidden_size: int

    @nn.compact
    def __call__(self, x):
        e = Embed(num_embeddings=self.vocab, features=self.embedding_dim, name="embedding")(x)
        _, (h_n, _) = LSTM(hidden_size=self.hidden_size, batch_first=True, name="rnn")(e)
        return nn.Dense(self.vocab, name="fc")(h_n[-1])  # [B, V]


class IndexRecall(Task):
    name = "index-recall"
    Config = IndexRecallConfig
    metric = "test_accuracy"
    description = "seed 000: Embedding + LSTM recall the digit at target_idx"

    def data(self, config, rng):
        if not 0 <= config.target_idx < config.d:
            raise ValueError(f"target_idx must be in [0, d={config.d}), got {config.target_idx}")

        def gen(n):  # the seed's gen_data
            x = rng.integers(config.low, config.high, size=(n, config.d))
            return {
                "x": (x - config.low).astype(np.int32),
                "y": (x[:, config.target_idx] - config.low).astype(np.int32),
            }

        return {"train": gen(config.n), "test": gen(config.n)}

    def check_data(self, data, config):
        for split, arrays in data.items():
            check_ids(arrays["x"], config.high - config.low, name=f"{split} x")

    def model(self, config):
        return IndexRecallModel(config.high - config.low, config.embedding_dim, config.hidden_size)

    def loss(self, model, params, batch, *, key, train):
        logits = model.apply({"params": params}, batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, {"accuracy": jnp.mean(logits.argmax(-1) == batch["y"])}

    def evaluate(self, steps, params, data, config):
        metrics = steps.evaluate_split(params, data["test"], config.batch_size)
        return {"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]}
