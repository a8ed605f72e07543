"""``lengths``: packed-sequence semantics, edge cases, and what happens out of range."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import TOL64, assert_close, assert_tree_close, init_random, randn, to_numpy
from reference import rnn_layer

import jaxrnn

T, B, I, H, P = 9, 3, 5, 11, 7


def _lstm(**kwargs):
    return jaxrnn.LSTM(
        hidden_size=H, num_layers=2, bidirectional=True, param_dtype=jnp.float64, **kwargs
    )


def _hx(rng, LD=4, batch=B, proj=0):
    return randn(rng, LD, batch, proj or H), randn(rng, LD, batch, H)


def test_all_lengths_equal_T_is_no_lengths(x64, rng):
    module = jaxrnn.LSTM(hidden_size=H, bidirectional=True, param_dtype=jnp.float64)
    x, hx = randn(rng, T, B, I), _hx(rng, LD=2)
    variables = init_random(module, x)

    @jax.jit
    def both(v):
        return module.apply(v, x, hx), module.apply(v, x, hx, lengths=jnp.full(B, T))

    (out, h_n), (out_len, h_len) = both(variables)
    assert_close(out_len, out, TOL64)
    assert_tree_close(h_len, h_n, TOL64)


def test_length_one(x64, rng):
    """Every sequence of length 1: one step forward, one step backward, the rest zeros."""
    module = jaxrnn.GRU(hidden_size=H, num_layers=2, bidirectional=True, param_dtype=jnp.float64)
    x, hx = randn(rng, T, B, I), randn(rng, 4, B, H)
    variables = init_random(module, x)
    lengths = jnp.ones(B, jnp.int32)
    out, h_n = jax.jit(lambda v: module.apply(v, x, hx, lengths=lengths))(variables)
    assert not np.asarray(out[1:]).any()
    ref, ref_h = rnn_layer(
        "gru", to_numpy(variables["params"]), x[:1], hx, num_layers=2, bidirectional=True
    )
    assert_close(out[:1], ref, TOL64)
    assert_close(h_n, ref_h, TOL64)
    assert_close(h_n[2], out[0, :, :H], TOL64)  # last layer, forward: its only output
    assert_close(h_n[3], out[0, :, H:], TOL64)  # last layer, reverse: its only output


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_mixed_lengths_zero_past_length_in_both_directions(x64, rng, batch_first):
    module = _lstm(proj_size=P, batch_first=batch_first)
    x = randn(rng, B, T, I) if batch_first else randn(rng, T, B, I)
    hx = _hx(rng, proj=P)
    lengths = np.array([6, 2, T])
    variables = init_random(module, x)
    out, h_n = jax.jit(lambda v: module.apply(v, x, hx, lengths=lengths))(variables)
    ref, ref_h = rnn_layer(
        "lstm",
        to_numpy(variables["params"]),
        x,
        hx,
        lengths,
        num_layers=2,
        bidirectional=True,
        batch_first=batch_first,
    )
    assert_close(out, ref, TOL64)
    assert_tree_close(h_n, ref_h, TOL64)
    out = np.asarray(out.swapaxes(0, 1) if batch_first else out)  # [T, B, 2P]
    assert out.shape == (T, B, 2 * P)
    for b, n in enumerate(lengths):
        assert not out[n:, b, :P].any(), f"forward half nonzero past lengths[{b}]={n}"
        assert not out[n:, b, P:].any(), f"reverse half nonzero past lengths[{b}]={n}"
        assert np.abs(out[:n, b]).min() > 0


def test_padded_sequence_equals_the_sequence_alone(x64, rng):
    """h_n (forward and reverse, every layer) and the valid outputs of a padded sequence are
    those of the same sequence run alone, unpadded, from the same hx."""
    module = _lstm(proj_size=P)
    x = randn(rng, T, B, I)
    hx = _hx(rng, proj=P)
    lengths = np.array([5, 1, T - 1])
    variables = init_random(module, x)
    apply = jax.jit(module.apply)
    out, h_n = jax.jit(lambda v: module.apply(v, x, hx, lengths=lengths))(variables)
    for b, n in enumerate(lengths):
        alone_hx = jax.tree.map(lambda a: a[:, b : b + 1], hx)
        alone_out, alone_h = apply(variables, x[:n, b : b + 1], alone_hx)
        assert_close(out[:n, b : b + 1], alone_out, TOL64, f"outputs of sequence {b}")
        assert_tree_close(
            jax.tree.map(lambda a: a[:, b : b + 1], h_n), alone_h, TOL64, f"h_n of sequence {b}"
        )


def test_batch_order_is_preserved(x64, rng):
    module = _lstm()
    x, hx = randn(rng, T, B, I), _hx(rng)
    lengths = jnp.array([3, T, 6])
    variables = init_random(module, x)
    apply = jax.jit(lambda v, x, hx, lengths: module.apply(v, x, hx, lengths=lengths))
    out, h_n = apply(variables, x, hx, lengths)
    perm = np.array([2, 0, 1])
    out_p, h_p = apply(variables, x[:, perm], jax.tree.map(lambda a: a[:, perm], hx), lengths[perm])
    assert_close(out_p, out[:, perm], TOL64)
    assert_tree_close(h_p, jax.tree.map(lambda a: a[:, perm], h_n), TOL64)
    assert np.abs(np.asarray(out[:, 0] - out[:, 1])).max() > 1e-3  # the rows are distinct


def test_lengths_as_python_list(x64, rng):
    module = jaxrnn.GRU(hidden_size=H, bidirectional=True, param_dtype=jnp.float64)
    x = randn(rng, T, B, I)
    variables = init_random(module, x)
    out, h_n = jax.jit(lambda v: module.apply(v, x, lengths=[2, T, 4]))(variables)
    ref, ref_h = rnn_layer(
        "gru", to_numpy(variables["params"]), x, lengths=[2, T, 4], bidirectional=True
    )
    assert_close(out, ref, TOL64)
    assert_close(h_n, ref_h, TOL64)


# ----------------------------------------------------------------------------- out of range


def test_traced_out_of_range_gives_nan_for_that_sequence_only(x64, rng):
    """Under jit the values cannot be checked: a bad length poisons its own sequence with NaN
    (outputs and both states), never clamps, and leaves the others exact."""
    module = _lstm()
    batch = 5
    x, hx = randn(rng, T, batch, I), _hx(rng, batch=batch)
    variables = init_random(module, x)
    lengths = jnp.array([0, 4, T + 1, -2, T])
    apply = jax.jit(lambda v, lengths: module.apply(v, x, hx, lengths=lengths))
    out, (h, c) = apply(variables, lengths)
    good = np.array([1, 4])
    bad = np.array([0, 2, 3])
    assert np.isnan(np.asarray(out[:, bad])).all()
    assert np.isnan(np.asarray(h[:, bad])).all() and np.isnan(np.asarray(c[:, bad])).all()
    ref, ref_h = rnn_layer(
        "lstm",
        to_numpy(variables["params"]),
        x[:, good],
        jax.tree.map(lambda a: np.asarray(a)[:, good], hx),
        np.array([4, T]),
        num_layers=2,
        bidirectional=True,
    )
    assert_close(out[:, good], ref, TOL64)
    assert_tree_close((h[:, good], c[:, good]), ref_h, TOL64)


def test_traced_out_of_range_unbatched(rng):
    module = jaxrnn.GRU(hidden_size=H)
    x = randn(rng, T, I, dtype=jnp.float32)
    variables = init_random(module, x, dtype=jnp.float32)
    apply = jax.jit(lambda v, n: module.apply(v, x, lengths=n))
    out, h_n = apply(variables, jnp.asarray(T + 3))
    assert out.shape == (T, H) and h_n.shape == (1, H)
    assert np.isnan(np.asarray(out)).all() and np.isnan(np.asarray(h_n)).all()
    out, h_n = apply(variables, jnp.asarray(3))
    assert np.isfinite(np.asarray(out)).all() and not np.asarray(out[3:]).any()


def _small_gru(rng):
    module = jaxrnn.GRU(hidden_size=H, bidirectional=True)
    x = randn(rng, T, B, I, dtype=jnp.float32)
    return module, x, init_random(module, x, dtype=jnp.float32)


@pytest.mark.parametrize("bad", [0, T + 1, -1], ids=["zero", "T_plus_1", "negative"])
def test_eager_out_of_range_raises(rng, bad):
    module, x, variables = _small_gru(rng)
    lengths = np.array([3, bad, T])
    with pytest.raises(ValueError, match=rf"lengths.*lengths\[1\] = {bad}"):
        module.apply(variables, x, lengths=lengths)
    with pytest.raises(ValueError, match="lengths"):  # jax arrays too
        module.apply(variables, x, lengths=jnp.asarray(lengths))


def test_eager_out_of_range_unbatched_raises(rng):
    module, x, variables = _small_gru(rng)
    with pytest.raises(ValueError, match="lengths"):
        module.apply(variables, x[:, 0], lengths=jnp.asarray(0))


@pytest.mark.parametrize(
    "lengths",
    [np.array([3, 4]), np.array([3, 4, 5, 6]), np.array([[3], [4], [5]]), np.array(3)],
    ids=["too_short", "too_long", "2d", "scalar"],
)
def test_lengths_of_wrong_shape(rng, lengths):
    module, x, variables = _small_gru(rng)
    with pytest.raises(ValueError, match=rf"lengths must have shape \[{B}\]"):
        module.apply(variables, x, lengths=lengths)
    with pytest.raises(ValueError, match="lengths"):  # also at trace time under jit
        jax.jit(lambda v, n: module.apply(v, x, lengths=n))(variables, jnp.asarray(lengths))


def test_lengths_of_wrong_shape_unbatched(rng):
    module, x, variables = _small_gru(rng)
    with pytest.raises(ValueError, match=r"lengths must have shape \[\]"):
        module.apply(variables, x[:, 0], lengths=np.array([3]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, bool], ids=["f32", "f64", "bool"])
def test_lengths_must_be_integers(rng, dtype):
    module, x, variables = _small_gru(rng)
    with pytest.raises(TypeError, match="lengths must be integers"):
        module.apply(variables, x, lengths=np.array([3, 4, 5]).astype(dtype))
