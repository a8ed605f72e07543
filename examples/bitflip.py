"""Seed 002: an RNN learns to flip the bits of 8-bit unsigned integers, ``(~n) & 255``.

The seed's model: ``Embedding(2, x_dim)`` and a ``CustomRNNCell`` made of ``Input2Hidden``
(``h' = tanh(W [x; h] + b)``) and ``Hidden2Output`` (``y = tanh(V [x; h'] + c)``), trained
with cross-entropy over every bit. A quarter of the integers is never seen in training.

    python examples/bitflip.py
"""

import jax
import numpy as np
import optax

from jaxrnn.tasks.bitflip import Model, flip, from_bits, to_bits

N = 8  # bits
rng = np.random.default_rng(0)
ints = rng.permutation(2**N)
test_ints, train_ints = ints[: 2**N // 4], ints[2**N // 4 :]
word_ids, target_ids = to_bits(train_ints, N), to_bits(flip(train_ints, N), N)  # [192, 8]

model = Model(x_dim=16, concat_layers=True)  # concat_layers=False: the seed's "sum" mode
params = model.init(jax.random.key(0), word_ids[:2])["params"]
optimizer = optax.adam(0.01)
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, word_ids, target_ids):
    def loss_fn(params):  # the seed's Model.loss: CrossEntropyLoss over all bits
        outputs, hidden_states = model.apply({"params": params}, word_ids)  # [B, N, 2]
        return optax.softmax_cross_entropy_with_integer_labels(outputs, target_ids).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


@jax.jit
def predict(params, word_ids):  # the seed's Model.predict: argmax of each output
    return model.apply({"params": params}, word_ids)[0].argmax(-1)


for epoch in range(10):
    order = rng.permutation(len(train_ints))
    for i in range(0, len(order), 16):
        idx = order[i : i + 16]
        params, opt_state, loss = train_step(params, opt_state, word_ids[idx], target_ids[idx])
    print(f"epoch {epoch + 1:2d}  loss {float(loss):.4f}")

predicted = from_bits(predict(params, to_bits(test_ints, N)))
for n, p in zip(test_ints[:4], predicted[:4]):
    print(f"held out {n:08b} -> {p:08b}   (target {flip(n, N):08b})")
print(f"held-out integers flipped exactly: {np.mean(predicted == flip(test_ints, N)):.3f}")
