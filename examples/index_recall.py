"""Seed 000: an LSTM reads a row of 10 digits and recalls the one at index 3.

Embedding(10, 128) → LSTM(128) → Linear(10) on the last hidden state, trained with Adam on
5000 random rows — the seed's data, with the model its notebook stops short of writing.

    python examples/index_recall.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn

rng = np.random.default_rng(0)
N, d, high, target_idx = 5000, 10, 10, 3


def gen_data(n):
    data = rng.integers(0, high, size=(n, d))
    return data, data[:, target_idx]


train_x, train_y = gen_data(N)
test_x, test_y = gen_data(N)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):  # [B, d] digits
        emb = jaxrnn.Embed(num_embeddings=high, features=128)(x)  # out-of-range ids raise
        _, (h_n, c_n) = jaxrnn.LSTM(hidden_size=128, batch_first=True)(emb)
        return nn.Dense(high)(h_n[-1])  # [B, 10]


model = Net()
params = model.init(jax.random.key(0), train_x[:2])["params"]
optimizer = optax.adam(1e-3)
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, x, y):
    def loss_fn(params):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


accuracy = jax.jit(lambda p, x, y: jnp.mean(model.apply({"params": p}, x).argmax(-1) == y))
for epoch in range(8):
    order = rng.permutation(N)
    for i in range(0, N - 63, 64):
        idx = order[i : i + 64]
        params, opt_state, loss = train_step(params, opt_state, train_x[idx], train_y[idx])
    print(
        f"epoch {epoch + 1}  loss {float(loss):.4f}  test accuracy "
        f"{float(accuracy(params, test_x, test_y)):.4f}"
    )

try:
    model.apply({"params": params}, np.array([[high] * d]))  # id 10 is out of range
except IndexError as e:  # jaxrnn.TokenIdError, like torch's IndexError
    print("out-of-range id:", e)
