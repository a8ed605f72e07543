"""Each pure step and each linen cell against the float64 NumPy transcription (reference.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import TOL32, TOL64, assert_close, init_random, randn, to_numpy, traced_param_order
from reference import GATES, batched_cell

import jaxrnn
from jaxrnn import cells

B, I, H, P = 3, 5, 7, 3  # batch, input features, hidden, LSTM projection: distinct sizes

STEPS = {
    "linear": cells.linear_step,
    "rnn_tanh": lambda h, gx, w: cells.elman_step(h, gx, w, "tanh"),
    "rnn_relu": lambda h, gx, w: cells.elman_step(h, gx, w, "relu"),
    "lstm": cells.lstm_step,
    "gru": cells.gru_step,
}


def _random_weights(rng, kind, *, bias=True, proj=0, dtype=jnp.float64) -> dict:
    G = GATES[kind]
    u = lambda *shape: rng.uniform(-0.8, 0.8, shape)  # noqa: E731
    w = {"weight_ih": u(G * H, I), "weight_hh": u(G * H, proj or H)}
    if bias:
        w |= {"bias_ih": u(G * H), "bias_hh": u(G * H)}
    if proj:
        w["weight_hr"] = u(proj, H)
    return {k: jnp.asarray(v, dtype) for k, v in w.items()}


def _random_state(rng, kind, batch_shape, *, proj=0, dtype=jnp.float64):
    h = randn(rng, *batch_shape, proj or H, dtype=dtype)
    if kind == "lstm":
        return h, randn(rng, *batch_shape, H, dtype=dtype)
    return h


STEP_CASES = [
    pytest.param(
        kind,
        bias,
        proj,
        id=f"{kind}-{'bias' if bias else 'nobias'}" + (f"-proj{proj}" if proj else ""),
    )
    for kind in STEPS
    for bias, proj in ((True, 0), (False, 0)) + (((True, P),) if kind == "lstm" else ())
]


def _check_step(rng, kind, bias, proj, dtype, tol):
    w = _random_weights(rng, kind, bias=bias, proj=proj, dtype=dtype)
    x = randn(rng, B, I, dtype=dtype)
    state = _random_state(rng, kind, (B,), proj=proj, dtype=dtype)
    gx = cells.affine(x, w["weight_ih"], w.get("bias_ih"))  # the hoisted input projection
    got = STEPS[kind](state, gx, cells.CellWeights(**w))
    ref = batched_cell(kind, x, state, to_numpy(w))
    if kind == "lstm":
        assert got[0].dtype == got[1].dtype == dtype
        assert_close(got[0], ref[0], tol, "h")
        assert_close(got[1], ref[1], tol, "c")
    else:
        assert got.dtype == dtype
        assert_close(got, ref, tol, "h")


@pytest.mark.parametrize("kind, bias, proj", STEP_CASES)
def test_step_float64(x64, rng, kind, bias, proj):
    _check_step(rng, kind, bias, proj, jnp.float64, TOL64)


@pytest.mark.parametrize("kind, bias, proj", STEP_CASES)
def test_step_float32(rng, kind, bias, proj):
    _check_step(rng, kind, bias, proj, jnp.float32, TOL32)


def test_relu_step_is_not_tanh(x64, rng):
    """The relu cell really clips at 0 (some pre-activations are negative and > 1)."""
    w = _random_weights(rng, "rnn_relu")
    x, h = randn(rng, B, I) * 3, randn(rng, B, H)
    gx = cells.affine(x, w["weight_ih"], w["bias_ih"])
    out = np.asarray(cells.elman_step(h, gx, cells.CellWeights(**w), "relu"))
    assert (out == 0).any() and (out > 1).any()


def test_gru_bias_hn_sits_inside_reset_gate(x64, rng):
    """Folding b_hn into b_in changes the GRU (the reset gate multiplies b_hn)."""
    w = _random_weights(rng, "gru")
    x, h = randn(rng, B, I), randn(rng, B, H)
    folded = dict(w)
    folded["bias_ih"] = w["bias_ih"].at[2 * H :].add(w["bias_hh"][2 * H :])
    folded["bias_hh"] = w["bias_hh"].at[2 * H :].set(0.0)

    def step(w):
        gx = cells.affine(x, w["weight_ih"], w["bias_ih"])
        return cells.gru_step(h, gx, cells.CellWeights(**w))

    assert_close(step(w), batched_cell("gru", x, h, to_numpy(w)), TOL64)
    assert np.max(np.abs(np.asarray(step(folded)) - np.asarray(step(w)))) > 1e-3


# ----------------------------------------------------------------------------- linen cells

CELLS = [
    pytest.param(jaxrnn.LinearCell, {}, "linear", id="LinearCell"),
    pytest.param(jaxrnn.RNNCell, {}, "rnn_tanh", id="RNNCell-tanh"),
    pytest.param(jaxrnn.RNNCell, {"nonlinearity": "relu"}, "rnn_relu", id="RNNCell-relu"),
    pytest.param(jaxrnn.LSTMCell, {}, "lstm", id="LSTMCell"),
    pytest.param(jaxrnn.GRUCell, {}, "gru", id="GRUCell"),
    pytest.param(jaxrnn.GRUCell, {"bias": False}, "gru", id="GRUCell-nobias"),
    pytest.param(jaxrnn.LSTMCell, {"bias": False}, "lstm", id="LSTMCell-nobias"),
]


def _check_cell(rng, cls, kwargs, kind, dtype, tol, batch_shape=(B,)):
    cell = cls(hidden_size=H, param_dtype=dtype, **kwargs)
    x = randn(rng, *batch_shape, I, dtype=dtype)
    carry = _random_state(rng, kind, batch_shape, dtype=dtype)
    variables = init_random(cell, carry, x, seed=int(rng.integers(1 << 30)), dtype=dtype)
    new_carry, y = cell.apply(variables, carry, x)

    def rows(a):  # the reference steps [B, ...] arrays
        return a.reshape(-1, a.shape[-1])

    ref = batched_cell(
        kind,
        rows(x),
        tuple(map(rows, carry)) if kind == "lstm" else rows(carry),
        to_numpy(variables["params"]),
    )
    if kind == "lstm":
        assert_close(rows(new_carry[0]), ref[0], tol, "h")
        assert_close(rows(new_carry[1]), ref[1], tol, "c")
        np.testing.assert_array_equal(y, new_carry[0])
    else:
        assert_close(rows(new_carry), ref, tol, "h")
        np.testing.assert_array_equal(y, new_carry)
    assert y.shape == (*batch_shape, H) and y.dtype == dtype


@pytest.mark.parametrize("cls, kwargs, kind", CELLS)
def test_cell_float64(x64, rng, cls, kwargs, kind):
    _check_cell(rng, cls, kwargs, kind, jnp.float64, TOL64)


@pytest.mark.parametrize("cls, kwargs, kind", CELLS)
def test_cell_float32(rng, cls, kwargs, kind):
    _check_cell(rng, cls, kwargs, kind, jnp.float32, TOL32)


@pytest.mark.parametrize("cls, kwargs, kind", CELLS[1:5])
def test_cell_unbatched(x64, rng, cls, kwargs, kind):
    """x: [I], carry: [H] — the step-by-step sampling case."""
    _check_cell(rng, cls, kwargs, kind, jnp.float64, TOL64, batch_shape=())


@pytest.mark.parametrize("cls, kwargs, kind", CELLS)
def test_cell_param_names_order_and_shapes(cls, kwargs, kind):
    """torch.nn.RNNCell / LSTMCell / GRUCell state_dict names, order and shapes."""
    cell = cls(hidden_size=H, **kwargs)
    x = jnp.zeros((B, I))
    carry = cell.initialize_carry(None, x.shape)
    G = GATES[kind]
    expected = {"weight_ih": (G * H, I), "weight_hh": (G * H, H)}
    if kwargs.get("bias", True):
        expected |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
    assert traced_param_order(cell, carry, x) == list(expected)
    shapes = jax.eval_shape(cell.init, jax.random.key(0), carry, x)["params"]
    assert {k: v.shape for k, v in shapes.items()} == expected


def test_cell_default_init_is_torch_uniform():
    """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, biases included; distinct draws."""
    cell = jaxrnn.GRUCell(hidden_size=H)
    x = jnp.zeros((B, I))
    key = jax.random.key(1, impl="rbg")  # cheap to compile; the initializer is the same
    params = cell.init(key, cell.initialize_carry(None, x.shape), x)["params"]
    bound = 1 / np.sqrt(H)
    for name, value in params.items():
        value = np.asarray(value)
        assert value.dtype == np.float32, name
        assert np.all(np.abs(value) <= bound), name
        assert np.unique(value).size == value.size, name  # random, not constant
        assert value.max() > bound / 2 and value.min() < -bound / 2, name  # spans the range
    assert not np.array_equal(params["bias_ih"], params["bias_hh"])


@pytest.mark.parametrize("cls, kwargs, kind", CELLS[:5])
def test_initialize_carry(cls, kwargs, kind):
    cell = cls(hidden_size=H, **kwargs)
    carry = cell.initialize_carry(jax.random.key(0), (B, I))
    states = carry if kind == "lstm" else (carry,)
    assert len(states) == (2 if kind == "lstm" else 1)
    for s in states:
        assert s.shape == (B, H) and s.dtype == jnp.float32
        assert not np.asarray(s).any()


def test_cell_steps_a_sequence(x64, rng):
    """A cell stepped by hand over time equals the reference stepped over time."""
    cell = jaxrnn.LSTMCell(hidden_size=H, param_dtype=jnp.float64)
    xs = randn(rng, 4, B, I)
    carry = _random_state(rng, "lstm", (B,))
    variables = init_random(cell, carry, xs[0], seed=3)
    w = to_numpy(variables["params"])
    ref = tuple(np.asarray(a) for a in carry)
    for t in range(xs.shape[0]):
        carry, _ = cell.apply(variables, carry, xs[t])
        ref = batched_cell("lstm", xs[t], ref, w)
    assert_close(carry[0], ref[0], TOL64, "h")
    assert_close(carry[1], ref[1], TOL64, "c")


# ----------------------------------------------------------------------------- core VJPs


@pytest.mark.parametrize("kind", list(STEPS))
def test_core_vjp_matches_autodiff(x64, rng, kind):
    """Each hand-written core backward (used by ``recurrent_scan``) equals ``jax.vjp``."""
    G = GATES[kind]
    state = _random_state(rng, kind, (B,))
    if kind == "rnn_relu":  # keep pre-activations away from the kink at 0
        state = jnp.abs(state)
    gx, gh = randn(rng, B, G * H, dtype=jnp.float64), randn(rng, B, G * H, dtype=jnp.float64)
    d_new = jax.tree.map(lambda a: randn(rng, *a.shape, dtype=a.dtype), state)
    core = cells.KINDS[kind].vjp

    new, res = core.fwd(state, gx, gh)
    step = lambda c, g, h: core.fwd(c, g, h)[0]  # noqa: E731
    ref_new, vjp = jax.vjp(step, state, gx, gh)
    d_carry, d_gx, d_gh = core.bwd(res, d_new)  # d_gh: G blocks [B, H]
    assert len(d_gh) == G
    d_gh = jnp.concatenate(d_gh, axis=-1)
    # d_gx: None where it equals d_gh (the cores that add gx + gh), else G blocks
    d_gx = d_gh if d_gx is None else jnp.concatenate(d_gx, axis=-1)
    got, ref = (d_carry, d_gx, d_gh), vjp(d_new)
    # gx given as its G blocks [B, H] (as recurrent_scan passes it): the same step
    by_blocks = core.fwd(state, jnp.split(gx, G, axis=-1) if G > 1 else gx, gh)[0]
    for a, b in zip(jax.tree.leaves(by_blocks), jax.tree.leaves(new)):
        np.testing.assert_array_equal(a, b)
    for name, g, r in zip(("carry", "d_carry", "d_gx", "d_gh"), (new, *got), (ref_new, *ref)):
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(r)):
            assert_close(a, b, TOL64, name)
    if kind == "rnn_relu":  # the relu branch was exercised on both sides of the kink
        assert 0 < float(jnp.mean(new > 0)) < 1


def test_kinds_table():
    """One entry per kind under its own name; the Elman kinds differ only in the bound
    nonlinearity, which ``elman_kind`` checks."""
    assert list(cells.KINDS) == list(STEPS)
    assert all(kind.name == name for name, kind in cells.KINDS.items())
    assert {name: kind.gates for name, kind in cells.KINDS.items()} == GATES
    rnn_cells = [jaxrnn.RNNCell(hidden_size=H, nonlinearity=n) for n in ("tanh", "relu")]
    assert [cell.kind for cell in rnn_cells] == ["rnn_tanh", "rnn_relu"]
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        cells.elman_kind("sigmoid")


# ----------------------------------------------------------------------------- flax.linen.RNN


def test_cells_are_flax_rnn_cells():
    assert all(issubclass(c, nn.RNNCellBase) for c in (jaxrnn.LSTMCell, jaxrnn.GRUCell))
    assert jaxrnn.RNNCell(hidden_size=H).num_feature_axes == 1


def test_flax_rnn_of_lstm_cell_equals_the_lstm_layer(x64, rng):
    """``flax.linen.RNN(jaxrnn.LSTMCell(...))`` runs, and gives jaxrnn.LSTM's numbers."""
    x = randn(rng, B, 6, I)  # flax.linen.RNN is batch-major by default
    rnn = nn.RNN(jaxrnn.LSTMCell(hidden_size=H, param_dtype=jnp.float64), return_carry=True)
    variables = init_random(rnn, x, seed=7)
    (h, c), out = rnn.apply(variables, x)  # jaxrnn's carry: (h, c)
    params = {k + "_l0": v for k, v in variables["params"]["cell"].items()}
    ref, (h_n, c_n) = jaxrnn.LSTM(hidden_size=H, batch_first=True).apply({"params": params}, x)
    assert_close(out, ref, TOL64, "output")
    assert_close(h, h_n[0], TOL64, "h")
    assert_close(c, c_n[0], TOL64, "c")


def test_flax_bidirectional_of_gru_cells_runs():
    x = jnp.ones((B, 6, I))
    layer = nn.Bidirectional(
        nn.RNN(jaxrnn.GRUCell(hidden_size=H)), nn.RNN(jaxrnn.GRUCell(hidden_size=H))
    )
    out = jax.eval_shape(lambda: layer.init_with_output(jax.random.key(0), x)[0])
    assert out.shape == (B, 6, 2 * H)
