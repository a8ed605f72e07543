"""Bad input, tried systematically: every error names the argument (or the file and line) and
what was expected; random valid input never crashes.

The layers are driven by hypothesis over random configurations (RNN / LSTM / GRU, 1–2 layers,
uni- or bidirectional, batch-first or not, batched or unbatched, with or without ``hx`` and
``lengths``); ``tests/test_errors.py`` and ``tests/test_lengths.py`` hold the hand-picked cases.
Shape and dtype errors are raised at trace time, so most checks run under ``jax.eval_shape``
(nothing is computed). Under ``jit`` values cannot be checked: an out-of-range length or token
id gives NaN for exactly that sequence / position (checked here too), never a silent clamp.
"""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import init_random, make_tar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxrnn
from jaxrnn import cli, data
from jaxrnn.data import DataError
from jaxrnn.runs import fit
from jaxrnn.task import Task, TaskConfig
from jaxrnn.tasks import get_task
from jaxrnn.tasks.addition import IN_ALPHABET, encode_strings
from jaxrnn.tasks.sentiment import encode_split

# Small and reproducible: no example database is written (no .hypothesis/ folder).
PROPERTY = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
CLASSES = {"RNN": jaxrnn.RNN, "LSTM": jaxrnn.LSTM, "GRU": jaxrnn.GRU}


@st.composite
def layer_cases(draw):
    """A random layer configuration and input shapes (``B`` None: unbatched)."""
    kind = draw(st.sampled_from(sorted(CLASSES)))
    H = draw(st.integers(2, 6))
    kw = dict(
        hidden_size=H,
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
    )
    if kind == "LSTM":
        kw["proj_size"] = draw(st.integers(0, H - 1))
    T, I = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    B = draw(st.none() | st.integers(1, 4))
    return kind, kw, T, B, I


def _x(kw, T, B, I):
    if B is None:
        return jnp.ones((T, I), jnp.float32)
    return jnp.ones((B, T, I) if kw["batch_first"] else (T, B, I), jnp.float32)


def _state_shapes(kind, kw, B):
    """The expected ``hx`` / ``h_n`` shapes: ``[L·D, B, H]`` (LSTM ``h`` ``[L·D, B, P]``)."""
    LD = kw["num_layers"] * (2 if kw["bidirectional"] else 1)
    P = kw.get("proj_size", 0) or kw["hidden_size"]
    batch = () if B is None else (B,)
    h = (LD, *batch, P)
    return [h, (LD, *batch, kw["hidden_size"])] if kind == "LSTM" else [h]


def _abstract_init(module, x):
    return jax.eval_shape(lambda: module.init(jax.random.key(0), x))


# ----------------------------------------------------------------------------- valid input


@PROPERTY
@given(
    case=layer_cases(), with_hx=st.booleans(), with_lengths=st.booleans(), seed=st.integers(0, 99)
)
def test_random_valid_input_runs_with_torch_shapes(case, with_hx, with_lengths, seed):
    kind, kw, T, B, I = case
    module = CLASSES[kind](**kw)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(_x(kw, T, B, I).shape), jnp.float32)
    shapes = _state_shapes(kind, kw, B)
    hx = None
    if with_hx:
        states = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
        hx = tuple(states) if kind == "LSTM" else states[0]
    lengths = None
    if with_lengths:
        lengths = rng.integers(1, T + 1, size=() if B is None else (B,))
    variables = init_random(module, x, seed=seed, dtype=jnp.float32)  # shapes only: no compile
    # Concrete lengths are closed over: checked while tracing, as eagerly; one compile.
    out, h_n = jax.jit(lambda v, x, hx: module.apply(v, x, hx, lengths=lengths))(variables, x, hx)

    D = 2 if kw["bidirectional"] else 1
    width = D * (kw.get("proj_size", 0) or kw["hidden_size"])
    want = (T, width) if B is None else ((B, T, width) if kw["batch_first"] else (T, B, width))
    assert out.shape == want and out.dtype == jnp.float32
    got_states = list(h_n) if kind == "LSTM" else [h_n]
    assert [s.shape for s in got_states] == shapes
    assert all(np.isfinite(np.asarray(a)).all() for a in [out, *got_states])
    if lengths is not None:  # packed-sequence semantics: zeros past each length
        o = np.asarray(out)
        o = o[:, None] if B is None else (o.swapaxes(0, 1) if kw["batch_first"] else o)
        past = np.arange(T)[:, None] >= np.reshape(lengths, (1, -1))  # [T, B]
        assert not o[past].any()


# ----------------------------------------------------------------------------- x


@PROPERTY
@given(case=layer_cases(), rank=st.sampled_from([0, 1, 4, 5]))
def test_x_of_any_wrong_rank_is_refused(case, rank):
    kind, kw, *_ = case
    shape = (3,) * rank
    expected = r"x must be \[time, batch, features\].*unbatched \[time, features\]; got shape "
    with pytest.raises(ValueError, match=expected + re.escape(str(shape))):
        _abstract_init(CLASSES[kind](**kw), jnp.zeros(shape))


@PROPERTY
@given(case=layer_cases(), delta=st.integers(1, 4))
def test_x_with_another_feature_size_than_the_weights(case, delta):
    kind, kw, T, B, I = case
    module = CLASSES[kind](**kw)
    variables = _abstract_init(module, _x(kw, T, B, I))
    wrong = _x(kw, T, B, I + delta)
    expected = rf"x has {I + delta} features, but weight_ih_l0 expects {I}"
    with pytest.raises(ValueError, match=expected):
        jax.eval_shape(lambda v: module.apply(v, wrong), variables)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hidden_size", True, "hidden_size must be a positive int, got True"),
        ("num_layers", 2.0, "num_layers must be a positive int, got 2.0"),
        ("unroll", 1.5, "unroll must be an int >= 1 (or True), got 1.5"),
        ("input_size", "4", "input_size must be None or an int >= 0, got '4'"),
        ("proj_size", 1.5, "proj_size must be 0 or 0 < proj_size < hidden_size = 3, got 1.5"),
    ],
)
def test_layer_fields_of_the_wrong_type(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _abstract_init(jaxrnn.LSTM(**{"hidden_size": 3, field: value}), jnp.zeros((2, 1, 4)))


def test_numpy_integers_are_valid_sizes():
    module = jaxrnn.GRU(hidden_size=np.int64(3), num_layers=np.int32(2))
    shapes = _abstract_init(module, jnp.zeros((2, 1, 4)))["params"]
    assert shapes["weight_hh_l1"].shape == (9, 3)


# ----------------------------------------------------------------------------- hx


@PROPERTY
@given(case=layer_cases(), which=st.integers(0, 1), axis=st.integers(0, 2), delta=st.integers(1, 3))
def test_hx_of_any_wrong_shape_names_the_expected_one(case, which, axis, delta):
    kind, kw, T, B, I = case
    module = CLASSES[kind](**kw)
    x = _x(kw, T, B, I)
    variables = _abstract_init(module, x)
    shapes = _state_shapes(kind, kw, B)
    which = which if kind == "LSTM" else 0
    axis = min(axis, len(shapes[which]) - 1)
    bad = list(shapes[which])
    bad[axis] += delta
    states = [jnp.zeros(s) for s in shapes]
    states[which] = jnp.zeros(bad)
    hx = tuple(states) if kind == "LSTM" else states[0]
    name = ("hx[0] (h_0)", "hx[1] (c_0)")[which] if kind == "LSTM" else "hx"
    expected = (
        re.escape(f"{name} must have shape {shapes[which]}") + ".*" + re.escape(f"got {tuple(bad)}")
    )
    with pytest.raises(ValueError, match=expected):
        jax.eval_shape(lambda v: module.apply(v, x, hx), variables)


@PROPERTY
@given(case=layer_cases(), dtype=st.sampled_from([jnp.int32, jnp.float16, jnp.bfloat16]))
def test_hx_of_another_dtype_is_refused(case, dtype):
    kind, kw, T, B, I = case
    module = CLASSES[kind](**kw)
    x = _x(kw, T, B, I)
    variables = _abstract_init(module, x)
    states = [jnp.zeros(s, dtype) for s in _state_shapes(kind, kw, B)]
    hx = tuple(states) if kind == "LSTM" else states[0]
    expected = f"has dtype {jnp.dtype(dtype).name}, but the input is float32"
    with pytest.raises(TypeError, match=expected):
        jax.eval_shape(lambda v: module.apply(v, x, hx), variables)


# ----------------------------------------------------------------------------- lengths


@st.composite
def bad_lengths(draw, T, B):
    """``(lengths, message)`` for a batch of ``B`` sequences of ``T`` steps."""
    kind = draw(st.sampled_from(["low", "high", "shape", "float", "bool"]))
    good = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    if kind in ("low", "high"):
        i = draw(st.integers(0, B - 1))
        value = draw(st.integers(-5, 0) if kind == "low" else st.integers(T + 1, T + 50))
        values = np.array(good)
        values[i] = value
        first = int(np.flatnonzero((values < 1) | (values > T))[0])
        return values, (
            ValueError,
            rf"lengths must satisfy 1 <= length <= T = {T}; "
            rf"got lengths\[{first}\] = {values[first]}",
        )
    if kind == "shape":
        shape = draw(st.sampled_from([(B + 1,), (B, 1), ()] + ([(B - 1,)] if B > 1 else [])))
        expected = re.escape(f"lengths must have shape [{B}] (one per sequence), got {shape}")
        return np.ones(shape, np.int32), (ValueError, expected)
    dtype = np.float32 if kind == "float" else bool
    return np.array(good).astype(dtype), (
        TypeError,
        f"lengths must be integers, got dtype {np.dtype(dtype).name}",
    )


@PROPERTY
@given(case=layer_cases(), data_=st.data())
def test_bad_lengths_are_refused_eagerly(case, data_):
    kind, kw, T, B, I = case
    B = B or 2  # batched: [B] lengths
    module = CLASSES[kind](**kw)
    x = _x(kw, T, B, I)
    variables = _abstract_init(module, x)
    lengths, (error, message) = data_.draw(bad_lengths(T, B))
    with pytest.raises(error, match=message):
        jax.eval_shape(lambda v: module.apply(v, x, lengths=lengths), variables)


GRU_T, GRU_B = 6, 5


@pytest.fixture(scope="module")
def jitted_gru():
    module = jaxrnn.GRU(hidden_size=3, bidirectional=True)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((GRU_T, GRU_B, 2)), jnp.float32)
    variables = module.init(jax.random.key(0), x)
    return jax.jit(lambda lengths: module.apply(variables, x, lengths=lengths))


@settings(PROPERTY, max_examples=30)
@given(lengths=st.lists(st.integers(-3, GRU_T + 3), min_size=GRU_B, max_size=GRU_B))
def test_under_jit_a_bad_length_gives_nan_for_its_sequence_only(jitted_gru, lengths):
    """No check can raise inside a compiled program: the bad sequences are NaN, never clamped;
    shape and dtype are still checked when tracing (see test_lengths.py)."""
    lengths = np.array(lengths)
    out, h_n = jitted_gru(jnp.asarray(lengths))
    bad = (lengths < 1) | (lengths > GRU_T)
    out, h_n = np.asarray(out), np.asarray(h_n)
    assert np.isnan(out[:, bad]).all() and np.isnan(h_n[:, bad]).all()
    assert np.isfinite(out[:, ~bad]).all() and np.isfinite(h_n[:, ~bad]).all()


# ----------------------------------------------------------------------------- token ids

V = 7
EMBED = jaxrnn.Embed(num_embeddings=V, features=2)
TABLE = {"params": {"embedding": jnp.arange(2 * V, dtype=jnp.float32).reshape(V, 2)}}
JIT_EMBED = jax.jit(EMBED.apply)


@settings(PROPERTY, max_examples=30)
@given(ids=st.lists(st.integers(-2 * V, 2 * V), min_size=6, max_size=6))
def test_token_ids_out_of_range_eagerly_and_under_jit(ids):
    ids = np.array(ids).reshape(2, 3)
    bad = (ids < 0) | (ids >= V)
    traced = np.asarray(JIT_EMBED(TABLE, jnp.asarray(ids)))  # one compile for every example
    assert np.isnan(traced[bad]).all()
    np.testing.assert_array_equal(traced[~bad], np.asarray(TABLE["params"]["embedding"])[ids[~bad]])
    if not bad.any():
        np.testing.assert_array_equal(EMBED.apply(TABLE, ids), traced)
        return
    i, j = np.argwhere(bad)[0]
    message = (
        rf"ids must be in \[0, {V}\) \(num_embeddings={V}\); got ids\[{i}, {j}\] = "
        rf"{ids[i, j]} \({bad.sum()} of 6 out of range\)"
    )
    with pytest.raises(jaxrnn.TokenIdError, match=message):
        EMBED.apply(TABLE, ids)


def test_a_tasks_data_is_checked_for_token_ids_before_training(monkeypatch):
    """The engine runs the task's ``check_data`` on the host, before anything compiles."""
    task = get_task("index-recall")
    real = type(task).data

    def poisoned(self, config, rng):
        splits = real(self, config, rng)
        splits["test"]["x"][3, 1] = config.high - config.low  # one id past the vocabulary
        return splits

    monkeypatch.setattr(type(task), "data", poisoned)
    with pytest.raises(
        jaxrnn.TokenIdError,
        match=r"test x must be in \[0, 10\).*"
        r"got test x\[3, 1\] = 10",
    ):
        fit(task, task.Config(n=16, epochs=1), progress=False)


# ----------------------------------------------------------------------------- sequences too long


def test_addition_problem_longer_than_the_input_width():
    width = 2 * 4 + 2  # max_digits=4: "dddd+dddd" and a stop symbol
    ids, lengths = encode_strings(["123+4567"], IN_ALPHABET, width)
    assert ids.shape == (1, width) and lengths.tolist() == [8]
    with pytest.raises(
        ValueError,
        match=r"strings\[1\] = '12345\+67890' has 11 characters; "
        r"at most width = 10 fit",
    ):
        encode_strings(["1+2", "12345+67890"], IN_ALPHABET, width)
    with pytest.raises(
        ValueError,
        match=r"strings\[0\] = '1-2' has characters outside the "
        r"alphabet '\+0123456789': \['-'\]",
    ):
        encode_strings(["1-2"], IN_ALPHABET, width)


def test_review_longer_than_the_longest_bucket():
    split = encode_split([[1, 2], [3, 4, 5]], [1, 0], np.array([2, 3]))
    assert split["x"].shape == (2, 3) and split["width"].tolist() == [2, 3]
    with pytest.raises(
        ValueError,
        match=r"review 1 has 5 tokens; the longest bucket holds 3 "
        r"\(bounds \[2, 3\]\)",
    ):
        encode_split([[1], [1, 2, 3, 4, 5]], [1, 0], np.array([2, 3]))


# ----------------------------------------------------------------------------- configs, tasks


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs must be an int >= 1, got 0"),
        ("epochs", True, "epochs must be an int >= 1, got True"),
        ("batch_size", 0, "batch_size must be an int >= 1, got 0"),
        ("batch_size", 2.5, "batch_size must be an int >= 1, got 2.5"),
        ("learning_rate", -0.1, "learning_rate must be a finite number >= 0, got -0.1"),
        ("learning_rate", float("nan"), "learning_rate must be a finite number >= 0, got nan"),
        ("grad_clip", -1.0, "grad_clip must be a finite number >= 0, got -1.0"),
        ("weight_decay", float("inf"), "weight_decay must be a finite number >= 0, got inf"),
    ],
)
def test_engine_config_values_are_checked_before_anything_runs(field, value, message):
    task = get_task("hihello")
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(task, task.Config(**{field: value}), progress=False)


def test_engine_config_values_through_the_cli(capsys):
    assert cli.main(["train", "hihello", "--set", "batch_size=0", "--out", "/nonexistent"]) == 2
    assert "jaxrnn train: error: batch_size must be an int >= 1, got 0" in capsys.readouterr().err


def test_unknown_task_and_another_tasks_config():
    with pytest.raises(KeyError, match="unknown task 'no-such-task'; available: .*hihello"):
        get_task("no-such-task")
    task = get_task("hihello")
    with pytest.raises(TypeError, match="config must be a HiHelloConfig .*got IndexRecallConfig"):
        fit(task, get_task("index-recall").Config(), progress=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        task.Config(nope=1)  # the dataclass itself; the CLI's --set names the valid keys


# ----------------------------------------------------------------------------- empty data


@pytest.mark.parametrize(
    "name, changes, message",
    [
        ("index-recall", dict(n=0), "index-recall: the 'train' split is empty (0 examples)"),
        (
            "addition",
            dict(n_examples=40, test_fraction=0.0),
            "addition: the 'test' split is empty (0 examples)",
        ),
    ],
)
def test_empty_splits_are_refused_before_training(name, changes, message):
    task = get_task(name)
    with pytest.raises(ValueError, match=re.escape(message) + ".*needs at least one"):
        fit(task, task.Config(epochs=1, **changes), progress=False)


@dataclasses.dataclass(frozen=True)
class RaggedConfig(TaskConfig):
    epochs: int = 1


class Ragged(Task):
    name, Config, metric = "ragged", RaggedConfig, "train_loss"

    def data(self, config, rng):
        return {"train": {"x": np.ones((4, 1), np.float32), "y": np.ones(3, np.float32)}}


def test_split_arrays_of_different_lengths_are_refused():
    with pytest.raises(
        ValueError,
        match=r"ragged: the arrays of the 'train' split differ in "
        r"length \(\{'x': 4, 'y': 3\}\)",
    ):
        fit(Ragged(), progress=False)


# ----------------------------------------------------------------------------- data files
# tests/test_data.py has the CSV rows, the aclImdb layout and a non-UTF-8 .txt; these are
# the remaining malformed files.


def test_truncated_aclimdb_tarball(tmp_path):
    rng = np.random.default_rng(0)
    files = {f"aclImdb/train/pos/{i}_9.txt": rng.bytes(2000).hex().encode() for i in range(8)}
    whole = make_tar(tmp_path / "whole.tar.gz", files).read_bytes()
    cut = tmp_path / "aclImdb_v1.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    with pytest.raises(
        DataError,
        match=r"aclImdb_v1.tar.gz: truncated or corrupt .tar.gz "
        r"\(EOFError: .*\); download it again",
    ):
        data.load_reviews(cut)


def test_non_utf8_review_names_its_file_and_line(tmp_path):
    latin = "Good.\nTrès bon.".encode("latin-1")
    tarball = make_tar(tmp_path / "acl.tar.gz", {"aclImdb/test/neg/7_2.txt": latin})
    with pytest.raises(
        DataError,
        match=r"acl.tar.gz:aclImdb/test/neg/7_2.txt: not UTF-8 text "
        r"\(line 2, byte 8: b'\\xe8'\)",
    ):
        data.load_reviews(tarball)
    folder = tmp_path / "aclImdb" / "train" / "pos"
    folder.mkdir(parents=True)
    (folder / "3_8.txt").write_bytes(latin)
    with pytest.raises(DataError, match=r"aclImdb/train/pos/3_8.txt: not UTF-8 text \(line 2"):
        data.load_reviews(tmp_path / "aclImdb")
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_bytes(b"text,label\nfine,1\n" + "très,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"reviews.csv: not UTF-8 text \(line 3"):
        data.load_reviews(csv_file)


def test_csv_field_over_the_csv_module_limit(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("text,label\n" + "a" * 200_000 + ",1\n")
    with pytest.raises(DataError, match=r"huge.csv: line 2: malformed CSV \(field larger than"):
        data.load_reviews(path)


def test_malformed_records_inside_the_pinned_corpora_name_the_line(tmp_path):
    """The readers of the fetched archives (after their sha256 check) name file and line."""
    lines = [
        json.dumps({"book": "Genesis", "chapter": 1, "text": "In the beginning."}),
        json.dumps({"book": "Genesis", "text": "no chapter"}),
    ]
    kjv = make_tar(tmp_path / "kjv.tar.gz", {"b/bible/data/kjv.jsonl": "\n".join(lines).encode()})
    with pytest.raises(DataError, match=r"kjv.tar.gz: kjv.jsonl line 2: not a verse record"):
        data.CORPORA["kjv"].read(kjv)
    inner = make_tar(
        tmp_path / "inner.tar.gz",
        {"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": b"1\t2.5\tGood.\n2\tgreat\tBad."},
    )
    outer = make_tar(
        tmp_path / "vader.tar.gz",
        {"v/additional_resources/hutto_ICWSM_2014.tar.gz": inner.read_bytes()},
    )
    expected = r"GroundTruth.txt line 2: expected 'id<TAB>rating<TAB>text', got '2\\tgreat\\tBad.'"
    with pytest.raises(DataError, match=expected):
        data.CORPORA["rotten-tomatoes"].read(outer)
