"""Seed 003: a character-level LSTM predicts the next character, then writes; a Markov baseline.

The seed's ``PredictorLSTM`` (Embedding 64 → LSTM 512 × 2 → Linear) on Shakespeare's plays
(the seed used Molière: pass any UTF-8 .txt path instead), trained on windows of 100
characters for 1,000 batches of 32 as the seed's ``train_epoch(..., max_batches=1000)``, then
sampled with an O(n) ``lax.scan`` that carries ``(h, c)``. Goldberg's order-k Markov model
(Witten–Bell smoothed) is the baseline, in bits per character on the last 10% of the text.

    python examples/charlm.py                   # ~10 CPU minutes (1,000 steps of 2×LSTM 512)
    python examples/charlm.py moliere.txt 200   # another text, fewer steps
"""

import math
import sys

import jax
import numpy as np
import optax

from jaxrnn import markov
from jaxrnn.data import load_text
from jaxrnn.tasks.charlm import PredictorLSTM, encode, sample, windows

content = load_text(sys.argv[1] if len(sys.argv) > 1 else "shakespeare")
max_batches = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
alphabet = "".join(sorted(set(content)))  # the seed's np.unique(list(content))
split = len(content) - len(content) // 10  # the last 10% is held out
train_text, valid_text = content[:split], content[split:]
train_data = windows(encode(train_text, alphabet), 100)  # x, y: [N, 100], y one character ahead
valid_data = windows(encode(valid_text, alphabet), 100)

plstm = PredictorLSTM(n_symbols=len(alphabet) + 1, n_hidden=512, n_layers=2, embedding_size=64)
params = plstm.init(jax.random.key(0), train_data["x"][:2])["params"]
optimizer = optax.adam(1e-3)  # torch.optim.Adam's defaults
opt_state = optimizer.init(params)


def criterion(params, x, y):
    logits, _ = plstm.apply({"params": params}, x)  # [B, T, V]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@jax.jit
def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(criterion)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


rng = np.random.default_rng(0)
for i in range(max_batches):
    idx = rng.choice(len(train_data["x"]), 32, replace=False)  # DataLoader(shuffle=True)
    params, opt_state, loss = train_step(
        params, opt_state, train_data["x"][idx], train_data["y"][idx]
    )
    if i % 100 == 0:
        print(f"batch {i}: {float(loss) / math.log(2):.3f} bits per character")

valid_criterion = jax.jit(criterion)
n = len(valid_data["x"]) // 32 * 32
valid_loss = np.mean(
    [
        float(valid_criterion(params, valid_data["x"][i : i + 32], valid_data["y"][i : i + 32]))
        for i in range(0, n, 32)
    ]
)
print(f"LSTM: {valid_loss / math.log(2):.3f} bits per character on the held-out text")
print(sample(plstm, params, alphabet, "\n", 500, temperature=0.8, key=jax.random.key(1)))

model = markov.fit(train_text, order=6, alphabet=alphabet)
for k, bpc in markov.bits_per_char(model, valid_text).items():
    print(f"Markov order {k}: {bpc:.3f} bits per character")
print(markov.sample(model, 500, seed=0, start="\n"))
