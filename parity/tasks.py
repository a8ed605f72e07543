"""Parity of whole task models: each jaxrnn task model against its seed's PyTorch model.

``MODELS`` is the registry: one :class:`TaskModel` per row — a jaxrnn task and config, the
torch model of ``parity/models.py`` that the seed wrote, and the loss the seed trains it with.
Adding a model is one entry. ``run_task_model(entry, dtype)`` builds the torch model (torch's
own initialisation, seeded, with every 1-D parameter — biases, learnable initial states —
redrawn from U(-0.5, 0.5) so none is near zero), moves its ``state_dict`` into the jaxrnn
task model with ``jaxrnn.state_dict_to_params`` (by name, nothing model-specific), and
compares, with the error ``max|Δ| / max(1, max|ref|)`` of ``jaxrnn.verify``:

  names      ``params_to_state_dict(jaxrnn params)`` has exactly the torch keys and shapes
             (0 when equal, inf otherwise)
  roundtrip  torch state_dict → jaxrnn params → state_dict, bit-exact (must be exactly 0)
  out        the model outputs and the loss on one batch: jaxrnn's ``model.apply`` and
             ``task.loss(model, params, batch, key=..., train=True)`` vs the torch model and
             the seed's criterion written in torch
  grads      d loss / d every parameter, by torch name
  adam20     20 steps of torch.optim.Adam vs optax.adam (``checks.ADAM``: lr 1e-2, betas
             (0.9, 0.99), eps 1e-2 — see checks.py for the eps), each step on a different
             batch, the same in both: each step's loss and the parameters after every step.
             Gradients are clipped where the task's config clips them, as the engine does
             (``grad_clip``: copy's variable-length variants, 1.0; not in the seed):
             ``torch.nn.utils.clip_grad_norm_`` before each torch step, the same formula
             (``jaxrnn.engine.clip_grad_norm``, the engine's) chained before optax.adam
  decode     what the task evaluates beyond the loss, at the starting weights: free-running
             generation (sinusoid: the generated values) or greedy decoding (copy, addition:
             the tokens, which must be equal — inf if any differs — ``Addition.predict``'s
             ``lax.scan`` for seq2seq against a Python loop feeding back torch's argmax), or
             sampling (charlm: ``charlm.sample_ids`` against the seed's loop, which feeds the
             whole prefix again for each character, both drawing by inverse CDF from the same
             ``charlm.sampling_uniforms``; the characters must be equal)

out, grads and adam20 are one ``jaxrnn.verify`` call — the port check users run on their own
models — with the task's loss returned among the outputs on both sides (:func:`flax_apply`,
:func:`torch_apply`); each is the worst of its verify rows. decode runs on the starting
weights (verify trains copies).

``ROWS`` is the table of ``python -m parity --only tasks``: ``MODELS``, then :class:`MarkovRow`
(charlm's Markov baseline: the seed's dict version against ``jaxrnn.markov``; float64, ``out``
only). charlm and sentiment read no corpus: their rows make text from a few words in memory.

Tolerances are ``jaxrnn.verify.TOLERANCES`` for every check (float64 1e-10, float32 2e-5;
adam20 too, below the 1e-8 asked of float64 training); NaN fails. The run is deterministic:
the torch weights and the batches come from generators seeded by the row's id.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import jaxrnn
from jaxrnn import markov
from jaxrnn.task import Batch, Task, TaskConfig
from jaxrnn.tasks import addition, charlm, get_task, hihello, sentiment, sinusoid
from jaxrnn.verify import TOLERANCES, worst

from . import markov_seed, models
from .cases import DTYPE_TAG, DTYPES
from .checks import ADAM, seed_of

CHECKS = ("names", "roundtrip", "out", "grads", "adam20", "decode")
EXACT = ("names", "roundtrip")
# out, grads and adam20: the worst jaxrnn.verify row of these kinds (Report.worst)
VERIFY_CHECKS = {"out": ("output", "loss"), "grads": ("grad",), "adam20": ("step",)}
ADAM_STEPS = 20
BATCH = 8
STATE_SCALE = 0.5  # 1-D parameters (biases, initial states) ~ U(-0.5, 0.5)


def tolerance(check: str, dtype: str) -> float:
    return 0.0 if check in EXACT else TOLERANCES[dtype]


def passed(err: float, check: str, dtype: str) -> bool:
    """``err ≤ tolerance``; NaN never passes."""
    return bool(err <= tolerance(check, dtype))


class TaskReport(NamedTuple):
    """``errors[check]``: the worst error of that check (no ``decode`` entry for a model
    without one); ``notes[check]``: where it is."""

    errors: dict[str, float]
    notes: dict[str, str]

    def failures(self, dtype: str) -> list[str]:
        return [c for c in CHECKS if c in self.errors and not passed(self.errors[c], c, dtype)]


# ----------------------------------------------------------------------------- registry

TorchLoss = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, torch.Tensor]]]
JaxOutputs = Callable[[Task, Any, Any, Batch, TaskConfig], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """One row: a jaxrnn task model and its seed's torch model.

    * ``task``, ``config``: the jaxrnn task and its ``--set`` overrides (small data sizes);
    * ``torch_model(config) -> nn.Module``: the reference, from ``parity/models.py``;
    * ``torch_loss(module, batch) -> (loss, {name: output})``: the seed's criterion on the
      reference; ``batch`` holds torch tensors (ints int64, floats in the run's dtype);
    * ``outputs``: the names of jaxrnn's ``model.apply`` outputs, or ``jax_outputs(task,
      model, params, batch, config) -> {name: array}`` where a call needs more than
      ``task.model_inputs(batch)``;
    * ``batches(task, config, rng, n) -> [Batch]``: numpy batches in the task's format
      (default: shuffled rows of the task's own train split);
    * ``decode``: a :class:`Decode`, or None.
    """

    id: str
    task: str
    config: dict
    torch_model: Callable[[TaskConfig], torch.nn.Module]
    torch_loss: TorchLoss
    outputs: tuple[str, ...] = ("logits",)
    jax_outputs: JaxOutputs | None = None
    batches: Callable[..., list[Batch]] | None = None
    decode: Decode | None = None


@dataclasses.dataclass(frozen=True)
class Decode:
    """``torch(module, batch, config)`` and ``jax(task, model, params, batch, config,
    outputs)`` (``outputs``: the entry's jaxrnn outputs of that batch), each returning
    ``{name: array}``; ``"tokens"`` must be equal, the rest are compared with ``rel_err``."""

    torch: Callable
    jax: Callable


def task_id(entry: TaskModel, dtype: str) -> str:
    return f"{entry.id}-{DTYPE_TAG[dtype]}"


# ----------------------------------------------------------------------------- batches


def train_batches(task: Task, config: TaskConfig, rng: np.random.Generator, n: int) -> list:
    """``n`` batches of ``BATCH`` rows drawn without replacement from the task's train split."""
    train = task.data(config, rng)["train"]
    size = len(next(iter(train.values())))
    if size < n * BATCH:
        raise ValueError(f"{task.name}: {size} train rows, need {n * BATCH}; raise the config's n")
    order = rng.permutation(size)[: n * BATCH].reshape(n, BATCH)
    return [{k: v[rows] for k, v in train.items()} for rows in order]


def hihello_batches(task, config, rng, n: int) -> list:
    """The seed's "hihell" → "ihello" as row 0, then two random 6-character rows."""

    def one():
        x = rng.integers(0, len(hihello.IDX2CHAR), (3, len(hihello.X_DATA)))
        y = rng.integers(0, len(hihello.IDX2CHAR), (3, len(hihello.Y_DATA)))
        x[0], y[0] = hihello.X_DATA, hihello.Y_DATA
        return {"x": x.astype(np.int32), "y": y.astype(np.int32)}

    return [one() for _ in range(n)]


# No corpus is read or fetched: charlm and sentiment draw their text from these words.
WORDS = "the cat sat on a mat and a dog ran to his red hat while we sing".split()
TEXT_ALPHABET = "".join(sorted(set("".join(WORDS)) | set(" .\n")))
REVIEW_WORDS = "great fun moving superb dull awful boring mess the film a plot is and cast".split()


def words_text(rng: np.random.Generator, n: int) -> str:
    """``n`` characters: lines of 3–7 random ``WORDS`` ending in ``.``."""
    lines, size = [], 0
    while size < n:
        lines.append(" ".join(rng.choice(WORDS, rng.integers(3, 8))) + ".\n")
        size += len(lines[-1])
    return "".join(lines)[:n]


def charlm_batches(task, config, rng, n: int) -> list:
    """``n`` batches of ``BATCH`` training windows (``charlm.windows``) of an in-memory text,
    shuffled; batch 0's last row is a partial window padded with ``PAD`` instead, like the
    validation split's last one (its ``PAD`` targets are not scored)."""
    ids = charlm.encode(words_text(rng, n * BATCH * config.seq_length + 1), config.alphabet)
    train = charlm.windows(ids, config.seq_length)
    order = rng.permutation(len(train["x"])).reshape(n, BATCH)
    batches = [{k: v[rows] for k, v in train.items()} for rows in order]
    tail = charlm.windows(ids[: config.seq_length // 2 + 1], config.seq_length, pad=True)
    for k in ("x", "y"):
        batches[0][k][-1] = tail[k][0]
    return batches


def sentiment_batches(task, config, rng, n: int) -> list:
    """``n`` batches from ``task.batches`` (per-example mode: one review each, else
    ``batch_size``) of random reviews of 1–12 ``REVIEW_WORDS``, through the task's own
    tokenizer, vocabulary (``vocab_size`` of them: the rest are out of vocabulary) and padding
    (one length bucket: one shape to compile)."""
    size = n * (1 if config.mode == "per-example" else config.batch_size)
    texts = [" ".join(rng.choice(REVIEW_WORDS, rng.integers(1, 13))) for _ in range(size)]
    reviews = [sentiment.tokenize(text, config.tokenizer) for text in texts]
    vocab = sentiment.build_vocab(reviews, config.vocab_size)
    ids = [sentiment.encode(review, vocab, config.vocab_size) for review in reviews]
    longest = max(len(r) for r in ids)
    bounds = sentiment.bucket_bounds(np.array([len(r) for r in ids]), 1, longest)
    split = sentiment.encode_split(ids, rng.integers(0, 2, size), bounds)
    batches = list(task.batches(split, config, rng))
    assert len(batches) == n, len(batches)
    return batches


def to_torch(batch: Batch, dtype: str) -> dict:
    return {
        k: torch.from_numpy(np.array(v, np.int64 if v.dtype.kind in "iu" else dtype))
        for k, v in batch.items()
    }


def to_dtype(batch: Batch, dtype: str) -> Batch:
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in batch.items()}


def one_hot(ids, n: int, dtype) -> torch.Tensor:
    """The seeds' one-hot inputs: ``[...]`` ids → ``[..., n]`` of ``dtype``."""
    return F.one_hot(ids, n).to(dtype)


# ----------------------------------------------------------------------------- torch losses


def _dtype(module: torch.nn.Module):
    return next(module.parameters()).dtype


def index_recall_loss(module, b):
    logits = module(b["x"])
    return F.cross_entropy(logits, b["y"]), {"logits": logits}


def hihello_sequence_loss(module, b):  # Model2: criterion(outputs, labels) on [B·T, 5]
    n = module.input_size
    outputs = module(one_hot(b["x"], n, dtype=_dtype(module)))
    loss = torch.nn.CrossEntropyLoss()(outputs, b["y"].reshape(-1))
    return loss, {"logits": outputs.reshape(*b["x"].shape, n)}


def hihello_step_loss(module, b):  # Model: the seed's loop, loss += criterion per step
    loss, outputs = models.hihello_step_loss(
        module, one_hot(b["x"], module.input_size, dtype=_dtype(module)), b["y"]
    )
    return loss, {"logits": outputs}


def bitflip_loss(module, b):
    outputs, hidden_states = module(b["x"])
    return module.loss(b["x"], b["y"]), {"outputs": outputs, "hidden_states": hidden_states}


def sinusoid_loss(module, b):  # MSE of the next-step prediction
    x = b["x"]
    y = module(x[:, :-1])
    return torch.nn.MSELoss()(y, x[:, 1:]), {"y": y}


def copy_loss(module, b):  # fixed and padded variants: CE over every position
    p = module(one_hot(b["x"], module.input_dim, dtype=_dtype(module)))
    return models.sequence_loss(p, b["y"]), {"logits": p}


def copy_masked_loss(module, b):  # train_epoch_var_smart: encoder state at the stop symbol
    p = module(one_hot(b["x"], module.input_dim, dtype=_dtype(module)), b["lengths"])
    return models.masked_loss(p, b["y"], b["lengths"]), {"logits": p}


def sum_loss(module, b):  # train_epoch1: criterion(p[:, :y width], y)
    p = module(one_hot(b["x"], module.n_inputs, dtype=_dtype(module)))
    return models.sequence_loss(p[:, : b["y"].shape[1]], b["y"]), {"logits": p}


def seq2seq_loss(module, b):  # teacher forcing, CE over every answer position
    p = module(b["x"], b["lengths"], b["y"])
    return models.sequence_loss(p, b["y"]), {"logits": p}


def charlm_loss(module, b):  # the seed's criterion; targets PAD (a padded window) unscored
    p = module(b["x"])
    loss = torch.nn.CrossEntropyLoss(ignore_index=charlm.PAD)(p.permute(0, 2, 1), b["y"])
    return loss, {"logits": p}


def _one_by_one(module, b):  # the seed's do_rnn on each review, unpadded
    return torch.stack([module.do_rnn(x[: int(n)]) for x, n in zip(b["x"], b["lengths"])])


def sentiment_loss(module, b):
    """Batched: one packed batch, BCE on the logit. The logits of the seed's one review at a
    time are a second reference for jaxrnn's (padded, masked) batch."""
    z = module(b["x"], b["lengths"])
    loss = F.binary_cross_entropy_with_logits(z, b["y"])
    return loss, {"logits": z, "logits one review at a time": _one_by_one(module, b).detach()}


def sentiment_per_example_loss(module, b):  # per-example mode: batches of one review
    z = _one_by_one(module, b)
    return F.binary_cross_entropy_with_logits(z, b["y"]), {"logits": z}


# ----------------------------------------------------------------------------- jax outputs


@functools.cache  # one function per names: make_step's cache key
def apply_outputs(names: tuple[str, ...]) -> JaxOutputs:
    """``model.apply`` on ``task.model_inputs(batch)``, its output(s) named ``names``."""

    def outputs(task, model, params, batch, config):
        out = model.apply({"params": params}, **task.model_inputs(batch))
        return dict(zip(names, out if isinstance(out, tuple) else (out,)))

    return outputs


def sentiment_outputs(task, model, params, batch, config):  # see sentiment_loss
    z = model.apply({"params": params}, batch["x"], batch["lengths"])
    return {"logits": z, "logits one review at a time": z}


def sinusoid_outputs(task, model, params, batch, config):
    return {"y": model.apply({"params": params}, batch["x"][:, :-1])}


def sum_outputs(task, model, params, batch, config):
    return {"logits": model.apply({"params": params}, batch["x"])}


def seq2seq_outputs(task, model, params, batch, config):
    return {"logits": model.apply({"params": params}, batch["x"], batch["lengths"], batch["y"])}


# ----------------------------------------------------------------------------- decoding


def sinusoid_generate_torch(module, b, config):
    return {"generated": models.generate(module, b["x"], config.observe)}


def sinusoid_generate_jax(task, model, params, batch, config, outputs):
    return {"generated": sinusoid.generate(model, params, batch["x"], config.observe)}


def copy_greedy_torch(module, b, config):
    x = one_hot(b["x"], module.input_dim, dtype=_dtype(module))
    logits = module(x, b["lengths"]) if config.variant == "masked" else module(x)
    return {"tokens": logits.argmax(-1)}


def copy_greedy_jax(task, model, params, batch, config, outputs):
    # The decoder takes no input, so greedy decoding is the argmax of each step's logits
    # (what Copy.loss scores as token and sequence accuracy).
    return {"tokens": outputs["logits"].argmax(-1)}


def sum_greedy_torch(module, b, config):  # the seed's predictions: model(x).argmax(-1)
    logits = module(one_hot(b["x"], module.n_inputs, dtype=_dtype(module)))
    return {"tokens": logits[:, : b["y"].shape[1]].argmax(-1)}


def seq2seq_greedy_torch(module, b, config):
    return {"tokens": module.greedy(b["x"], b["lengths"], b["y"].shape[1])[0]}


def predict_jax(task, model, params, batch, config, outputs):
    """``Addition.predict``: SumRNN/SumLSTM argmax, Seq2Seq greedy decoding (a lax.scan)."""
    return {
        "tokens": task.predict(model, params, batch["x"], batch["lengths"], batch["y"].shape[1])
    }


# charlm sampling: SAMPLE_LENGTH characters after the first PROMPT_LENGTH of batch 0's first
# window, at the config's temperature and greedily (0)
PROMPT_LENGTH, SAMPLE_LENGTH = 5, 40


def sampling_temperatures(config) -> tuple[float, ...]:
    return (config.temperature, 0.0)


def charlm_uniforms():
    """The noise of both samplers: ``charlm.sampling_uniforms`` (float64 under x64)."""
    return charlm.sampling_uniforms(jax.random.key(0), SAMPLE_LENGTH)


def charlm_sample_torch(module, b, config):
    """The seed's loop (``models.sample_chars``), fed the same uniforms as jaxrnn."""
    u = torch.from_numpy(np.array(charlm_uniforms()))
    prompt = b["x"][0, :PROMPT_LENGTH]
    return {
        "tokens": torch.stack(
            [models.sample_chars(module, prompt, u, t) for t in sampling_temperatures(config)]
        )
    }


def charlm_sample_jax(task, model, params, batch, config, outputs):
    """``charlm.sample_ids``: the prompt through the LSTM, then a lax.scan carrying (h, c)."""
    u = charlm_uniforms()
    prompt = batch["x"][0, :PROMPT_LENGTH]
    return {
        "tokens": jnp.stack(
            [
                charlm.sample_ids(model, params, prompt, u, jnp.asarray(t, u.dtype))
                for t in sampling_temperatures(config)
            ]
        )
    }


SINUSOID_GENERATE = Decode(sinusoid_generate_torch, sinusoid_generate_jax)
COPY_GREEDY = Decode(copy_greedy_torch, copy_greedy_jax)
SUM_GREEDY = Decode(sum_greedy_torch, predict_jax)
SEQ2SEQ_GREEDY = Decode(seq2seq_greedy_torch, predict_jax)
CHARLM_SAMPLE = Decode(charlm_sample_torch, charlm_sample_jax)


# ----------------------------------------------------------------------------- torch models


def _copy_vocab(c) -> int:
    return len(c.alphabet) + (0 if c.variant in ("copy", "reverse") else 1)


def _addition_sizes(c) -> tuple[int, int]:
    return len(addition.IN_ALPHABET) + 1, len(addition.OUT_ALPHABET) + 1


def _sentiment_model(c):
    return models.SentimentRNN(c.vocab_size, c.embedding_dim, c.hidden_size, c.cell)


SENTIMENT = dict(vocab_size=10, embedding_dim=5, hidden_size=7, batch_size=BATCH)


# ----------------------------------------------------------------------------- the table

# The seeds' model sizes, except SumLSTM's and seq2seq's hidden (200 and 256 → 64: SumLSTM's
# float64 backward in torch alone took 10 s); data sets shrunk to what 20 batches of 8 need.
# fmt: off
MODELS: list[TaskModel] = [
    TaskModel("index-recall", "index-recall", dict(n=ADAM_STEPS * BATCH),
              lambda c: models.Net(c.high - c.low, c.embedding_dim, c.hidden_size),
              index_recall_loss),
    TaskModel("hihello-step", "hihello", dict(mode="step"),
              lambda c: models.HiHelloModel(), hihello_step_loss, batches=hihello_batches),
    TaskModel("hihello-sequence", "hihello", dict(mode="sequence"),
              lambda c: models.HiHelloModel2(), hihello_sequence_loss, batches=hihello_batches),
    TaskModel("bitflip-concat", "bitflip", dict(mode="concat"),
              lambda c: models.bitflip_model(c.embedding_dim, concat_layers=True),
              bitflip_loss, outputs=("outputs", "hidden_states")),
    TaskModel("bitflip-sum", "bitflip", dict(mode="sum"),
              lambda c: models.bitflip_model(c.embedding_dim, concat_layers=False),
              bitflip_loss, outputs=("outputs", "hidden_states")),
    TaskModel("sinusoid", "sinusoid", dict(n_train=ADAM_STEPS * BATCH, n_test=1),
              lambda c: models.LinRNN(n_hidden=c.n_hidden), sinusoid_loss,
              jax_outputs=sinusoid_outputs, decode=SINUSOID_GENERATE),
    TaskModel("sinusoid-associative", "sinusoid",  # T = 33: the associative scan compiles slowly
              dict(associative=True, n_time_steps=33, n_train=ADAM_STEPS * BATCH, n_test=1),
              lambda c: models.LinRNN(n_hidden=c.n_hidden), sinusoid_loss,
              jax_outputs=sinusoid_outputs, decode=SINUSOID_GENERATE),
    TaskModel("copy", "copy", dict(variant="copy", n_train=ADAM_STEPS * BATCH, n_test=1),
              lambda c: models.SeqEncoderDecoder(_copy_vocab(c), c.hidden_size), copy_loss,
              decode=COPY_GREEDY),
    TaskModel("copy-masked", "copy", dict(variant="masked", n_train=ADAM_STEPS * BATCH, n_test=1),
              lambda c: models.SeqEncoderDecoderMasked(_copy_vocab(c), c.hidden_size),
              copy_masked_loss, decode=COPY_GREEDY),
    TaskModel("copy-builtin", "copy",
              dict(variant="variable", cell="builtin", n_train=ADAM_STEPS * BATCH, n_test=1),
              lambda c: models.SeqEncoderDecoderRNN(_copy_vocab(c), c.hidden_size), copy_loss,
              decode=COPY_GREEDY),
    TaskModel("copy-masked-builtin", "copy",
              dict(variant="masked", cell="builtin", n_train=ADAM_STEPS * BATCH, n_test=1),
              lambda c: models.SeqEncoderDecoderRNNMasked(_copy_vocab(c), c.hidden_size),
              copy_masked_loss, decode=COPY_GREEDY),
    TaskModel("addition-sumrnn", "addition", dict(model="sumrnn", n_examples=400),
              lambda c: models.SumRNN(*_addition_sizes(c), c.hidden_size, c.num_layers),
              sum_loss, jax_outputs=sum_outputs, decode=SUM_GREEDY),
    TaskModel("addition-sumlstm", "addition",  # the seed's 5 layers; hidden 200 → 64 (time)
              dict(model="sumlstm", hidden_size=64, n_examples=400),
              lambda c: models.SumLSTM(*_addition_sizes(c), c.hidden_size, c.num_layers),
              sum_loss, jax_outputs=sum_outputs, decode=SUM_GREEDY),
    # dropout 0: with the default 0.1 each framework draws its own masks in training; two
    # layers (default 1), so the state handed between layers, also in greedy decoding, is
    # covered; hidden 256 → 64 (time); the seed's training (preset "seed": batch 32, unclipped)
    TaskModel("addition-seq2seq", "addition",
              dict(model="seq2seq", dropout=0.0, num_layers=2, hidden_size=64, n_examples=400,
                   preset="seed"),
              lambda c: models.Seq2Seq(*_addition_sizes(c), c.hidden_size, c.num_layers,
                                       c.embedding_dim, c.dropout),
              seq2seq_loss, jax_outputs=seq2seq_outputs, decode=SEQ2SEQ_GREEDY),
    # the seed's 2 layers and training (preset "seed"), sizes shrunk (512 → 13, embedding 64 → 7,
    # windows 100 → 12); the alphabet given, so nothing reads a corpus (charlm_batches makes it)
    TaskModel("charlm", "charlm", dict(alphabet=TEXT_ALPHABET, hidden_size=13, embedding_dim=7,
                                       seq_length=12, temperature=0.75, preset="seed"),
              lambda c: models.PredictorLSTM(len(c.alphabet) + 1, c.hidden_size, c.num_layers,
                                             c.embedding_dim),
              charlm_loss, batches=charlm_batches,  # the seed's model returns no state
              decode=CHARLM_SAMPLE),
    # vocabulary 5000 → 10 (+ OOV), embedding 32 → 5, hidden 16 → 7; reviews of 1–12 words.
    # Per-example (the seed's loop, its tanh RNN): one review per batch and per Adam step;
    # batched: packed in torch, and the seed's loop as a second reference for the outputs.
    TaskModel("sentiment-tanh-per-example", "sentiment", dict(mode="per-example", **SENTIMENT),
              _sentiment_model, sentiment_per_example_loss, batches=sentiment_batches),
    TaskModel("sentiment-tanh", "sentiment", dict(cell="tanh", **SENTIMENT), _sentiment_model,
              sentiment_loss, jax_outputs=sentiment_outputs, batches=sentiment_batches),
    TaskModel("sentiment-lstm", "sentiment", dict(cell="lstm", **SENTIMENT), _sentiment_model,
              sentiment_loss, jax_outputs=sentiment_outputs, batches=sentiment_batches),
]
# fmt: on


@dataclasses.dataclass(frozen=True)
class MarkovRow:
    """charlm's Markov baseline, one float64 row (NumPy on both sides, no torch, no training):
    ``jaxrnn.markov`` (counts by sorting, Witten–Bell vectorised over contexts) against the
    seed's ``create_markov_dict`` (one dict per order) smoothed one context at a time in Python
    (``models.markov_dict_probabilities``), on an in-memory text (:func:`words_text`).

    ``out``: the counts first — every order's contexts and counts must be equal (inf
    otherwise) — then ``P_k(· | context)`` for every order k and every position of a held-out
    text, and the bits per character per order (``markov.bits_per_char``, what charlm reports).
    """

    id: str = "markov"
    order: int = 5
    train_chars: int = 3000
    valid_chars: int = 300
    dtypes: tuple[str, ...] = ("float64",)


MARKOV = MarkovRow()
ROWS: list = [*MODELS, MARKOV]  # the task table
QUICK = (
    "hihello-step",
    "bitflip-concat",
    "sinusoid",
    "copy-masked-builtin",
    "addition-seq2seq",
    "charlm",
    "sentiment-tanh",
    "markov",
)


def row_dtypes(row) -> tuple[str, ...]:
    return getattr(row, "dtypes", DTYPES)


def run_row(row, dtype: str) -> TaskReport:
    """:func:`run_markov` for the Markov row, :func:`run_task_model` for the others."""
    return run_markov(row, dtype) if isinstance(row, MarkovRow) else run_task_model(row, dtype)


def run_markov(row: MarkovRow, dtype: str = "float64") -> TaskReport:
    if dtype not in row.dtypes:
        raise ValueError(f"{row.id} runs in {row.dtypes}, not {dtype}")
    rng = np.random.default_rng(seed_of(row.id))
    text, valid = words_text(rng, row.train_chars), words_text(rng, row.valid_chars)
    alphabet = "".join(sorted(set(text)))  # the seed's np.unique(list(text))
    S, K = len(alphabet), row.order
    # the seed's loop skips the last character: its dicts of text = our counts of text[:-1]
    model = markov.fit(text[:-1], K, alphabet=alphabet)
    dicts = {k: markov_seed.create_markov_dict(text, markov_order=k)[0] for k in range(K + 1)}
    for k in range(K + 1):
        ours = markov.count_dict(model, k)
        if ours.keys() != dicts[k].keys():
            return TaskReport({"out": float("inf")}, {"out": f"order {k}: contexts differ"})
        for h, counts in dicts[k].items():
            if not np.array_equal(ours[h], counts):
                return TaskReport({"out": float("inf")}, {"out": f"order {k}: counts of {h!r}"})

    pairs, nats = {}, np.zeros(K + 1)
    x = markov.encode(valid, alphabet)
    for t in range(len(valid)):
        context = valid[max(0, t - K) : t]
        for k in range(K + 1):
            ref = models.markov_dict_probabilities(dicts, S, context, k)
            pairs[f"P_{k}(· | {context!r})"] = (markov.probabilities(model, context, k), ref)
            nats[k] -= np.log(ref[x[t]])
    bpc = markov.bits_per_char(model, valid)
    for k in range(K + 1):
        pairs[f"bits/char order {k}"] = (bpc[k], nats[k] / len(valid) / np.log(2))
    err, where = worst(pairs)
    return TaskReport({"out": err}, {"out": where})


# ----------------------------------------------------------------------------- building


def torch_reference(entry: TaskModel, config: TaskConfig, dtype: str, rng) -> torch.nn.Module:
    """The seed's torch model: torch's initialisation (seeded), 1-D parameters redrawn."""
    torch.manual_seed(seed_of(entry.id))
    module = entry.torch_model(config)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim <= 1:
                p.copy_(torch.from_numpy(rng.uniform(-STATE_SCALE, STATE_SCALE, tuple(p.shape))))
    return module.to(getattr(torch, dtype))


def batch_loss(outputs, *arrays):
    """verify's loss, in both frameworks: the task's loss, which the models' wrappers below
    return among their outputs."""
    return outputs["loss"]


@functools.cache  # one function per model: jaxrnn.verify's compiled step is cached by it
def flax_apply(task: Task, model, config: TaskConfig, jax_outputs: JaxOutputs, keys: tuple):
    """``apply(params, *arrays) -> {output name: array, "loss": loss}`` for ``jaxrnn.verify``:
    the batch ``dict(zip(keys, arrays))``, the entry's outputs and ``task.loss(...,
    train=True)``."""

    def apply(params, *arrays):
        batch = dict(zip(keys, arrays))
        outputs = jax_outputs(task, model, params, batch, config)
        loss = task.loss(model, params, batch, key=jax.random.key(0), train=True)[0]
        return {**outputs, "loss": loss}

    return apply


def torch_apply(torch_loss: TorchLoss, keys: tuple):
    """The torch side of :func:`flax_apply`: ``torch_loss(module, batch)`` as one dict."""

    def apply(module, *tensors):
        loss, outputs = torch_loss(module, dict(zip(keys, tensors)))
        return {**outputs, "loss": loss}

    return apply


@functools.cache
def make_decode(task: Task, model, config: TaskConfig, jax_outputs: JaxOutputs, decode: Callable):
    """``decode(params, batch) -> {name: array}``, jitted on its own (measured, a decoding
    scan — greedy seq2seq, charlm sampling — fused into the training step compiled 1.5–3 s
    slower than the two programs apart): the entry's outputs of ``batch``, then the decoding
    (XLA drops the outputs where the decoding does not use them)."""

    def run(params, batch):
        outputs = jax_outputs(task, model, params, batch, config)
        return decode(task, model, params, batch, config, outputs)

    return jax.jit(run)


@functools.cache
def _task(name: str) -> Task:
    return get_task(name)


# ----------------------------------------------------------------------------- the checks


def run_task_model(entry: TaskModel, dtype: str) -> TaskReport:
    """Every check of one task model in ``dtype``; call inside ``checks.parity_mode(dtype)``."""
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise RuntimeError("float64 parity needs jax_enable_x64: run inside parity_mode()")
    rng = np.random.default_rng(seed_of(entry.id))  # the same values for both dtypes
    errors: dict[str, float] = {}
    notes: dict[str, str] = {}

    task = _task(entry.task)
    config = task.resolve(task.Config().replace(**entry.config))
    model = task.model(config)
    make_batches = entry.batches or train_batches
    batches = [to_dtype(b, dtype) for b in make_batches(task, config, rng, ADAM_STEPS)]
    tmod = torch_reference(entry, config, dtype, rng)
    state_dict = tmod.state_dict()

    # names: the jaxrnn params, by torch name, have exactly the torch keys and shapes
    # (only the structure, shapes and dtype of the params matter: no initialisation runs)
    shapes = jax.eval_shape(lambda key: task.init(model, key, batches[0]), jax.random.key(0))
    like = jax.tree.map(lambda s: np.zeros(s.shape, dtype), shapes)
    jax_names = {k: v.shape for k, v in jaxrnn.params_to_state_dict(like).items()}
    torch_names = {k: tuple(v.shape) for k, v in state_dict.items()}
    errors["names"] = 0.0 if jax_names == torch_names else float("inf")
    if jax_names != torch_names:
        only_j = sorted(set(jax_names.items()) - set(torch_names.items()))
        only_t = sorted(set(torch_names.items()) - set(jax_names.items()))
        notes["names"] = f"jaxrnn only {only_j}, torch only {only_t}"
        return TaskReport({**errors, **{c: float("nan") for c in CHECKS[1:]}}, notes)

    params = jaxrnn.state_dict_to_params(state_dict, like=like)

    # roundtrip: state_dict → params → state_dict, bit-exact
    back = jaxrnn.params_to_state_dict(params)
    diffs = {
        k: float(np.max(np.abs(back[k] - v.numpy()), initial=0.0))
        if back[k].dtype == v.numpy().dtype
        else float("inf")
        for k, v in state_dict.items()
    }
    where = max(diffs, key=diffs.get)
    errors["roundtrip"], notes["roundtrip"] = diffs[where], where if diffs[where] else ""

    # out, grads, adam20: jaxrnn.verify, the task's loss returned with the outputs on both
    # sides; the batches go in as tuples of their arrays (batch i at step i; batch 0 also
    # gives the outputs and gradients)
    outputs = entry.jax_outputs or apply_outputs(entry.outputs)
    clip = float(config.grad_clip or 0.0)  # the engine's clipping (copy: variable lengths)
    keys = tuple(batches[0])
    arrays = [tuple(b[k] for k in keys) for b in batches]
    report = jaxrnn.verify(
        tmod,
        flax_apply(task, model, config, outputs, keys),
        like,
        arrays[0],
        loss=batch_loss,
        steps=ADAM_STEPS,
        step_inputs=arrays,
        torch_apply=torch_apply(entry.torch_loss, keys),
        input_grads=False,
        dtype=dtype,
        learning_rate=ADAM["lr"],
        betas=(ADAM["b1"], ADAM["b2"]),
        eps=ADAM["eps"],
        grad_clip=clip,
    )
    for check, kinds in VERIFY_CHECKS.items():
        row = report.worst(*kinds)
        errors[check] = row.error
        notes[check] = " ".join(filter(None, (row.check, row.name, row.note)))
    if clip > 0:  # a clipping that never acts would test nothing
        notes["clipped"] = f"{report.clipped} of {ADAM_STEPS} steps clipped at {clip:g}"

    # decode: generation / greedy decoding / sampling at the starting parameters (verify
    # trained a copy of the torch model)
    if entry.decode is not None:
        dec_j = make_decode(task, model, config, outputs, entry.decode.jax)(params, batches[0])
        with torch.no_grad():
            dec_t = entry.decode.torch(tmod, to_torch(batches[0], dtype), config)
        errors["decode"], notes["decode"] = compare_decoded(dec_j, dec_t)
    return TaskReport(errors, notes)


def compare_decoded(got: dict, ref: dict) -> tuple[float, str]:
    """Tokens must be equal (inf and a count otherwise); the other arrays by ``rel_err``."""
    if "tokens" in ref:
        a, b = np.asarray(got["tokens"]), ref["tokens"].numpy()
        if a.shape != b.shape:
            return float("inf"), f"tokens shape {a.shape} != {b.shape}"
        if (a != b).any():
            return float("inf"), f"{int((a != b).sum())} of {a.size} tokens differ"
    return worst({k: (got[k], v) for k, v in ref.items() if k != "tokens"})
