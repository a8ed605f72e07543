"""``sentiment`` on a tiny hand-made CSV (no network): vocabulary, buckets, masking, training."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from jaxrnn import cli
from jaxrnn.checkpoints import BEST
from jaxrnn.runs import fit
from jaxrnn.tasks import get_task
from jaxrnn.tasks.sentiment import (
    SentimentConfig,
    SentimentRNN,
    bucket_batches,
    bucket_bounds,
    build_vocab,
    encode,
    tokenize,
)

GOOD, BAD = ["great", "fun", "moving", "superb"], ["dull", "awful", "boring", "mess"]
FILLER = ["the", "film", "a", "plot", "is", "and", "cast", "with"]
N_REVIEWS = 100  # 60 train, 20 valid, 20 test: whole batches of 10 everywhere
TINY = dict(
    embedding_dim=4,
    hidden_size=4,
    buckets=2,
    batch_size=10,
    learning_rate=0.05,
    epochs=4,
    valid_fraction=0.2,
    test_fraction=0.2,
)


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    """100 reviews of 2–20 words: filler, one sentiment word, and a word no other review has."""
    rng = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for i in range(N_REVIEWS):
            label = i % 2
            words = list(rng.choice(FILLER, rng.integers(0, 18)))
            words += [rng.choice(GOOD if label else BAD), f"only{i}"]
            out.writerow([" ".join(rng.permutation(words)), label])
    return path


@pytest.fixture(scope="module")
def task():
    return get_task("sentiment")  # one instance: its jitted steps are cached across tests


def _config(reviews_csv, **changes) -> SentimentConfig:
    return SentimentConfig(dataset=str(reviews_csv), **{**TINY, **changes})


# ----------------------------------------------------------------------------- vocabulary


def test_vocab_ids_by_frequency_ties_alphabetical():
    reviews = [["b", "a", "c", "a"], ["d", "b", "a", "c", "e"]]  # a 3, b 2, c 2, d 1, e 1
    assert build_vocab(reviews, 10) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    assert build_vocab(reviews, 2) == {"a": 0, "b": 1}


def test_words_outside_the_vocabulary_are_oov():
    vocab = build_vocab([["good", "good", "film"]], 5)
    assert encode(["good", "bad", "film", "good"], vocab, oov=5) == [0, 5, 1, 0]


def test_tokenizers():
    assert tokenize("Not ''bad'' at ALL.", "split") == ["Not", "''bad''", "at", "ALL."]
    assert tokenize("Not ''bad'' at ALL.", "words") == [
        "not",
        "'",
        "'",
        "bad",
        "'",
        "'",
        "at",
        "all",
        ".",
    ]
    assert tokenize("It's the film's end", "words") == ["it's", "the", "film's", "end"]
    with pytest.raises(ValueError, match="tokenizer must be 'split' or 'words', got 'chars'"):
        tokenize("a", "chars")


def test_vocabulary_comes_from_the_training_split_only(task, reviews_csv):
    config = _config(reviews_csv, vocab_size=1000)  # room for every word
    data = task.data(config, np.random.default_rng(0))
    assert {name: len(split["y"]) for name, split in data.items()} == {
        "train": 60,
        "valid": 20,
        "test": 20,
    }
    oov = config.vocab_size
    real = {name: _real_ids(split) for name, split in data.items()}
    assert all(oov not in review for review in real["train"])  # every train word is known
    # Each held-out review has a word of its own ("only17"): unseen in training, so OOV.
    for name in ("valid", "test"):
        assert all(oov in review for review in real[name]), name
    # The training split's most frequent word is id 0 (a filler word or "the").
    counts = np.bincount(np.concatenate(real["train"]))
    assert counts.argmax() == 0


def test_a_small_vocabulary_maps_the_rest_to_oov(task, reviews_csv):
    data = task.data(_config(reviews_csv, vocab_size=3), np.random.default_rng(0))
    ids = np.concatenate(_real_ids(data["train"]))
    assert set(ids.tolist()) == {0, 1, 2, 3}  # three words, and OOV = 3


def _real_ids(split) -> list[np.ndarray]:
    return [x[:n] for x, n in zip(split["x"], split["lengths"])]


# ----------------------------------------------------------------------------- buckets


def _split(rng, n=203, longest=40):
    lengths = rng.integers(1, longest + 1, n).astype(np.int32)
    bounds = bucket_bounds(lengths, 4, longest)
    width = bounds[np.searchsorted(bounds, lengths)]
    x = np.zeros((n, longest), np.int32)
    return {"x": x, "lengths": lengths, "y": np.arange(n, dtype=np.float32), "width": width}


def test_bucket_bounds():
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    assert bucket_bounds(lengths, 4, 8).tolist() == [3, 5, 7, 8]
    assert bucket_bounds(lengths, 1, 12).tolist() == [12]
    assert bucket_bounds(np.full(8, 5), 4, 9).tolist() == [5, 9]  # repeated quantiles merge


def test_buckets_give_few_shapes_and_each_review_once(rng):
    split = _split(rng)
    n, batch_size = len(split["y"]), 16
    for epoch in range(2):
        batches = list(bucket_batches(split, batch_size, np.random.default_rng(epoch)))
        shapes = {b["x"].shape for b in batches}
        assert len(shapes) <= 4 and {s[0] for s in shapes} == {batch_size}
        seen = np.concatenate([b["y"] for b in batches]).astype(int)
        assert len(set(seen)) == len(seen) > n - batch_size  # once each, under a batch dropped
        assert all((b["lengths"] <= b["x"].shape[1]).all() for b in batches)
    evaluation = list(bucket_batches(split, batch_size, None))
    seen = np.concatenate([b["y"] for b in evaluation]).astype(int)
    assert sorted(seen) == list(range(n))  # evaluation: every review exactly once
    assert len({b["x"].shape for b in evaluation}) <= 4 + 1  # + the last, smaller batch
    # Per-example training: batches of one, still one time length per bucket.
    per_example = list(bucket_batches(split, 1, np.random.default_rng(0)))
    assert len(per_example) == n and len({b["x"].shape for b in per_example}) <= 4


def test_batches_hook_per_example_mode(task, reviews_csv):
    config = _config(reviews_csv, mode="per-example")
    data = task.data(config, np.random.default_rng(0))
    train = list(task.batches(data["train"], config, np.random.default_rng(1)))
    assert len(train) == 60 and {b["x"].shape[0] for b in train} == {1}
    valid = list(task.batches(data["valid"], config, None))  # evaluation stays batched
    assert [len(b["y"]) for b in valid] == [10, 10]


# ----------------------------------------------------------------------------- masking


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_padded_batches_give_the_logits_of_one_review_at_a_time(cell, rng):
    model = SentimentRNN(vocab_size=20, embedding_dim=6, hidden_size=5, cell=cell)
    lengths = np.array([6, 1, 6, 3], np.int32)
    x = rng.integers(0, 21, (4, 6)).astype(np.int32)
    x[np.arange(6) >= lengths[:, None]] = 0  # padding
    params = model.init(jax.random.key(0), x, lengths)["params"]
    apply = jax.jit(model.apply)
    batched = apply({"params": params}, x, lengths)
    one_by_one = [apply({"params": params}, x[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6, atol=1e-6)
    x[np.arange(6) >= lengths[:, None]] = 20  # other padding ids: the same logits
    np.testing.assert_array_equal(apply({"params": params}, x, lengths), batched)


# ----------------------------------------------------------------------------- training


def test_tiny_run_through_the_cli_selects_the_best_valid_epoch(reviews_csv, tmp_path, capsys):
    sets = [f"dataset={reviews_csv}"] + [f"{k}={v}" for k, v in TINY.items()]
    assert (
        cli.main(
            ["train", "sentiment", "--out", str(tmp_path), *[a for s in sets for a in ("--set", s)]]
        )
        == 0
    )
    out, record = tmp_path, json.loads((tmp_path / "metrics.json").read_text())
    history, final = record["history"], record["final"]
    assert {"train_accuracy", "valid_accuracy", "valid_loss"} <= set(history[-1])
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    scores = [row["valid_accuracy"] for row in history]
    assert record["best_epoch"] == final["best_epoch"] == int(np.argmax(scores)) + 1
    assert final["valid_accuracy"] == pytest.approx(max(scores))  # evaluated: the best params
    assert 0 <= final["test_accuracy"] <= 1 and final["test_accuracy"] > 0.5, final
    for name in (BEST, "checkpoint.msgpack", "loss.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    capsys.readouterr()
    assert cli.main(["eval", "sentiment", "--checkpoint", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)["final"]
    assert printed == pytest.approx(final)


def test_resume_with_selection_is_exact(task, reviews_csv, tmp_path):
    config = _config(reviews_csv)
    full = fit(task, config, seed=0, out_dir=tmp_path / "full", progress=False)
    fit(task, config, seed=0, out_dir=tmp_path / "cut", progress=False, max_epochs=2)
    resumed = fit(task, config, seed=0, out_dir=tmp_path / "cut", progress=False, resume=True)
    drop_time = lambda h: [{k: v for k, v in row.items() if k != "time"} for row in h]  # noqa: E731
    assert drop_time(resumed.history) == drop_time(full.history)
    assert resumed.final == full.final
    for a, b in zip(jax.tree.leaves(full.best.params), jax.tree.leaves(resumed.best.params)):
        np.testing.assert_array_equal(a, b)


def test_on_device_epoch_with_buckets_is_a_clear_error(task, reviews_csv):
    with pytest.raises(ValueError, match="on_device_epoch=True .* different shapes"):
        fit(task, _config(reviews_csv, on_device_epoch=True), progress=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(valid_fraction=0.0), r"valid_fraction must be in \(0, 1\), got 0.0"),
        (dict(valid_fraction=0.5, test_fraction=0.5), "valid_fraction \\+ test_fraction must be"),
        (dict(buckets=0), "buckets must be a positive int, got 0"),
    ],
)
def test_config_errors_are_clear(task, reviews_csv, changes, message):
    with pytest.raises(ValueError, match=message):
        task.data(_config(reviews_csv, **changes), np.random.default_rng(0))
