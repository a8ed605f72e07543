"""Seed 001, sequence mode: teach an RNN(5 → 5) to turn "hihell" into "ihello".

The seed's ``Model2`` — one ``torch.nn.RNN`` over the whole one-hot sequence, cross-entropy
against the shifted string, Adam(lr=0.1), 100 epochs — written functionally with jaxrnn.

    python examples/hihello.py
"""

import jax
import jax.numpy as jnp
import optax

import jaxrnn

idx2char = ["h", "i", "e", "l", "o"]
x_data = [0, 1, 0, 2, 3, 3]  # "hihell"
y_data = [1, 0, 2, 3, 3, 4]  # "ihello"

inputs = jax.nn.one_hot(jnp.array(x_data), len(idx2char))  # [T=6, I=5], unbatched
labels = jnp.array(y_data)  # [T]

model = jaxrnn.RNN(hidden_size=len(idx2char))  # the seed: RNN(input 5, hidden 5), tanh
params = model.init(jax.random.key(0), inputs)["params"]
optimizer = optax.adam(0.1)
opt_state = optimizer.init(params)


def loss_fn(params):
    out, _ = model.apply({"params": params}, inputs)  # out: [T, 5], used as logits
    return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean(), out


@jax.jit
def train_step(params, opt_state):
    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, out.argmax(-1)


for epoch in range(100):
    params, opt_state, loss, predicted = train_step(params, opt_state)
    if epoch % 10 == 9 or epoch == 0:
        text = "".join(idx2char[int(i)] for i in predicted)
        print(f"epoch {epoch + 1:3d}  loss {float(loss):.4f}  predicted: {text}")

final = "".join(idx2char[int(i)] for i in loss_fn(params)[1].argmax(-1))
print(f"final prediction: {final!r} (target 'ihello')")
