"""The optional cuDNN backend of ``jaxrnn.LSTM`` (``jaxrnn/cudnn.py``).

On a machine without a CUDA GPU (CI) the real cuDNN call cannot run, so these tests check
everything around it against ``jax.experimental.rnn``'s own pure-JAX reference,
``lstm_ref``, which takes the unpacked cuDNN weights: the weight packing, the batch-first and
state plumbing, lengths, bidirectional stacks, and gradients through the packing. The last
test runs the real cuDNN kernel and is skipped where there is none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import TOL32, assert_close
from jax.experimental import rnn

import jaxrnn
from jaxrnn import cudnn

T, B, I, H = 6, 3, 5, 4


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(T, B, I)), dtype)
    lengths = jnp.asarray([T, 2, 4])
    return x, lengths


def reference_lstm(
    x,
    h_0,
    c_0,
    weights,
    seq_lengths,
    *,
    input_size,
    hidden_size,
    num_layers,
    dropout,
    bidirectional,
    precision=None,
):
    """``rnn.lstm``'s signature on ``rnn.lstm_ref``: what cuDNN computes, in plain JAX."""
    del precision
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return rnn.lstm_ref(
        x,
        h_0,
        c_0,
        *unpacked,
        seq_lengths,
        input_size,
        hidden_size,
        num_layers,
        dropout,
        bidirectional,
    )


@pytest.fixture
def fake_gpu(monkeypatch):
    """cuDNN "available", its kernel replaced by the reference."""
    monkeypatch.setattr(cudnn, "available", lambda: True)
    monkeypatch.setattr(rnn, "lstm", reference_lstm)


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (2, True)])
def test_packing_is_cudnn_layout(layers, bidirectional):
    params = jaxrnn.LSTM(hidden_size=H, num_layers=layers, bidirectional=bidirectional).init(
        jax.random.key(0), jnp.ones((T, B, I))
    )["params"]
    flat = cudnn.pack_weights(params, num_layers=layers, bidirectional=bidirectional)
    assert flat.shape == (rnn.get_num_params_in_lstm(I, H, layers, bidirectional),)
    unpacked = rnn.unpack_lstm_weights(flat, I, H, layers, bidirectional)
    for kinds, got in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), unpacked):
        for pseudo_layer, suffix in enumerate(cudnn.suffixes(layers, bidirectional)):
            np.testing.assert_array_equal(got[pseudo_layer], params[kinds + suffix])


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_cudnn_path_equals_scan(fake_gpu, layers, bidirectional, with_lengths):
    x, lengths = _inputs(jnp.float32)
    lengths = lengths if with_lengths else None
    kwargs = dict(hidden_size=H, num_layers=layers, bidirectional=bidirectional)
    scan, cudnn_layer = jaxrnn.LSTM(**kwargs), jaxrnn.LSTM(**kwargs, backend="cudnn")
    params = scan.init(jax.random.key(1), x)
    h0 = np.random.default_rng(2).normal(size=(layers * (1 + bidirectional), B, H))
    h0 = jnp.asarray(h0, jnp.float32)
    hx = (h0, 0.5 * h0)

    def loss(module, params):
        out, (h_n, c_n) = module.apply(params, x, hx, lengths=lengths)
        return jnp.sum(out**2) + jnp.sum(h_n * c_n), (out, h_n, c_n)

    (_, ref), ref_grads = jax.value_and_grad(lambda p: loss(scan, p), has_aux=True)(params)
    (_, got), grads = jax.value_and_grad(lambda p: loss(cudnn_layer, p), has_aux=True)(params)
    # float32, as cuDNN runs (jaxlib's kernel has no float64): the parity suite's float32 bound
    for name, g, r in zip(("output", "h_n", "c_n"), got, ref):
        assert_close(g, r, TOL32, name)
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
        assert_close(g, r, TOL32, jax.tree_util.keystr(path))


def test_cudnn_path_is_taken(fake_gpu, monkeypatch):
    calls = []
    monkeypatch.setattr(rnn, "lstm", lambda *a, **k: calls.append(k) or reference_lstm(*a, **k))
    x, _ = _inputs(jnp.float32)
    layer = jaxrnn.LSTM(hidden_size=H, num_layers=2, backend="auto")
    layer.apply(layer.init(jax.random.key(0), x), x)
    assert [c["num_layers"] for c in calls] == [2, 2]  # init and apply, one call each


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(proj_size=2), "proj_size=2"),
        (dict(bias=False), "bias=False"),
        (dict(num_layers=2, dropout=0.5), "dropout=0.5 while training"),
        (dict(dtype=jnp.bfloat16), "dtype bfloat16"),
    ],
)
def test_cudnn_refuses_what_it_cannot_run(fake_gpu, kwargs, message):
    x, _ = _inputs(jnp.float32)
    scan = jaxrnn.LSTM(hidden_size=H, **kwargs)
    params = scan.init(jax.random.key(0), x)
    rngs = {"dropout": jax.random.key(1)}
    with pytest.raises(ValueError, match=f"backend='cudnn' cannot run this LSTM: {message}"):
        jaxrnn.LSTM(hidden_size=H, backend="cudnn", **kwargs).apply(
            params, x, deterministic=False, rngs=rngs
        )
    # "auto" falls back to the scan, with the very same numbers
    auto = jaxrnn.LSTM(hidden_size=H, backend="auto", **kwargs)
    got = auto.apply(params, x, deterministic=False, rngs=rngs)[0]
    ref = scan.apply(params, x, deterministic=False, rngs=rngs)[0]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.skipif(cudnn.available(), reason="this machine has cuDNN")
def test_cudnn_without_a_gpu_is_a_clear_error():
    x, _ = _inputs(jnp.float32)
    layer = jaxrnn.LSTM(hidden_size=H, backend="cudnn")
    with pytest.raises(ValueError, match="cuDNN needs a CUDA GPU.*backend='auto'"):
        layer.init(jax.random.key(0), x)
    auto = jaxrnn.LSTM(hidden_size=H, backend="auto")
    params = auto.init(jax.random.key(0), x)
    np.testing.assert_array_equal(
        auto.apply(params, x)[0], jaxrnn.LSTM(hidden_size=H).apply(params, x)[0]
    )


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        jaxrnn.LSTM(hidden_size=H, backend="cuda").init(jax.random.key(0), jnp.ones((T, B, I)))


@pytest.mark.skipif(not cudnn.available(), reason="needs a CUDA GPU with cuDNN")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_real_cudnn_matches_scan(bidirectional):
    x, lengths = _inputs(jnp.float32)
    kwargs = dict(hidden_size=H, num_layers=2, bidirectional=bidirectional)
    scan, fast = jaxrnn.LSTM(**kwargs), jaxrnn.LSTM(**kwargs, backend="cudnn")
    params = scan.init(jax.random.key(1), x)
    with jax.default_matmul_precision("highest"):  # no TF32 on either side
        loss = lambda m, p: jnp.sum(m.apply(p, x, lengths=lengths)[0] ** 2)  # noqa: E731
        ref, ref_grads = jax.value_and_grad(lambda p: loss(scan, p))(params)
        got, grads = jax.value_and_grad(lambda p: loss(fast, p))(params)
    assert_close(got, ref, TOL32, "loss")
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        assert_close(g, r, TOL32, "grad")
