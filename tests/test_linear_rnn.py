"""LinearRNN: the sequential and the associative scan agree, with each other and with NumPy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import (
    TOL64_LINEAR,
    assert_close,
    randn,
    random_params,
    to_numpy,
    traced_param_order,
)
from reference import linear_rnn

import jaxrnn

B, I, H = 3, 5, 7


@dataclasses.dataclass(frozen=True)
class Case:
    T: int
    batch_first: bool = False
    unbatched: bool = False
    learn_initial_state: bool = False
    hx: bool = False
    bias: bool = True

    @property
    def id(self) -> str:
        flags = [
            n for n in ("batch_first", "unbatched", "learn_initial_state", "hx") if getattr(self, n)
        ]
        return "-".join([f"T{self.T}", *flags, *(["nobias"] * (not self.bias))])

    def module(self, associative: bool):
        return jaxrnn.LinearRNN(
            hidden_size=H,
            batch_first=self.batch_first,
            bias=self.bias,
            learn_initial_state=self.learn_initial_state,
            associative=associative,
            param_dtype=jnp.float64,
        )


CASES = [
    Case(1),
    Case(2, hx=True),
    Case(7, batch_first=True, hx=True),
    Case(9, unbatched=True),
    Case(5, unbatched=True, hx=True),
    Case(11, learn_initial_state=True),
    Case(6, batch_first=True, learn_initial_state=True, bias=False),
    Case(257, hx=True),
]


def setup(case: Case, rng):
    x_shape = (
        (case.T, I) if case.unbatched else ((B, case.T, I) if case.batch_first else (case.T, B, I))
    )
    x = randn(rng, *x_shape)
    hx = randn(rng, *(() if case.unbatched else (B,)), H) if case.hx else None
    module = case.module(associative=False)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    params = dict(random_params(shapes, int(rng.integers(1 << 30))))
    # A contraction (spectral norm 0.95) keeps the long sequence bounded.
    w = np.asarray(params["weight_hh"])
    params["weight_hh"] = jnp.asarray(0.95 * w / np.linalg.norm(w, 2))
    return module, x, hx, {"params": params}


def reference(case, variables, x, hx):
    params = to_numpy(variables["params"])
    h0 = params.pop("h0", None) if hx is None else np.asarray(hx)
    return linear_rnn(params, np.asarray(x), h0, batch_first=case.batch_first)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sequential_and_associative_agree_with_numpy(x64, rng, case):
    _, x, hx, variables = setup(case, rng)
    seq, assoc = case.module(False), case.module(True)

    @jax.jit
    def both(v):
        return seq.apply(v, x, hx), assoc.apply(v, x, hx)

    (s_states, s_h), (a_states, a_h) = both(variables)
    ref_states, ref_h = reference(case, variables, x, hx)
    assert s_states.dtype == a_states.dtype == jnp.float64
    assert_close(s_states, ref_states, TOL64_LINEAR, "sequential states")
    assert_close(s_h, ref_h, TOL64_LINEAR, "sequential h_n")
    assert_close(a_states, s_states, TOL64_LINEAR, "associative vs sequential states")
    assert_close(a_h, s_h, TOL64_LINEAR, "associative vs sequential h_n")
    assert_close(a_states, ref_states, TOL64_LINEAR, "associative states")
    last = s_states[-1] if case.unbatched or not case.batch_first else s_states[:, -1]
    np.testing.assert_array_equal(s_h, last)  # h_n is the last state


def test_learned_initial_state_is_used(x64, rng):
    case = Case(4, learn_initial_state=True)
    _, x, _, variables = setup(case, rng)
    apply = jax.jit(case.module(False).apply)
    out = apply(variables, x)[0]
    shifted = {"params": {**variables["params"], "h0": variables["params"]["h0"] + 0.5}}
    out_shifted = apply(shifted, x)[0]
    assert np.abs(np.asarray(out_shifted - out)).min() > 0  # h0 reaches every state


@pytest.mark.parametrize("associative", [False, True], ids=["sequential", "associative"])
def test_float32(rng, associative):
    case = Case(13, hx=True)
    module = case.module(associative).clone(param_dtype=jnp.float32)
    x = randn(rng, case.T, B, I, dtype=jnp.float32)
    hx = randn(rng, B, H, dtype=jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    variables = {"params": random_params(shapes, 5, jnp.float32, scale=0.3)}
    states, h_n = jax.jit(module.apply)(variables, x, hx)
    assert states.dtype == jnp.float32
    ref_states, ref_h = reference(case, variables, x, hx)
    assert_close(states, ref_states, 2e-5)
    assert_close(h_n, ref_h, 2e-5)


def test_jit_and_grad_through_both_paths_agree(x64, rng):
    """With a learned initial state, so that the gradient also flows into h0."""
    case = Case(6, learn_initial_state=True)
    _, x, hx, variables = setup(case, rng)
    w_states = randn(rng, case.T, B, H)
    w_h = randn(rng, B, H)

    def loss(v, x, hx, associative):
        states, h_n = case.module(associative).apply(v, x, hx)
        return jnp.sum(states * w_states) + jnp.sum(jnp.sin(h_n) * w_h)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=3)
    g_seq = grad(variables, x, hx, False)
    g_assoc = grad(variables, x, hx, True)
    assert set(g_seq[0]["params"]) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0"}
    for (name, gs), ga in zip(g_seq[0]["params"].items(), g_assoc[0]["params"].values()):
        gs = np.asarray(gs)
        assert np.isfinite(gs).all() and np.abs(gs).max() > 1e-6, name
        assert_close(ga, gs, TOL64_LINEAR, f"d loss / d {name}")
    assert_close(g_assoc[1], g_seq[1], TOL64_LINEAR, "d loss / d x")
    assert np.abs(np.asarray(g_seq[1])).max() > 1e-6
    # Finite differences on one weight: the gradient is the derivative of the loss.
    eps = 1e-6
    bumped = {"params": {**variables["params"]}}
    bumped["params"]["weight_hh"] = variables["params"]["weight_hh"].at[1, 2].add(eps)
    jloss = jax.jit(loss, static_argnums=3)
    numeric = (jloss(bumped, x, hx, False) - jloss(variables, x, hx, False)) / eps
    analytic = g_seq[0]["params"]["weight_hh"][1, 2]
    assert abs(float(numeric) - float(analytic)) <= 1e-4 * max(1.0, abs(float(analytic)))


def test_param_names_and_default_initial_state(rng):
    module = jaxrnn.LinearRNN(hidden_size=64, learn_initial_state=True)
    x = randn(rng, 1, 1, I, dtype=jnp.float32)
    assert traced_param_order(module, x) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "h0"]
    params = jax.jit(module.init)(jax.random.key(0, impl="rbg"), x)["params"]
    assert params["weight_ih"].shape == (64, I) and params["weight_hh"].shape == (64, 64)
    h0 = np.asarray(params["h0"])
    assert h0.shape == (64,) and 0.005 < h0.std() < 0.02 and np.unique(h0).size == 64


def test_hx_with_learned_initial_state_is_an_error(rng):
    module = jaxrnn.LinearRNN(hidden_size=H, learn_initial_state=True)
    x = randn(rng, 4, B, I, dtype=jnp.float32)
    with pytest.raises(ValueError, match="hx must be None when learn_initial_state=True"):
        jax.eval_shape(lambda: module.init(jax.random.key(0), x, jnp.zeros((B, H))))


@pytest.mark.parametrize(
    "x_shape, hx_shape",
    [((4, B, I), (B, H + 1)), ((4, B, I), (H,)), ((4, I), (1, H))],
    ids=["hidden", "unbatched_hx_for_batched_x", "batched_hx_for_unbatched_x"],
)
def test_hx_of_wrong_shape(x_shape, hx_shape):
    module = jaxrnn.LinearRNN(hidden_size=H)
    with pytest.raises(ValueError, match="hx must have shape"):
        jax.eval_shape(
            lambda: module.init(jax.random.key(0), jnp.zeros(x_shape), jnp.zeros(hx_shape))
        )
