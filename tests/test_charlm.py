"""``charlm`` and the Markov baseline: counts by hand, Witten–Bell, a tiny run through the CLI,
and the O(n) sampler against re-feeding the whole prefix. (The counts and probabilities against
the seed's own dict version: the ``markov`` row of the parity suite, parity/test_task_models.py.)"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from jaxrnn import cli, markov
from jaxrnn.checkpoints import CHECKPOINT
from jaxrnn.interop import params_to_state_dict
from jaxrnn.tasks import charlm

WORDS = "the cat sat on a mat and a dog ran to his red hat while we sing".split()


def make_text(n: int, seed: int = 0) -> str:
    """Sentences of a few words, one per line: enough structure for a model to learn."""
    rng = np.random.default_rng(seed)
    lines, size = [], 0
    while size < n:
        lines.append(" ".join(rng.choice(WORDS, rng.integers(3, 8))).capitalize() + ".\n")
        size += len(lines[-1])
    return "".join(lines)[:n]


TINY = [
    "hidden_size=16",
    "num_layers=1",
    "embedding_dim=8",
    "seq_length=20",
    "max_chars=3000",
    "batch_size=16",
    "epochs=2",
    "learning_rate=0.01",
    "sample_length=40",
    "report_length=40",
    "markov_orders=1,2,3",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny charlm trained through the CLI; its directory."""
    root = tmp_path_factory.mktemp("charlm")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(5000))
    out = root / "run"
    sets = [a for s in [*TINY, f"corpus={corpus}"] for a in ("--set", s)]
    assert cli.main(["train", "charlm", "--out", str(out), *sets]) == 0
    return out


# ----------------------------------------------------------------------------- Markov


def test_markov_counts_by_hand():
    model = markov.fit("abracadabra", order=2)
    assert model.alphabet == "abcdr"
    counts = {
        k: {h: dict(zip("abcdr", c.tolist())) for h, c in markov.count_dict(model, k).items()}
        for k in range(3)
    }
    nonzero = {
        k: {h: {w: n for w, n in c.items() if n} for h, c in d.items()} for k, d in counts.items()
    }
    assert nonzero[0] == {"": {"a": 5, "b": 2, "c": 1, "d": 1, "r": 2}}
    assert nonzero[1] == {
        "a": {"b": 2, "c": 1, "d": 1},
        "b": {"r": 2},
        "r": {"a": 2},
        "c": {"a": 1},
        "d": {"a": 1},
    }
    assert nonzero[2] == {
        "ab": {"r": 2},
        "br": {"a": 2},
        "ra": {"c": 1},
        "ac": {"a": 1},
        "ca": {"d": 1},
        "ad": {"a": 1},
        "da": {"b": 1},
    }
    # Witten–Bell by hand: P0(b) = (2 + 5 · 1/5) / (11 + 5); P1(b | a) = (2 + 3 · P0(b)) / (4 + 3)
    p0_b = (2 + 5 / 5) / (11 + 5)
    assert markov.probabilities(model, "", order=0)[1] == pytest.approx(p0_b)
    assert markov.probabilities(model, "a", order=1)[1] == pytest.approx((2 + 3 * p0_b) / 7)
    # an unseen order-2 context ("aa") backs off to order 1 ("a") exactly
    np.testing.assert_allclose(markov.probabilities(model, "aa"), markov.probabilities(model, "a"))


@pytest.mark.parametrize("context", ["", "a", "ra", "abr", "zz", "qqqq", "dd", "rab"])
def test_witten_bell_is_a_distribution(context):
    model = markov.fit("abracadabra", order=3, alphabet="abcdqrz")  # q, z never seen
    p = markov.probabilities(model, context)
    assert p.shape == (7,) and np.all(p > 0)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_bits_per_char_is_finite_on_unseen_text():
    train = make_text(2000)
    model = markov.fit(train, order=4, alphabet="".join(sorted(set(train) | {"#", "Q"})))
    bpc = markov.bits_per_char(model, "Q#the cat#QQ sat")  # unseen characters and contexts
    assert list(bpc) == [0, 1, 2, 3, 4]
    assert all(np.isfinite(v) and v > 0 for v in bpc.values()), bpc


def test_markov_sample_is_seeded():
    model = markov.fit(make_text(2000), order=3)
    a = markov.sample(model, 50, seed=1, start="The")
    assert a == markov.sample(model, 50, seed=1, start="The")
    assert a != markov.sample(model, 50, seed=2, start="The")
    assert a.startswith("The") and len(a) == 53 and set(a) <= set(model.alphabet)
    with pytest.raises(ValueError, match="length must be an int >= 1"):
        markov.sample(model, 0)


def test_markov_sample_uses_the_given_order():
    """order=1: each draw is the inverse CDF of P_1(· | last character) — replayed here."""
    model = markov.fit(make_text(2000), order=3)
    out = markov.sample(model, 30, seed=3, start="a", order=1)
    text = "a"
    for u in np.random.default_rng(3).random(30):
        cdf = np.cumsum(markov.probabilities(model, text[-1], order=1))
        text += model.alphabet[int(np.searchsorted(cdf / cdf[-1], u, side="right"))]
    assert out == text
    assert out != markov.sample(model, 30, seed=3, start="a")  # the fitted order 3 differs
    with pytest.raises(ValueError, match=r"order must be in \[0, 3\]"):
        markov.sample(model, 5, order=4)


# ----------------------------------------------------------------------------- data and model


def test_windows_shift_by_one_and_pad_the_tail():
    ids = np.arange(1, 12)  # 11 characters, 10 targets
    full = charlm.windows(ids, 4)
    np.testing.assert_array_equal(full["x"], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(full["y"], [[2, 3, 4, 5], [6, 7, 8, 9]])
    padded = charlm.windows(ids, 4, pad=True)
    np.testing.assert_array_equal(padded["x"][-1], [9, 10, 11, 0])
    np.testing.assert_array_equal(padded["y"][-1], [10, 11, 0, 0])
    targets = padded["y"][padded["y"] != charlm.PAD]
    np.testing.assert_array_equal(targets, ids[1:])  # every character after the first, once


def test_split_by_position_and_too_short_corpus(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(make_text(1000))
    config = charlm.CharLMConfig(corpus=str(path), seq_length=20)
    train, valid = charlm.split_text(config)
    assert train + valid == path.read_text() and len(valid) == 100
    with pytest.raises(ValueError, match="each split needs at least seq_length \\+ 1 = 201"):
        charlm.split_text(config.replace(seq_length=200))


def test_parameters_are_the_seed_state_dict():
    model = charlm.PredictorLSTM(n_symbols=82, n_hidden=12, n_layers=2, embedding_size=5)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.ones((1, 3), np.int32))["params"]
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    shapes = {k: v.shape for k, v in params_to_state_dict(params).items()}
    assert shapes == {
        "embeddings": (82, 5),
        "rnn.weight_ih_l0": (48, 5),
        "rnn.weight_hh_l0": (48, 12),
        "rnn.bias_ih_l0": (48,),
        "rnn.bias_hh_l0": (48,),
        "rnn.weight_ih_l1": (48, 12),
        "rnn.weight_hh_l1": (48, 12),
        "rnn.bias_ih_l1": (48,),
        "rnn.bias_hh_l1": (48,),
        "hidden_to_output.weight": (82, 12),
        "hidden_to_output.bias": (82,),
    }


# ----------------------------------------------------------------------------- sampling


next_id = jax.jit(charlm.next_id)


def test_next_id_is_the_inverse_cdf():
    logits = jnp.log(jnp.array([1e9, 1.0, 1.0, 2.0]))  # PAD's huge logit is masked: p = ¼ ¼ ½
    u = jnp.array([0.0, 0.2499, 0.25, 0.4999, 0.5, 0.9999, np.nextafter(1, 0, dtype=np.float32)])
    picks = jax.vmap(next_id, in_axes=(None, 0, None))(logits, u, 1.0)
    np.testing.assert_array_equal(picks, [1, 1, 2, 2, 3, 3, 3])
    assert int(next_id(logits, 0.0, 0.0)) == 3  # greedy, never PAD


def _refeed_sampler(logits_of, params, prompt, uniforms, temperature, size=40):
    """The seed's O(n²) loop: re-run the whole prefix for every new character (one compile:
    the prefix sits in a fixed buffer, and position i's logits only see positions ≤ i)."""
    P, N = len(prompt), len(uniforms)
    buffer = np.zeros((1, size), np.int32)
    buffer[0, :P] = prompt
    for i in range(N):
        logits = logits_of(params, buffer)[P + i - 1]
        buffer[0, P + i] = int(next_id(logits, uniforms[i], temperature))
    return buffer[0, P : P + N]


def test_scan_sampler_matches_refeeding_the_prefix(rng):
    model = charlm.PredictorLSTM(n_symbols=7, n_hidden=8, n_layers=2, embedding_size=4)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.ones((1, 2), np.int32))["params"]
    # NumPy draws (no PRNG compiles); large enough for sharp distributions and long memory
    params = jax.tree.map(lambda s: rng.normal(0, 1.0, s.shape).astype(np.float32), shapes)
    logits_of = jax.jit(lambda p, b: model.apply({"params": p}, b)[0][0])
    uniforms = rng.random(30).astype(np.float32)
    for prompt in ([3], [5, 1, 6, 2]):  # one character: the scan starts from zeros
        for temperature in (1.0, 0.5, 0.0):
            fast = charlm.sample_ids(
                model, params, jnp.array(prompt, jnp.int32), uniforms, jnp.float32(temperature)
            )
            slow = _refeed_sampler(logits_of, params, np.array(prompt), uniforms, temperature)
            np.testing.assert_array_equal(np.asarray(fast), slow, f"{prompt} T={temperature}")
            assert np.all(np.asarray(fast) >= 1)


def test_sampling_is_deterministic_per_key(run):
    model, params, config = charlm.load_model(run)

    def draw(seed, temperature=1.0):
        return charlm.sample(
            model, params, config.alphabet, "", 40, temperature, key=jax.random.key(seed)
        )

    assert draw(0) == draw(0) and len(draw(0)) == 40
    assert draw(0) != draw(1)
    assert draw(0, 0.0) == draw(1, 0.0)  # greedy ignores the noise


def test_empty_prompt_needs_a_newline_in_the_alphabet(run):
    model, params, config = charlm.load_model(run)
    with pytest.raises(ValueError, match="prompt is empty and the alphabet has no newline"):
        alphabet = config.alphabet.replace("\n", "~")
        charlm.sample(model, params, alphabet, "", 5, key=jax.random.key(0))


# ----------------------------------------------------------------------------- via the CLI


def test_tiny_run_through_cli(run):
    record = json.loads((run / "metrics.json").read_text())
    history, final = record["history"], record["final"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    assert history[-1]["valid_bits_per_char"] == pytest.approx(
        history[-1]["valid_loss"] / np.log(2)
    )
    alphabet = record["config"]["alphabet"]
    assert alphabet == "".join(sorted(set(make_text(5000)[:3000])))
    assert final["val_bits_per_char"] == pytest.approx(final["val_loss"] / np.log(2))
    assert final["val_chars"] == 299  # 300 validation characters, the first one only an input
    assert set(final["markov_val_bits_per_char"]) == {"1", "2", "3"}
    best, best_bpc = final["markov_best_order"], final["markov_best_val_bits_per_char"]
    assert best_bpc == min(final["markov_val_bits_per_char"].values())
    assert best_bpc == final["markov_val_bits_per_char"][str(best)]
    assert final["beats_markov"] == (final["val_bits_per_char"] < best_bpc)
    assert len(final["sample"]) == 40 and set(final["sample"]) <= set(alphabet)
    assert set(final["markov_sample"]) <= set(alphabet)
    for name in ("loss.png", "bpc.png", "sample.txt", CHECKPOINT):
        assert (run / name).stat().st_size > 0, name


def test_sample_cli_prints_the_requested_length(run, capsys):
    args = ["sample", "--checkpoint", str(run), "--prompt", "The ", "--length", "40"]
    assert cli.main([*args, "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The ") and len(out) == 4 + 40 + 1 and out.endswith("\n")
    assert cli.main([*args, "--seed", "4"]) == 0
    assert capsys.readouterr().out == out
    assert cli.main([*args, "--seed", "5", "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out) == len(out)


@pytest.fixture
def other_task_checkpoint(run, tmp_path):
    payload = serialization.msgpack_restore((run / CHECKPOINT).read_bytes())
    payload["meta"] = json.dumps({**json.loads(payload["meta"]), "task": "hihello"})
    (tmp_path / CHECKPOINT).write_bytes(serialization.msgpack_serialize(payload))
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "Thé"], "prompt: character 'é' \\(position 2\\) is not in the alphabet"),
        (["--length", "0"], "length must be an int >= 1, got 0"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0, got -1.0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
    ],
)
def test_sample_cli_errors(run, args, message, capsys):
    import re

    assert cli.main(["sample", "--checkpoint", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrnn sample: error:") and re.search(message, err), err


def test_sample_cli_refuses_other_tasks_and_missing_checkpoints(other_task_checkpoint, capsys):
    assert cli.main(["sample", "--checkpoint", str(other_task_checkpoint)]) == 2
    assert "holds a 'hihello' checkpoint; sampling needs a 'charlm' one" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint", str(other_task_checkpoint / "nope")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_presets_fill_only_the_fields_left_unset():
    task = charlm.CharLM()
    fast = task.resolve(task.Config(corpus="shakespeare", alphabet="ab"))
    assert (fast.epochs, fast.learning_rate, fast.grad_clip) == (1, 3e-3, 1.0)
    seed = task.resolve(task.Config(alphabet="ab", preset="seed", epochs=3))
    assert (seed.epochs, seed.learning_rate, seed.grad_clip) == (3, 1e-3, 0.0)
    with pytest.raises(ValueError, match="preset must be one of"):
        task.resolve(task.Config(alphabet="ab", preset="slow"))
