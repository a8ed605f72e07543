"""jit and grad work through every layer option: finite, nonzero gradients; jitted == eager."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import assert_close, assert_tree_close, init_random, randn

import jaxrnn

T, B, I, H, P = 7, 3, 5, 9, 4


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    module: jaxrnn.RNN | jaxrnn.LSTM | jaxrnn.GRU
    hx: bool = False
    lengths: bool = False
    unbatched: bool = False
    dropout_rng: bool = False


CASES = [
    Case(
        "lstm-bi-proj-hx-lengths",
        jaxrnn.LSTM(hidden_size=H, bidirectional=True, proj_size=P),
        hx=True,
        lengths=True,
    ),
    Case("gru-batch_first-lengths", jaxrnn.GRU(hidden_size=H, batch_first=True), lengths=True),
    Case(
        "rnn_tanh-bi-unbatched-hx",
        jaxrnn.RNN(hidden_size=H, bidirectional=True),
        hx=True,
        unbatched=True,
    ),
    Case(
        "rnn_relu-L2-bi-nobias",
        jaxrnn.RNN(
            hidden_size=H, num_layers=2, bidirectional=True, nonlinearity="relu", bias=False
        ),
    ),
    Case(
        "gru-L2-dropout-rng", jaxrnn.GRU(hidden_size=H, num_layers=2, dropout=0.3), dropout_rng=True
    ),
]


def _inputs(case: Case, rng, dtype=None):
    m = case.module
    D = 2 if m.bidirectional else 1
    batch = () if case.unbatched else (B,)
    shape = (T, I) if case.unbatched else ((B, T, I) if m.batch_first else (T, B, I))
    x = randn(rng, *shape, dtype=dtype)
    hx = None
    if case.hx:
        size = getattr(m, "proj_size", 0) or H
        hx = randn(rng, m.num_layers * D, *batch, size, dtype=dtype)
        if isinstance(m, jaxrnn.LSTM):
            hx = (hx, randn(rng, m.num_layers * D, *batch, H, dtype=dtype))
    lengths = jnp.array([5, T, 2]) if case.lengths else None
    return x, hx, lengths


def _run(case: Case, variables, x, hx, lengths, key):
    kwargs = {"deterministic": False, "rngs": {"dropout": key}} if case.dropout_rng else {}
    return case.module.apply(variables, x, hx, lengths=lengths, **kwargs)


def _value_and_grad(case: Case, rng):
    """jit(value_and_grad) of a loss with random weights on every output and state (and a
    nonlinearity, so that no gradient cancels by symmetry); aux is the layer's output."""
    weights = (randn(rng, 4 * T * B * H), randn(rng, 4 * B * H))

    def loss(variables, x, hx, lengths, key):
        out, h_n = _run(case, variables, x, hx, lengths, key)
        total = jnp.sum(jnp.tanh(out) * weights[0][: out.size].reshape(out.shape))
        for a in jax.tree.leaves(h_n):
            total += jnp.sum(jnp.sin(a) * weights[1][: a.size].reshape(a.shape))
        return total, (out, h_n)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def _nonzero(g, what):
    g = np.asarray(g)
    assert np.isfinite(g).all(), f"{what}: non-finite gradient"
    assert np.abs(g).max() > 1e-5, f"{what}: zero gradient"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_jit_equals_eager_and_gradients_flow(rng, case):
    x, hx, lengths = _inputs(case, rng)
    variables = init_random(case.module, x, dtype=jnp.float32, scale=0.4)
    key = jax.random.key(42)
    eager = _run(case, variables, x, hx, lengths, key)  # lengths concrete: checked eagerly
    value_and_grad = _value_and_grad(case, rng)
    (_, jitted), (g_params, g_x, g_hx) = value_and_grad(variables, x, hx, lengths, key)
    assert_tree_close(jitted, eager, 1e-6, "jit (lengths traced) vs eager")

    assert list(g_params["params"]) == sorted(variables["params"])
    for name, g in g_params["params"].items():
        assert g.shape == variables["params"][name].shape
        _nonzero(g, name)
    _nonzero(g_x, "x")
    if case.hx:
        for g in jax.tree.leaves(g_hx):
            _nonzero(g, "hx")
    if case.lengths:  # inputs past a length cannot matter
        g_x_tm = np.asarray(g_x.swapaxes(0, 1) if case.module.batch_first else g_x)
        for b, n in enumerate(np.asarray(lengths)):
            assert not g_x_tm[n:, b].any(), f"gradient flows into padding of sequence {b}"
    if case.dropout_rng:  # the dropout mask, hence the gradient, follows the rng
        other = value_and_grad(variables, x, hx, lengths, jax.random.key(7))[1][0]["params"]
        again = value_and_grad(variables, x, hx, lengths, key)[1][0]["params"]
        np.testing.assert_array_equal(again["weight_ih_l1"], g_params["params"]["weight_ih_l1"])
        diff = np.asarray(other["weight_ih_l1"] - g_params["params"]["weight_ih_l1"])
        assert np.abs(diff).max() > 1e-4


def test_gradient_matches_finite_differences(x64, rng):
    """The gradient is the derivative: central differences on entries of each kind of
    parameter, through lengths, hx, the projection and both directions (float64)."""
    case = dataclasses.replace(CASES[0], module=CASES[0].module.clone(param_dtype=jnp.float64))
    x, hx, lengths = _inputs(case, rng)
    variables = init_random(case.module, x, scale=0.4)
    value_and_grad = _value_and_grad(case, rng)
    key = jax.random.key(0)
    grads = value_and_grad(variables, x, hx, lengths, key)[1][0]["params"]
    eps = 1e-6
    names = (
        "weight_ih_l0",
        "weight_hh_l0_reverse",
        "bias_ih_l0",
        "bias_hh_l0_reverse",
        "weight_hr_l0",
        "weight_hr_l0_reverse",
    )
    for name in names:
        value = variables["params"][name]
        index = tuple(int(rng.integers(n)) for n in value.shape)

        def loss_at(delta):
            bumped = np.array(value)
            bumped[index] += delta
            params = {**variables["params"], name: jnp.asarray(bumped)}
            return value_and_grad({"params": params}, x, hx, lengths, key)[0][0]

        numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        analytic = grads[name][index]
        assert_close(analytic, numeric, 1e-6, f"d loss / d {name}{list(index)}")
        assert abs(float(analytic)) > 1e-4, name
