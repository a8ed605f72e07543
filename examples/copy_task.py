"""Seed 003: an encoder–decoder RNN learns to copy sequences over the alphabet "abc".

The seed's hand-written cells: the encoder is a tanh RNN with a learnable initial state, the
decoder gets no input at all — just the encoder's last state — and unrolls 10 steps.

    python examples/copy_task.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.tasks.copy import SeqEncoderDecoder

alphabet = np.array(list("abc"))
n_sequences, sequence_length = 1000, 10
rng = np.random.default_rng(0)
isequences = rng.integers(0, len(alphabet), (n_sequences, sequence_length))
lengths = np.full(n_sequences, sequence_length)

model = SeqEncoderDecoder(vocab=len(alphabet), hidden_dim=20)  # the seed's (3, 20)
params = model.init(jax.random.key(0), isequences[:2], lengths[:2])["params"]
optimizer = optax.adam(1e-3)
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, x, n):
    def criterion(params):
        logits = model.apply({"params": params}, x, n)  # [B, T, 3]
        return optax.softmax_cross_entropy_with_integer_labels(logits, x).mean()

    loss, grads = jax.value_and_grad(criterion)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


for epoch in range(100):
    order = rng.permutation(n_sequences)
    for i in range(0, n_sequences, 32):
        idx = order[i : i + 32]
        params, opt_state, loss = train_step(params, opt_state, isequences[idx], lengths[idx])
    if epoch % 20 == 19:
        print(f"epoch {epoch + 1}  loss {float(loss):.4f}")

test_sequences = rng.integers(0, len(alphabet), (100, sequence_length))
test_output = model.apply({"params": params}, test_sequences, np.full(100, 10)).argmax(-1)
print("".join(alphabet[test_sequences[0]]), "->", "".join(alphabet[test_output[0]]))
print("token accuracy:", float(jnp.mean(test_output == test_sequences)))
