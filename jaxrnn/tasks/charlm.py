"""``charlm`` (seed 003): a character-level LSTM language model against order-k Markov baselines.

The model is the seed's ``PredictorLSTM``: ``Embedding(V, 64) → LSTM(512, 2 layers) →
Linear(V)``, trained with Adam (torch's default lr 1e-3) on next-character cross-entropy. Its
parameters are the seed's ``state_dict`` by name (``embeddings``, ``rnn.weight_ih_l0``, …,
``hidden_to_output.weight``), so a torch twin loads them directly.

Data (``TextDataset`` + ``ShiftByOne`` of the seed, with two changes):

* ids are ``index in the sorted alphabet + 1``, as the seed's; id 0 (``PAD``) is never a
  character: it pads the validation split's last window and its targets are not scored;
* the text is split **by position**: the first ``1 - val_fraction`` is train, the rest validation;
* the seed trains on windows at *every* offset (millions per epoch); here the windows are
  ``seq_length + 1`` characters at stride ``seq_length`` (``x = w[:-1]``, ``y = w[1:]``;
  consecutive windows share one character, so every character after the first is a target
  exactly once). On Shakespeare (4.83 M characters, 81 distinct) an epoch is 1,358 batches
  of 32 × 100. Each window starts from a zero state, in training and in validation.

Evaluation: after each epoch the engine reports ``valid_bits_per_char`` (= loss / ln 2, a mean
over windows, the last partial window weighted as a full one); the best epoch by it is kept
(``select``) and the final ``val_bits_per_char`` is exact per character over the whole
validation split. The Markov baselines (:mod:`jaxrnn.markov`, interpolated Witten–Bell, one
per order in ``markov_orders``) are fitted on the train text and score every validation
character, ``markov_val_bits_per_char = {order: bpc}`` plus the best order and its value.

The alphabet is part of the effective config: :meth:`CharLM.resolve` fills ``alphabet`` (the
sorted distinct characters of the corpus, after ``max_chars``), so it is saved in
``metrics.json`` and in every checkpoint, and ``jaxrnn sample`` needs nothing but the checkpoint.

Sampling (:func:`sample`) is O(n): the prompt goes through the LSTM once, then one
``lax.scan`` step per new character carries ``(h, c)`` and the previous character — all one
``jax.jit``. Each character is drawn by inverse CDF from one ``u ~ U[0, 1)``
(:func:`sampling_uniforms`), so a reference fed the same ``u`` picks the same characters::

    p = softmax(logits / T) with logits[PAD] = -inf;   c = cumsum(p);   c = c / c[-1]
    char = searchsorted(c, u, side="right")             # the first id with c[id] > u

``T = 0`` is greedy (argmax). An empty prompt means ``"\\n"`` (the start of a line), if the
alphabet has a newline; otherwise a prompt is required.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from .. import markov
from ..cells import torch_uniform
from ..checkpoints import read_checkpoint
from ..data import CORPORA, load_text
from ..embedding import check_ids, lookup
from ..files import save_figure
from ..layers import LSTM
from ..runs import config_from_meta
from ..task import Batch, Task, TaskConfig

PAD = 0  # never a character; ids are alphabet index + 1
# Measured (seed 0, Shakespeare, valid bits/char; best Markov order k=5: 2.375):
# fast: 2.339 after 1,000 steps, 2.280 after the epoch's 1,358 (about 10 min on 2 CPU cores);
# seed: 2.464 after epoch 1, 2.250 after epoch 2 (21 min).
PRESETS = {
    "fast": dict(epochs=1, learning_rate=3e-3, grad_clip=1.0),
    "seed": dict(epochs=2, learning_rate=1e-3, grad_clip=0.0),
}
LN2 = math.log(2)


@dataclasses.dataclass(frozen=True)
class CharLMConfig(TaskConfig):
    """Seed 003 (``PredictorLSTM(n_symbols, 512, 2, 64)``, ``TextDataset(seq_length=100)``,
    ``DataLoader(batch_size=32)``, ``torch.optim.Adam`` defaults). ``epochs`` is ours (the seed
    times 1,000 batches at a time): the fewest that beat the Markov baselines here."""

    corpus: str = "shakespeare"  # "shakespeare", "kjv" or the path of a UTF-8 .txt file
    max_chars: int | None = None  # keep only the first max_chars characters (small runs)
    alphabet: str | None = None  # None: the corpus's sorted characters (filled by resolve)
    val_fraction: float = 0.1  # the last 10% of the text
    seq_length: int = 100
    embedding_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    # "fast" (default): one epoch at lr 3e-3 with clipping 1.0 — the seed's model, under the
    # best Markov order in minutes; "seed": the seed's Adam at 1e-3, unclipped, 2 epochs. The
    # fields left None take the preset's values (PRESETS).
    preset: Literal["fast", "seed"] = "fast"
    epochs: int | None = None
    batch_size: int = 32
    learning_rate: float | None = None
    grad_clip: float | None = None
    prompt: str = ""  # samples start after it; "" = a newline
    temperature: float = 1.0
    sample_length: int = 1000  # the final sample
    report_length: int = 200  # the sample printed after each epoch
    markov_orders: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)


# ----------------------------------------------------------------------------- text → ids


def corpus_text(corpus: str, max_chars: int | None = None) -> str:
    """The corpus as one string (``load_text``), cut to ``max_chars``; cached per process
    (a file's cache entry is keyed by its modification time too)."""
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be >= 1 or None, got {max_chars}")
    path = pathlib.Path(corpus).expanduser()
    stamp = path.stat().st_mtime_ns if corpus not in CORPORA and path.is_file() else None
    return _corpus_text(corpus, max_chars, stamp)


@functools.lru_cache(maxsize=4)
def _corpus_text(corpus: str, max_chars: int | None, stamp: int | None) -> str:
    text = load_text(corpus)
    return text if max_chars is None else text[:max_chars]


def encode(text: str, alphabet: str, name: str = "text") -> np.ndarray:
    """Characters → ``[N]`` int32 ids (index in ``alphabet`` + 1); unknown characters raise."""
    return (markov.encode(text, alphabet, name) + 1).astype(np.int32)


def decode(ids, alphabet: str) -> str:
    """``[N]`` ids → characters (ids are alphabet index + 1; ``PAD`` is not allowed)."""
    return "".join(alphabet[i - 1] for i in np.asarray(ids).tolist())


def split_text(config: CharLMConfig) -> tuple[str, str]:
    """(train, validation) text: the first ``1 - val_fraction`` of the corpus, and the rest."""
    if not 0 < config.val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {config.val_fraction}")
    text = corpus_text(config.corpus, config.max_chars)
    n_valid = int(round(len(text) * config.val_fraction))
    train, valid = text[: len(text) - n_valid], text[len(text) - n_valid :]
    need = config.seq_length + 1
    if min(len(train), len(valid)) < need:
        raise ValueError(
            f"corpus {config.corpus!r} has {len(text)} characters: {len(train)} train and "
            f"{len(valid)} validation with val_fraction={config.val_fraction}; each split needs "
            f"at least seq_length + 1 = {need} (raise max_chars or lower seq_length)"
        )
    return train, valid


def windows(ids: np.ndarray, seq_length: int, pad: bool = False) -> Batch:
    """``[N]`` ids → ``x, y: [W, seq_length]`` with ``y`` one character ahead of ``x``.

    Windows start every ``seq_length`` characters. Without ``pad`` a last partial window is
    dropped; with it, it is kept and filled with ``PAD`` (input and target).
    """
    n_targets = len(ids) - 1
    W = -(-n_targets // seq_length) if pad else n_targets // seq_length
    flat = np.full(W * seq_length + 1, PAD, np.int32)
    used = min(len(ids), len(flat))
    flat[:used] = ids[:used]
    return {"x": flat[:-1].reshape(W, seq_length), "y": flat[1:].reshape(W, seq_length)}


# ----------------------------------------------------------------------------- the model


class PredictorLSTM(nn.Module):
    """The seed's PredictorLSTM: ``embeddings[x] → LSTM (batch_first) → hidden_to_output``.

    ``embeddings [V, E]`` is a bare parameter drawn ``N(0, 1) · 0.01`` as in the seed;
    ``hidden_to_output`` has torch Linear's init, ``U(-1/√H, 1/√H)``.
    """

    n_symbols: int  # V
    n_hidden: int  # H
    n_layers: int = 1  # L
    embedding_size: int | None = None  # E; None = V, as in the seed

    def setup(self):
        V, E = self.n_symbols, self.embedding_size or self.n_symbols
        init = lambda key, shape: 0.01 * jax.random.normal(key, shape)  # noqa: E731
        self.embeddings = self.param("embeddings", init, (V, E))
        self.rnn = LSTM(hidden_size=self.n_hidden, num_layers=self.n_layers, batch_first=True)
        bound = torch_uniform(1.0 / math.sqrt(self.n_hidden))
        self.hidden_to_output = nn.Dense(V, kernel_init=bound, bias_init=bound)

    def __call__(self, x, hx=None):
        """``x [B, T]`` ids, ``hx = (h, c)`` each ``[L, B, H]`` (None: zeros) →
        ``logits [B, T, V]``, ``(h, c)``."""
        check_ids(x, self.n_symbols, name="x")
        out, state = self.rnn(lookup(self.embeddings, jnp.asarray(x)), hx)  # [B, T, H]
        return self.hidden_to_output(out), state


# ----------------------------------------------------------------------------- sampling


def next_id(logits, u, temperature):
    """One id from ``logits [V]`` by inverse CDF at ``u ∈ [0, 1)``; ``temperature = 0``: argmax.

    ``PAD`` has probability 0. ``c / c[-1]`` makes the last cumulative value exactly 1, so
    ``u < 1`` always lands on an id, and an id of probability 0 is never picked.
    """
    logits = logits.at[PAD].set(-jnp.inf)
    p = jax.nn.softmax(logits / jnp.where(temperature > 0, temperature, 1.0))
    c = jnp.cumsum(p)
    drawn = jnp.searchsorted(c / c[-1], u, side="right")
    drawn = jnp.clip(drawn, PAD + 1, logits.shape[-1] - 1)
    return jnp.where(temperature > 0, drawn, jnp.argmax(logits)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="model")
def sample_ids(model: PredictorLSTM, params, prompt, uniforms, temperature):
    """``prompt [P]`` ids (P ≥ 1), ``uniforms [N]`` → ``[N]`` new ids, O(P + N) LSTM steps.

    The prompt but its last character runs through the LSTM in one call; then each scan step
    feeds the previous character with the carried ``(h, c)`` and draws the next one.
    """
    zeros = jnp.zeros((model.n_layers, 1, model.n_hidden), params["embeddings"].dtype)
    state = (zeros, zeros)
    if prompt.shape[0] > 1:
        _, state = model.apply({"params": params}, prompt[None, :-1])

    def step(carry, u):
        state, previous = carry
        logits, state = model.apply({"params": params}, previous[None, None], state)
        char = next_id(logits[0, -1], u, temperature)
        return (state, char), char

    _, chars = jax.lax.scan(step, (state, prompt[-1]), uniforms)
    return chars


def sampling_uniforms(key, length: int):
    """The ``[length]`` ``U[0, 1)`` draws that :func:`sample` uses for ``key``."""
    return jax.random.uniform(key, (length,))


def prompt_ids(prompt: str, alphabet: str) -> np.ndarray:
    """``[P ≥ 1]`` ids of a prompt; ``""`` means a newline (if the alphabet has one)."""
    if not prompt:
        if "\n" not in alphabet:
            raise ValueError(
                "prompt is empty and the alphabet has no newline to start from; "
                "give a prompt of at least one character"
            )
        prompt = "\n"
    return encode(prompt, alphabet, name="prompt")


def sample(
    model, params, alphabet: str, prompt: str, length: int, temperature: float = 1.0, *, key
) -> str:
    """``length`` new characters after ``prompt`` (not included), drawn with ``key``."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    ids = prompt_ids(prompt, alphabet)
    chars = sample_ids(
        model,
        params,
        jnp.asarray(ids),
        sampling_uniforms(key, int(length)),
        jnp.float32(temperature),
    )
    return decode(chars, alphabet)


def load_model(checkpoint) -> tuple[PredictorLSTM, dict, CharLMConfig]:
    """``(model, params, config)`` of a ``charlm`` checkpoint (a run directory or a file): the
    selected epoch's params when the checkpoint holds them, else the last epoch's."""
    payload, meta = read_checkpoint(pathlib.Path(checkpoint))
    if meta.get("task") != CharLM.name:
        raise ValueError(
            f"{checkpoint} holds a {meta.get('task')!r} checkpoint; sampling needs "
            f"a {CharLM.name!r} one (jaxrnn train {CharLM.name})"
        )
    config = config_from_meta(CharLM, meta)
    if not config.alphabet:
        raise ValueError(f"{checkpoint}: the checkpoint's config has no alphabet")
    model = CharLM().model(config)
    like = jax.eval_shape(model.init, jax.random.key(0), np.ones((1, 1), np.int32))["params"]
    raw = payload.get("best") or payload["state"]["params"]
    if jax.tree.map(np.shape, like) != jax.tree.map(np.shape, raw):
        raise ValueError(f"{checkpoint}: parameter shapes do not match its config")
    return model, serialization.from_state_dict(like, raw), config


# ----------------------------------------------------------------------------- the task


class CharLM(Task):
    name = "charlm"
    Config = CharLMConfig
    metric = "valid_bits_per_char"
    description = "seed 003: character-level LSTM language model vs order-k Markov baselines"
    select, select_mode = "valid_bits_per_char", "min"  # evaluate the best epoch's params

    def resolve(self, config):
        if config.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {config.preset!r}")
        preset = PRESETS[config.preset]
        config = config.replace(**{k: v for k, v in preset.items() if getattr(config, k) is None})
        if config.alphabet is None:
            text = corpus_text(config.corpus, config.max_chars)
            config = config.replace(alphabet="".join(sorted(set(text))))
        if len(set(config.alphabet)) != len(config.alphabet) or not config.alphabet:
            raise ValueError(f"alphabet must be distinct characters, got {config.alphabet!r}")
        return config

    def data(self, config, rng):
        train, valid = split_text(config)
        return {
            "train": windows(encode(train, config.alphabet, "train text"), config.seq_length),
            "valid": windows(
                encode(valid, config.alphabet, "validation text"), config.seq_length, pad=True
            ),
        }

    def check_data(self, data, config):
        for name, split in data.items():
            check_ids(split["x"], len(config.alphabet) + 1, name=f"{name} x")
            check_ids(split["y"], len(config.alphabet) + 1, name=f"{name} y")

    def init(self, model, key, batch):
        # one compiled program: eager init compiles each random draw on its own (slower)
        return jax.jit(model.init)(key, batch["x"])["params"]

    def model(self, config):
        return PredictorLSTM(
            n_symbols=len(config.alphabet) + 1,
            n_hidden=config.hidden_size,
            n_layers=config.num_layers,
            embedding_size=config.embedding_dim,
        )

    def loss(self, model, params, batch, *, key, train):
        logits, _ = model.apply({"params": params}, batch["x"])  # [B, T, V]
        y = batch["y"]
        scored = y != PAD
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, y)  # [B, T]
        loss = jnp.sum(nats * scored) / jnp.maximum(jnp.sum(scored), 1)
        accuracy = jnp.sum((logits.argmax(-1) == y) & scored) / jnp.maximum(jnp.sum(scored), 1)
        return loss, {"bits_per_char": loss / LN2, "accuracy": accuracy}

    def evaluate(self, steps, params, data, config):
        nats, chars, right = self.score(steps, params, data["valid"], config)
        result = {
            "val_bits_per_char": nats / chars / LN2,
            "val_loss": nats / chars,
            "val_accuracy": right / chars,
            "val_chars": chars,
            "alphabet_size": len(config.alphabet),
        }
        if config.markov_orders:
            result.update(self.markov_baselines(config))
            result["beats_markov"] = (
                result["val_bits_per_char"] < result["markov_best_val_bits_per_char"]
            )
        text = sample(
            steps.model,
            params,
            config.alphabet,
            config.prompt,
            config.sample_length,
            config.temperature,
            key=jax.random.key(0),
        )
        result["sample"] = config.prompt + text
        return result

    def score(self, steps, params, split: Batch, config) -> tuple[float, int, int]:
        """Total nats, scored characters and right top-1 guesses over a whole split (exact per
        character, unlike the per-epoch mean, which weights every window alike)."""
        nats = right = chars = 0.0
        for batch in self.batches(split, config, None):
            n = int(np.sum(batch["y"] != PAD))
            metrics = steps.eval(params, batch)
            nats += float(metrics["loss"]) * n
            right += float(metrics["accuracy"]) * n
            chars += n
        return nats, int(chars), int(round(right))

    @staticmethod
    def markov_baselines(config) -> dict:
        """Witten–Bell Markov models fitted on the train text, scored on the validation text."""
        train, valid = split_text(config)
        model = markov.fit(train, max(config.markov_orders), alphabet=config.alphabet)
        bpc = markov.bits_per_char(model, valid, config.markov_orders)
        best = min(bpc, key=bpc.get)
        return {
            "markov_val_bits_per_char": {str(k): v for k, v in bpc.items()},
            "markov_best_order": best,
            "markov_best_val_bits_per_char": bpc[best],
            # the seed's generate_from_markov, from the best order (start: the prompt or "\n")
            "markov_sample": markov.sample(
                model, config.report_length, seed=0, start=config.prompt or "\n", order=best
            ),
        }

    def epoch_report(self, steps, params, data, config, epoch):
        key = jax.random.fold_in(jax.random.key(0), epoch)
        text = sample(
            steps.model,
            params,
            config.alphabet,
            config.prompt,
            config.report_length,
            config.temperature,
            key=key,
        )
        return f"sample (T={config.temperature}):\n{config.prompt}{text}"

    def plot(self, steps, params, data, config, out_dir):
        """``bpc.png``: LSTM bits per character per epoch against each Markov order's (lines);
        ``sample.txt``: the final sample. Reads the run's ``metrics.json``."""
        out_dir = pathlib.Path(out_dir)
        path = out_dir / "metrics.json"
        if not path.exists():
            return []
        record = json.loads(path.read_text())
        written = []
        if "sample" in record["final"]:
            (out_dir / "sample.txt").write_text(record["final"]["sample"])
            written.append(str(out_dir / "sample.txt"))
        return written + plot_bpc(record["history"], record["final"], out_dir / "bpc.png")


def plot_bpc(history: list[dict], final: dict, path: pathlib.Path) -> list[str]:
    """LSTM train/validation bits per character per epoch, Markov orders as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (MaxNLocator)

    if not history:
        return []
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (("train_bits_per_char", "--"), ("valid_bits_per_char", "o-")):
        if key in history[-1]:
            ax.plot(epochs, [row.get(key, np.nan) for row in history], style, label=f"LSTM {key}")
    markov_bpc = final.get("markov_val_bits_per_char", {})
    best = str(final.get("markov_best_order"))
    for k, bpc in markov_bpc.items():
        if k == best:
            ax.axhline(bpc, color="C3", lw=1.5, ls=":", label=f"Markov k={k} (best), validation")
        else:
            ax.axhline(bpc, color="0.6", lw=0.8, ls=":")
            ax.annotate(f"k={k}", (epochs[-1], bpc), fontsize=7, va="bottom", ha="right")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.set_title("charlm: LSTM vs Witten–Bell Markov baselines")
    ax.legend(loc="upper right", fontsize=8)
    return [save_figure(fig, path)]
