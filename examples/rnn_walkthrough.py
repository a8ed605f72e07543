"""Seed 001's walk-through of ``nn.RNN`` shapes, in jaxrnn.

A 3-layer bidirectional RNN with hidden size 2 on one-hot letters: what ``out`` and ``h_n``
look like, batch_first, and several sequences in a batch. Shapes are exactly torch's.

    python examples/rnn_walkthrough.py
"""

import jax
import jax.numpy as jnp

import jaxrnn

h, e, l, o = jnp.eye(4)  # one-hot letters  # noqa: E741
key = jax.random.key(0)

# 3 layers, 2 directions, hidden 2; one sequence of one letter, batch_first.
cell = jaxrnn.RNN(hidden_size=2, num_layers=3, batch_first=True, bidirectional=True)
inputs = jnp.array([[h]])  # [batch=1, time=1, features=4]
hidden = jax.random.normal(key, (3 * 2, 1, 2))  # [layers·directions, batch, hidden]
variables = cell.init(key, inputs)
out, h_n = cell.apply(variables, inputs, hidden)
print("params:", {k: v.shape for k, v in variables["params"].items()})
print("out", out.shape, "(batch, time, 2 directions × hidden)")
print("h_n", h_n.shape, "(layers × directions, batch, hidden)")
# The last layer's final states are the two halves of the output at the ends of the sequence.
print("out[0, -1, :2] == h_n[-2, 0]:", bool(jnp.allclose(out[0, -1, :2], h_n[-2, 0])))
print("out[0, 0, 2:] == h_n[-1, 0]:", bool(jnp.allclose(out[0, 0, 2:], h_n[-1, 0])))

# A batch of three words, one layer.
words = jnp.array([[h, e, l, l, o], [e, o, l, l, l], [l, l, e, e, l]])  # [3, 5, 4]
rnn = jaxrnn.RNN(hidden_size=2, batch_first=True)
variables = rnn.init(key, words)
out, h_n = rnn.apply(variables, words, jax.random.normal(key, (1, 3, 2)))
print("batch of 3 words: out", out.shape, "h_n", h_n.shape)
