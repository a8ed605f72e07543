"""How parameters and states start: initializers, the forget-gate bias, ``initialize_carry``
on the layers, and ``Embed(padding_idx=...)`` (torch's zero row that never trains)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import randn

import jaxrnn

T, B, I, H, P = 6, 3, 5, 7, 4


def _init(module, *args):
    return module.init(jax.random.key(0, impl="rbg"), *args)["params"]


def _cell_args(cell):
    x = jnp.zeros((B, I))
    return cell.initialize_carry(None, x.shape), x


# ----------------------------------------------------------------------------- initializers


@pytest.mark.parametrize(
    "field, changed",
    [
        ("kernel_init", {"weight_ih"}),
        ("recurrent_kernel_init", {"weight_hh"}),
        ("bias_init", {"bias_ih", "bias_hh"}),
    ],
)
def test_an_initializer_changes_its_parameters_only(field, changed):
    """The other parameters keep torch's default, drawn with the same keys as before."""
    x = jnp.zeros((T, B, I))
    default = _init(jaxrnn.LSTM(hidden_size=H, num_layers=2, bidirectional=True), x)
    custom = jaxrnn.LSTM(
        hidden_size=H, num_layers=2, bidirectional=True, **{field: nn.initializers.constant(0.25)}
    )
    params = _init(custom, x)
    assert list(params) == list(default)
    for name, value in params.items():
        if name.split("_l")[0] in changed:
            np.testing.assert_array_equal(value, np.full(value.shape, 0.25, np.float32))
        else:
            np.testing.assert_array_equal(value, default[name], err_msg=name)


@pytest.mark.parametrize("cls, G", [(jaxrnn.LSTMCell, 4), (jaxrnn.GRUCell, 3), (jaxrnn.RNNCell, 1)])
def test_orthogonal_recurrent_weights_per_gate(cls, G):
    """Each gate's W_h* block [H, H] is orthogonal (as flax.linen.LSTMCell's per-gate kernels)."""
    cell = cls(hidden_size=H, recurrent_kernel_init=nn.initializers.orthogonal())
    w = np.asarray(_init(cell, *_cell_args(cell))["weight_hh"], np.float64)
    assert w.shape == (G * H, H)
    blocks = np.split(w, G)
    for block in blocks:
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)
    if G > 1:  # each block drawn with its own key
        assert not np.allclose(blocks[0], blocks[1])


def test_weight_initializers_get_flax_layout_per_gate():
    """Called with [in, H] (Flax's [in, out]) once per gate; the blocks are transposed into
    torch's [G·H, in]."""
    calls = []

    def init(key, shape, dtype=jnp.float32):
        calls.append(shape)
        return jnp.broadcast_to(jnp.arange(shape[1], dtype=dtype), shape)  # column j holds j

    lstm = jaxrnn.LSTM(hidden_size=H, proj_size=P, kernel_init=init)
    params = _init(lstm, jnp.zeros((T, B, I)))
    assert calls == [(I, H)] * 4 + [(H, P)]  # weight_ih: 4 gates; weight_hr: one block
    expected = np.tile(np.arange(H, dtype=np.float32)[:, None], (4, I))  # row r of a gate: r
    np.testing.assert_array_equal(params["weight_ih_l0"], expected)
    np.testing.assert_array_equal(params["weight_hr_l0"], np.tile(np.arange(P)[:, None], (1, H)))


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: jaxrnn.LSTM(hidden_size=H, num_layers=2, bidirectional=True, **kw),
        lambda **kw: jaxrnn.LSTMCell(hidden_size=H, **kw),
    ],
    ids=["LSTM", "LSTMCell"],
)
def test_forget_bias_is_added_to_the_f_block_of_bias_hh(make):
    module = make(bias_init=nn.initializers.zeros, forget_bias=1.0)
    args = _cell_args(module) if isinstance(module, jaxrnn.LSTMCell) else (jnp.zeros((T, B, I)),)
    params = _init(module, *args)
    f_block = np.zeros(4 * H, np.float32)
    f_block[H : 2 * H] = 1.0
    for name, value in params.items():
        if name.startswith("bias_hh"):
            np.testing.assert_array_equal(value, f_block, err_msg=name)
        elif name.startswith("bias_ih"):
            np.testing.assert_array_equal(value, np.zeros(4 * H), err_msg=name)


def test_forget_bias_on_top_of_the_default_init():
    x = jnp.zeros((T, B, I))
    default = _init(jaxrnn.LSTM(hidden_size=H), x)
    shifted = _init(jaxrnn.LSTM(hidden_size=H, forget_bias=2.0), x)
    delta = np.asarray(shifted["bias_hh_l0"]) - np.asarray(default["bias_hh_l0"])
    np.testing.assert_allclose(delta, np.repeat([0.0, 2.0, 0.0, 0.0], H), atol=1e-6)
    np.testing.assert_array_equal(shifted["bias_ih_l0"], default["bias_ih_l0"])


@pytest.mark.parametrize(
    "module, message",
    [
        (jaxrnn.LSTM(hidden_size=H, bias=False, forget_bias=1.0), "forget_bias needs bias=True"),
        (jaxrnn.LSTMCell(hidden_size=H, bias=False, forget_bias=1.0), "forget_bias needs bias"),
    ],
    ids=["LSTM-nobias", "LSTMCell-nobias"],
)
def test_forget_bias_needs_biases(module, message):
    args = _cell_args(module) if isinstance(module, jaxrnn.LSTMCell) else (jnp.zeros((T, B, I)),)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(module.init, jax.random.key(0), *args)


# ----------------------------------------------------------------------------- initialize_carry


@pytest.mark.parametrize(
    "module, x_shape, shapes",
    [
        (jaxrnn.GRU(hidden_size=H, num_layers=2), (T, B, I), [(2, B, H)]),
        (jaxrnn.RNN(hidden_size=H, bidirectional=True, batch_first=True), (B, T, I), [(2, B, H)]),
        (jaxrnn.GRU(hidden_size=H, batch_first=True), (T, I), [(1, H)]),  # unbatched
        (jaxrnn.LSTM(hidden_size=H, proj_size=P, num_layers=3), (T, B, I), [(3, B, P), (3, B, H)]),
        (jaxrnn.LinearRNN(hidden_size=H, batch_first=True), (B, T, I), [(B, H)]),
    ],
    ids=["GRU", "RNN-bi-bf", "GRU-unbatched", "LSTM-proj", "LinearRNN-bf"],
)
def test_layer_initialize_carry_is_zeros_of_the_hx_shape(rng, module, x_shape, shapes):
    carry = module.initialize_carry(jax.random.key(0), x_shape)
    states = carry if isinstance(carry, tuple) else (carry,)
    assert [s.shape for s in states] == shapes
    assert all(s.dtype == jnp.float32 and not np.asarray(s).any() for s in states)
    x = randn(rng, *x_shape, dtype=jnp.float32)
    variables = module.init(jax.random.key(1), x)
    with_carry = module.apply(variables, x, carry)
    without = module.apply(variables, x)
    for a, b in zip(jax.tree.leaves(with_carry), jax.tree.leaves(without)):
        np.testing.assert_array_equal(a, b)


def test_layer_initialize_carry_takes_the_compute_dtype():
    carry = jaxrnn.GRU(hidden_size=H, dtype=jnp.bfloat16).initialize_carry(None, (T, B, I))
    assert carry.dtype == jnp.bfloat16


# ----------------------------------------------------------------------------- Embed padding

V, F = 11, 4


@pytest.mark.parametrize("padding_idx, row", [(3, 3), (-1, V - 1)])
def test_embed_padding_row_starts_at_zero_and_gets_no_gradient(padding_idx, row):
    embed = jaxrnn.Embed(num_embeddings=V, features=F, padding_idx=padding_idx)
    ids = jnp.array([[row, 1, row], [2, row, 0]])
    table = _init(embed, ids)["embedding"]
    assert not np.asarray(table[row]).any()
    plain = _init(jaxrnn.Embed(num_embeddings=V, features=F), ids)["embedding"]
    others = np.arange(V) != row
    np.testing.assert_array_equal(table[others], plain[others])  # the same draws otherwise

    table = table.at[row].set(1.5)  # a non-zero padding row is looked up as is (as torch)
    weights = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, F)), jnp.float32)

    def loss(t):
        return jnp.sum(embed.apply({"params": {"embedding": t}}, ids) * weights)

    out = embed.apply({"params": {"embedding": table}}, ids)
    np.testing.assert_array_equal(out[0, 0], np.full(F, 1.5, np.float32))
    grad = np.asarray(jax.grad(loss)(table))
    assert not grad[row].any()
    np.testing.assert_allclose(grad[1], weights[0, 1], rtol=1e-6)
    np.testing.assert_allclose(grad[0], weights[1, 2], rtol=1e-6)


@pytest.mark.parametrize(
    "padding_idx, error, message",
    [
        (V, ValueError, rf"padding_idx must be in \[-{V}, {V}\)"),
        (-V - 1, ValueError, "got -12"),
        (1.0, TypeError, "padding_idx must be None or an int"),
    ],
)
def test_embed_padding_idx_out_of_range(padding_idx, error, message):
    embed = jaxrnn.Embed(num_embeddings=V, features=F, padding_idx=padding_idx)
    with pytest.raises(error, match=message):
        jax.eval_shape(embed.init, jax.random.key(0), jnp.zeros((2,), jnp.int32))
