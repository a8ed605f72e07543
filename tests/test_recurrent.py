"""``jaxrnn.Recurrent`` / ``Bidirectional``: any cell with the layers' packed-sequence contract.

A user's own cell (defined here, not jaxrnn's) against a plain Python loop over each sequence's
valid prefix, forward and reverse, with lengths and an initial carry; jaxrnn's LSTMCell through
Recurrent against ``jaxrnn.LSTM`` on the same weights; flax.linen's cells against
``flax.linen.RNN``; and the lengths checks the layers make.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import TOL32, TOL64, assert_close, init_random, randn

import jaxrnn

T, B, I, H = 7, 4, 3, 5
LENGTHS = np.array([7, 2, 5, 1])  # unsorted, a full one, a length-1 one


class CountingCell(nn.Module):
    """A user's cell, not jaxrnn's: carry ``(h [B, H], n [B])``, output ``2h + n``::

    h' = tanh(x W + h U + b),   n' = n + 1
    """

    features: int

    @nn.compact
    def __call__(self, carry, x):
        h, n = carry
        w = self.param("w", nn.initializers.normal(0.7), (x.shape[-1], self.features))
        u = self.param("u", nn.initializers.orthogonal(), (self.features, self.features))
        b = self.param("b", nn.initializers.normal(0.3), (self.features,))
        h = jnp.tanh(x @ w + h @ u + b)
        n = n + 1
        return (h, n), 2 * h + n[..., None]

    def initialize_carry(self, key, input_shape):
        del key
        return jnp.zeros((*input_shape[:-1], self.features)), jnp.zeros(input_shape[:-1])


def python_loop(cell, variables, xs, carry, lengths, reverse: bool):
    """Each sequence on its own: the cell stepped over its valid prefix (backwards when
    ``reverse``); outputs zero past the length; the carry after its last step."""
    outputs = np.zeros((T, B, H))
    finals = []
    for b in range(B):
        c = jax.tree.map(lambda a: a[b], carry)
        steps = range(int(lengths[b]))
        for t in reversed(steps) if reverse else steps:
            c, y = cell.apply(variables, c, xs[t, b])
            outputs[t, b] = y
        finals.append(c)
    return outputs, jax.tree.map(lambda *a: np.stack(a), *finals)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tf", "bf"])
def test_users_cell_equals_a_python_loop_over_the_valid_prefix(x64, rng, reverse, batch_first):
    cell = CountingCell(features=H)
    xs = randn(rng, T, B, I)  # [T, B, I]
    carry = (randn(rng, B, H), jnp.asarray(rng.integers(0, 3, B), jnp.float64))
    variables = cell.init(jax.random.key(0), carry, xs[0])
    ref_out, ref_carry = python_loop(cell, variables, xs, carry, LENGTHS, reverse)

    layer = jaxrnn.Recurrent(cell, batch_first=batch_first, reverse=reverse)
    x = jnp.swapaxes(xs, 0, 1) if batch_first else xs
    out, final = layer.apply({"params": {"cell": variables["params"]}}, x, carry, lengths=LENGTHS)
    out = np.swapaxes(out, 0, 1) if batch_first else out
    assert_close(out, ref_out, TOL64, "outputs")
    assert_close(final[0], ref_carry[0], TOL64, "final h")
    np.testing.assert_array_equal(final[1], carry[1] + LENGTHS)  # n counted valid steps only
    assert not np.asarray(out)[np.arange(T)[:, None] >= LENGTHS[None, :]].any()


def test_users_cell_default_carry_and_no_lengths(x64, rng):
    """Without lengths every step counts; without a carry the cell's initialize_carry."""
    cell = CountingCell(features=H)
    xs = randn(rng, T, B, I)
    variables = init_random(jaxrnn.Recurrent(cell), xs, seed=1)
    out, (h, n) = jaxrnn.Recurrent(cell).apply(variables, xs)
    carry = cell.initialize_carry(None, (B, I))
    inner = {"params": variables["params"]["cell"]}
    ref_out, ref_carry = python_loop(cell, inner, xs, carry, np.full(B, T), reverse=False)
    assert_close(out, ref_out, TOL64, "outputs")
    assert_close(h, ref_carry[0], TOL64, "h")
    np.testing.assert_array_equal(n, np.full(B, T))


def test_unbatched_x(x64, rng):
    cell = CountingCell(features=H)
    xs = randn(rng, T, I)  # [T, I]
    variables = init_random(jaxrnn.Recurrent(cell), xs, seed=2)
    layer = jaxrnn.Recurrent(cell, reverse=True)
    out, (h, n) = layer.apply(variables, xs, lengths=3)
    batched, (h_b, _) = layer.apply(variables, xs[:, None], lengths=np.array([3]))
    assert out.shape == (T, H) and h.shape == (H,) and int(n) == 3
    np.testing.assert_array_equal(out, batched[:, 0])
    np.testing.assert_array_equal(h, h_b[0])


# ----------------------------------------------------------------------------- jaxrnn's cells


def _lstm_params(cell_params: dict, suffix: str) -> dict:
    return {k + suffix: v for k, v in cell_params.items()}


@pytest.mark.parametrize("dtype, tol", [("float64", TOL64), ("float32", TOL32)])
def test_recurrent_lstm_cell_equals_the_lstm_layer(rng, request, dtype, tol):
    """Recurrent(jaxrnn.LSTMCell) steps the same numbers as jaxrnn.LSTM's fused scan."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    x = randn(rng, B, T, I, dtype=dtype)
    layer = jaxrnn.Recurrent(jaxrnn.LSTMCell(hidden_size=H, param_dtype=dtype), batch_first=True)
    variables = init_random(layer, x, seed=3, dtype=dtype)
    h0, c0 = randn(rng, 1, B, H, dtype=dtype), randn(rng, 1, B, H, dtype=dtype)
    out, (h, c) = layer.apply(variables, x, (h0[0], c0[0]), lengths=LENGTHS)

    lstm = jaxrnn.LSTM(hidden_size=H, batch_first=True)
    params = _lstm_params(variables["params"]["cell"], "_l0")
    ref, (h_n, c_n) = lstm.apply({"params": params}, x, (h0, c0), lengths=LENGTHS)
    assert_close(out, ref, tol, "output")
    assert_close(h, h_n[0], tol, "h_n")
    assert_close(c, c_n[0], tol, "c_n")


def test_bidirectional_equals_the_bidirectional_layer(x64, rng):
    """Forward then reverse, concatenated as torch: Bidirectional(Recurrent(GRUCell) × 2)."""
    x = randn(rng, T, B, I)
    layer = jaxrnn.Bidirectional(
        jaxrnn.Recurrent(jaxrnn.GRUCell(hidden_size=H, param_dtype=jnp.float64)),
        jaxrnn.Recurrent(jaxrnn.GRUCell(hidden_size=H, param_dtype=jnp.float64)),
    )
    variables = init_random(layer, x, seed=4)
    out, (h_f, h_b) = layer.apply(variables, x, lengths=LENGTHS)
    p = variables["params"]
    params = _lstm_params(p["forward"]["cell"], "_l0")
    params |= _lstm_params(p["backward"]["cell"], "_l0_reverse")
    ref, h_n = jaxrnn.GRU(hidden_size=H, bidirectional=True).apply(
        {"params": params}, x, lengths=LENGTHS
    )
    assert_close(out, ref, TOL64, "output")
    assert_close(h_f, h_n[0], TOL64, "h_n forward")
    assert_close(h_b, h_n[1], TOL64, "h_n reverse")


def test_bidirectional_carry_is_a_pair(rng):
    layer = jaxrnn.Bidirectional(
        jaxrnn.Recurrent(jaxrnn.GRUCell(hidden_size=H)),
        jaxrnn.Recurrent(jaxrnn.GRUCell(hidden_size=H)),
    )
    x = randn(rng, T, B, I, dtype=jnp.float32)
    variables = jax.eval_shape(layer.init, jax.random.key(0), x)
    with pytest.raises(TypeError, match=r"carry must be None or a pair"):
        jax.eval_shape(lambda v: layer.apply(v, x, jnp.zeros((B, H))), variables)


# ----------------------------------------------------------------------------- flax's cells


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.LSTMCell(H, param_dtype=jnp.float64),
        lambda: nn.GRUCell(H, param_dtype=jnp.float64),
        lambda: nn.OptimizedLSTMCell(H, param_dtype=jnp.float64),
        lambda: nn.SimpleCell(H, param_dtype=jnp.float64),
    ],
    ids=["LSTMCell", "GRUCell", "OptimizedLSTMCell", "SimpleCell"],
)
def test_flax_cells_match_flax_rnn_on_valid_steps(x64, rng, make):
    """flax.linen.RNN with seq_lengths gives the same valid outputs and final carry (flax
    leaves its padding outputs as they fall; Recurrent zeroes them, as torch)."""
    x = randn(rng, B, T, I)
    ours = jaxrnn.Recurrent(make(), batch_first=True)
    variables = ours.init(jax.random.key(5), x)
    out, carry = ours.apply(variables, x, lengths=LENGTHS)
    ref_carry, ref = nn.RNN(make(), return_carry=True).apply(variables, x, seq_lengths=LENGTHS)
    valid = np.arange(T)[None, :] < LENGTHS[:, None]  # [B, T]
    assert_close(np.asarray(out)[valid], np.asarray(ref)[valid], TOL64, "valid outputs")
    assert not np.asarray(out)[~valid].any()
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(ref_carry)):
        assert_close(got, want, TOL64, "final carry")


# ----------------------------------------------------------------------------- lengths


@pytest.fixture
def gru_layer(rng):
    layer = jaxrnn.Recurrent(jaxrnn.GRUCell(hidden_size=H))
    x = randn(rng, T, B, I, dtype=jnp.float32)
    return layer, x, layer.init(jax.random.key(0), x)


@pytest.mark.parametrize(
    "lengths, error, message",
    [
        (np.array([1, 2, 3]), ValueError, r"lengths must have shape \[4\] \(one per sequence\)"),
        (np.array([1, 2, T + 1, 3]), ValueError, rf"1 <= length <= T = {T}; got lengths\[2\]"),
        (np.array([0, 2, 3, 3]), ValueError, r"got lengths\[0\] = 0"),
        (np.array([1.0, 2, 3, 3]), TypeError, "lengths must be integers"),
    ],
    ids=["shape", "above_T", "zero", "float"],
)
def test_lengths_are_checked_as_the_layers_check_them(gru_layer, lengths, error, message):
    layer, x, variables = gru_layer
    with pytest.raises(error, match=message):
        layer.apply(variables, x, lengths=lengths)


def test_lengths_of_size_T_hint_at_batch_first(gru_layer):
    layer, x, variables = gru_layer
    with pytest.raises(ValueError, match=r"one entry per time step.*batch_first=True"):
        layer.apply(variables, x, lengths=np.full(T, 2))


def test_traced_out_of_range_length_gives_nan_for_that_sequence_only(gru_layer):
    layer, x, variables = gru_layer
    bad = jnp.array([T, T + 3, 2, 0])
    out, h = jax.jit(lambda lengths: layer.apply(variables, x, lengths=lengths))(bad)
    nan_rows = np.isnan(np.asarray(h)).all(axis=-1)
    np.testing.assert_array_equal(nan_rows, [False, True, False, True])
    assert np.isnan(np.asarray(out)[:, [1, 3]]).all()
    assert not np.isnan(np.asarray(out)[:, [0, 2]]).any()


def test_x_of_the_wrong_rank(gru_layer):
    layer, x, variables = gru_layer
    with pytest.raises(ValueError, match=r"x must be \[time, batch, \*features\].*got shape"):
        layer.apply(variables, x[None])
