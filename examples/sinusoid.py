"""Seed 003: a linear RNN predicts the next sample of a sinusoid, then generates one.

The seed's ``LinRNN`` (Linear in→hidden, hidden→hidden, hidden→out, a learnable initial state,
no nonlinearity) trained on the next-step MSE. Generation feeds the output back as the next
input after observing 10 true samples (one sample alone leaves the phase ambiguous: a sine
value could be rising or falling). With the seed's 1 hidden unit generation fails — a 1-D linear
system cannot oscillate; 2 units can hold a rotation.

    python examples/sinusoid.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.tasks.sinusoid import LinRNN, generate, generate_sin

rng = np.random.default_rng(0)
train_data = generate_sin(rng, 1000)[:, :, np.newaxis].astype("float32")  # [1000, 100, 1]
test_data = generate_sin(rng, 100)[:, :, np.newaxis].astype("float32")


def train(n_hidden, n_epochs=20, batch_size=16):
    model = LinRNN(n_input=1, n_hidden=n_hidden, n_output=1)  # associative=True: same numbers
    params = model.init(jax.random.key(0), train_data[:2])["params"]
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    def criterion(params, x):  # input x[:, :-1], target the next step x[:, 1:]
        return jnp.mean((model.apply({"params": params}, x[:, :-1]) - x[:, 1:]) ** 2)

    @jax.jit
    def train_step(params, opt_state, x):
        loss, grads = jax.value_and_grad(criterion)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    for _ in range(n_epochs):
        order = rng.permutation(len(train_data))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            batch = train_data[order[i : i + batch_size]]
            params, opt_state, loss = train_step(params, opt_state, batch)
    return model, params, float(jax.jit(criterion)(params, test_data))


observe = 10
for n_hidden in (1, 2):
    model, params, test_mse = train(n_hidden)
    generated = generate(model, params, test_data, observe)  # [100, 99, 1]: y_t predicts x_t+1
    generation_mse = float(jnp.mean((generated[:, observe - 1 :] - test_data[:, observe:]) ** 2))
    print(
        f"{n_hidden} hidden: next-step test MSE {test_mse:.4f}, "
        f"free-running generation MSE {generation_mse:.4f}"
    )
