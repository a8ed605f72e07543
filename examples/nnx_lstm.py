"""A jaxrnn.nnx LSTM learns the running sum of a variable-length sequence (flax.nnx + optax).

The model is written the NNX way, torch's constructors included: ``jaxrnn.nnx.LSTM(input_size,
hidden_size, ...)`` and ``nnx.Linear``, trained with ``nnx.Optimizer`` on packed sequences
(``lengths``: each sequence's outputs past its length are zero and ignored by the loss). At
the end the trained LSTM goes to torch with ``jaxrnn.nnx.to_torch`` when torch is installed.

    python examples/nnx_lstm.py
"""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxrnn

T, B, HIDDEN = 12, 32, 32
rng = np.random.default_rng(0)


def batch():
    """x [B, T, 1] uniform in [-1, 1]; lengths [B] in [1, T]; the target is the running sum."""
    x = rng.uniform(-1, 1, (B, T, 1)).astype("float32")
    lengths = rng.integers(1, T + 1, B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype("float32")  # [B, T]
    return jnp.asarray(x * mask[..., None]), jnp.asarray(lengths), jnp.asarray(mask)


class Summer(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.rnn = jaxrnn.nnx.LSTM(1, HIDDEN, num_layers=2, batch_first=True, rngs=rngs)
        self.head = nnx.Linear(HIDDEN, 1, rngs=rngs)

    def __call__(self, x, lengths):  # [B, T, 1] -> [B, T]
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(out)[..., 0]


def loss_fn(model, x, lengths, mask):
    target = jnp.cumsum(x[..., 0], axis=1)
    return jnp.sum(mask * (model(x, lengths) - target) ** 2) / jnp.sum(mask)


@nnx.jit
def train_step(model, optimizer, x, lengths, mask):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, lengths, mask)
    optimizer.update(model, grads)
    return loss


model = Summer(rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
test = batch()
print(f"test MSE before training: {loss_fn(model, *test):.4f}")
for step in range(1, 201):
    loss = train_step(model, optimizer, *batch())
    if step % 50 == 0:
        print(f"step {step}: train MSE {loss:.4f}")
print(f"test MSE after training: {loss_fn(model, *test):.4f}")

state = jaxrnn.params_to_state_dict(nnx.state(model, nnx.Param))  # torch's names: rnn.weight_ih_l0
print("parameters:", ", ".join(sorted(state)[:3]), "...")
try:
    torch_lstm = jaxrnn.nnx.to_torch(model.rnn)
    print("as torch:", torch_lstm)
except ImportError:
    print("(torch is not installed: skipping jaxrnn.nnx.to_torch)")
