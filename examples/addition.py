"""Seed 003: learn addition on strings, "1234+567" → "1801".

The seed's SumLSTM decodes from zeros; this is the seq2seq version that reads back its own
previous digit (teacher forcing in training, greedy decoding at test), which learns the task.

    python examples/addition.py      # ~15 epochs of 18000 problems; several CPU minutes
"""

import jax
import numpy as np
import optax

from jaxrnn.tasks.addition import IN_ALPHABET, OUT_ALPHABET, Seq2Seq, decode_ids, encode_strings

rng = np.random.default_rng(0)
xs, ys = rng.integers(100, 10000, 20000), rng.integers(100, 10000, 20000)
x, x_len = encode_strings([f"{a}+{b}" for a, b in zip(xs, ys)], IN_ALPHABET, 10)
y, _ = encode_strings([str(a + b) for a, b in zip(xs, ys)], OUT_ALPHABET, 6)
train, test = slice(2000, None), slice(None, 2000)

model = Seq2Seq(n_inputs=12, n_outputs=11, n_hidden=128, n_layers=1, embedding_dim=32)
params = model.init(jax.random.key(0), x[:2], x_len[:2], y[:2])["params"]
optimizer = optax.adam(3e-3)
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, x, n, y):
    def loss_fn(params):
        logits = model.apply({"params": params}, x, n, y)  # teacher forcing
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


@jax.jit
def greedy(params, x, n):
    def step(carry, _):
        state, previous = carry
        logits, state = model.apply({"params": params}, state, previous, method=Seq2Seq.decode_step)
        return (state, logits.argmax(-1)), logits.argmax(-1)

    state = model.apply({"params": params}, x, n, method=Seq2Seq.encode)
    _, digits = jax.lax.scan(step, (state, np.full(len(x), model.n_outputs)), None, length=6)
    return digits.T


for epoch in range(15):
    order = rng.permutation(np.arange(20000)[train])
    for i in range(0, len(order) - 31, 32):
        idx = order[i : i + 32]
        params, opt_state, loss = train_step(params, opt_state, x[idx], x_len[idx], y[idx])
    answers = [
        decode_ids(p, OUT_ALPHABET) for p in np.asarray(greedy(params, x[test], x_len[test]))
    ]
    exact = np.mean([a == str(s) for a, s in zip(answers, xs[test] + ys[test])])
    print(f"epoch {epoch + 1}  loss {float(loss):.4f}  exact match {exact:.3f}")

for i in range(5):
    print(f"{decode_ids(x[i], IN_ALPHABET)} = {answers[i]}")
