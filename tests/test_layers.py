"""RNN / LSTM / GRU layers against the NumPy reference, and the torch contract of the layers.

The table covers kind × num_layers × bidirectional × batch_first × bias × proj_size ×
{plain, hx, lengths, unbatched} with a covering subset of readable cases.
"""

from __future__ import annotations

import dataclasses
import pydoc

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import (
    TOL32,
    TOL64,
    assert_close,
    assert_tree_close,
    init_random,
    randn,
    to_numpy,
    traced_param_order,
)
from reference import GATES, rnn_layer

import jaxrnn

T, B, I, H, P = 9, 3, 5, 11, 7  # time, batch, input, hidden, projection: distinct odd sizes
LENGTHS = np.array([4, T, 1])  # unsorted, with the extremes 1 and T

LAYERS = {
    "rnn_tanh": (jaxrnn.RNN, {}),
    "rnn_relu": (jaxrnn.RNN, {"nonlinearity": "relu"}),
    "lstm": (jaxrnn.LSTM, {}),
    "gru": (jaxrnn.GRU, {}),
}


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj: int = 0
    hx: bool = False
    lengths: bool = False
    unbatched: bool = False

    @property
    def id(self) -> str:
        parts = [self.kind, f"L{self.layers}", "bi" if self.bidirectional else "uni"]
        parts += ["bf"] * self.batch_first + ["nobias"] * (not self.bias)
        parts += [f"proj{self.proj}"] * bool(self.proj)
        variant = [n for n in ("hx", "lengths", "unbatched") if getattr(self, n)]
        return "-".join(parts) + "-" + ("+".join(variant) or "plain")

    def module(self, **kwargs):
        cls, extra = LAYERS[self.kind]
        extra = dict(extra, **({"proj_size": self.proj} if self.proj else {}))
        return cls(
            hidden_size=H,
            num_layers=self.layers,
            bidirectional=self.bidirectional,
            batch_first=self.batch_first,
            bias=self.bias,
            **extra,
            **kwargs,
        )


CASES = [
    Case("rnn_tanh"),
    Case("rnn_relu", layers=2, hx=True),
    Case("rnn_tanh", layers=2, bidirectional=True, batch_first=True, lengths=True),
    Case("rnn_tanh", bidirectional=True, bias=False, unbatched=True),
    Case("rnn_relu", bidirectional=True, lengths=True, hx=True),
    Case("lstm"),
    Case("lstm", layers=2, bidirectional=True, hx=True),
    Case("lstm", layers=2, bidirectional=True, lengths=True),
    Case("lstm", proj=P),
    Case("lstm", layers=2, bidirectional=True, batch_first=True, proj=P, lengths=True, hx=True),
    Case("lstm", bidirectional=True, batch_first=True, proj=P, unbatched=True, hx=True),
    Case("lstm", layers=3, bias=False, hx=True),
    Case("lstm", layers=2, unbatched=True, lengths=True),
    Case("gru"),
    Case("gru", layers=2, bidirectional=True, hx=True),
    Case("gru", layers=2, bidirectional=True, batch_first=True, lengths=True),
    Case("gru", bias=False, unbatched=True),
    Case("gru", layers=3, bidirectional=True, lengths=True, hx=True),
    Case("gru", bidirectional=True, batch_first=True, bias=False, hx=True),
    Case("gru", bidirectional=True, unbatched=True, lengths=True, hx=True),
]


def make_inputs(case: Case, rng, dtype=jnp.float64):
    """x, hx (or None) and lengths (or None) for a case, with torch's shapes."""
    D = 2 if case.bidirectional else 1
    batch = () if case.unbatched else (B,)
    if case.unbatched:
        x = randn(rng, T, I, dtype=dtype)
    else:
        x = randn(rng, *((B, T, I) if case.batch_first else (T, B, I)), dtype=dtype)
    hx = None
    if case.hx:
        h = randn(rng, case.layers * D, *batch, case.proj or H, dtype=dtype)
        hx = (h, randn(rng, case.layers * D, *batch, H, dtype=dtype)) if case.kind == "lstm" else h
    lengths = None
    if case.lengths:
        lengths = jnp.asarray(5) if case.unbatched else jnp.asarray(LENGTHS)
    return x, hx, lengths


def reference(case: Case, params, x, hx, lengths):
    return rnn_layer(
        case.kind,
        to_numpy(params),
        np.asarray(x),
        None if hx is None else jax.tree.map(np.asarray, hx),
        None if lengths is None else np.asarray(lengths),
        num_layers=case.layers,
        bidirectional=case.bidirectional,
        batch_first=case.batch_first,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_matches_reference_float64(x64, rng, case):
    module = case.module(param_dtype=jnp.float64)
    x, hx, lengths = make_inputs(case, rng)
    variables = init_random(module, x, seed=int(rng.integers(1 << 30)))
    apply = jax.jit(lambda v, x, hx: module.apply(v, x, hx, lengths=lengths))
    out, h_n = apply(variables, x, hx)
    ref_out, ref_h = reference(case, variables["params"], x, hx, lengths)
    assert out.dtype == jnp.float64
    assert_close(out, ref_out, TOL64, "output")
    assert_tree_close(h_n, ref_h, TOL64, "h_n")
    if lengths is not None:  # exactly zero past each length, not merely close
        out_tm = np.asarray(out if case.unbatched or not case.batch_first else out.swapaxes(0, 1))
        lens = np.reshape(np.asarray(lengths), -1)
        out_tm = out_tm.reshape(T, lens.size, -1)
        for b, n in enumerate(lens):
            assert not out_tm[n:, b].any()


FLOAT32_CASES = [CASES[i] for i in (9, 15, 19)]


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=[c.id for c in FLOAT32_CASES])
def test_layer_matches_reference_float32(rng, case):
    module = case.module()
    x, hx, lengths = make_inputs(case, rng, jnp.float32)
    variables = init_random(module, x, seed=7, dtype=jnp.float32)
    out, h_n = jax.jit(lambda v, x, hx: module.apply(v, x, hx, lengths=lengths))(variables, x, hx)
    ref_out, ref_h = reference(case, variables["params"], x, hx, lengths)
    assert out.dtype == jnp.float32
    assert_close(out, ref_out, TOL32, "output")
    assert_tree_close(h_n, ref_h, TOL32, "h_n")


# ----------------------------------------------------------------------------- scan vs cell

CELL_OF = {
    "rnn_tanh": (jaxrnn.RNNCell, {}),
    "rnn_relu": (jaxrnn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (jaxrnn.LSTMCell, {}),
    "gru": (jaxrnn.GRUCell, {}),
}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_scan_equals_python_loop_of_the_cell(x64, rng, kind):
    """Each direction of a bidirectional layer is the cell stepped over time (reverse: from
    T-1 down to 0) with the direction's weights."""
    case = Case(kind, bidirectional=True, hx=True)
    module = case.module(param_dtype=jnp.float64)
    x, hx, _ = make_inputs(case, rng)
    variables = init_random(module, x, seed=11)
    out, h_n = jax.jit(module.apply)(variables, x, hx)

    cls, kwargs = CELL_OF[kind]
    cell = cls(hidden_size=H, param_dtype=jnp.float64, **kwargs)
    step = jax.jit(cell.apply)
    for direction, suffix in enumerate(("_l0", "_l0_reverse")):
        params = {
            name.removesuffix(suffix): value
            for name, value in variables["params"].items()
            if name.endswith(suffix)
        }
        assert len(params) == 4
        carry = jax.tree.map(lambda a: a[direction], hx)
        ys = [None] * T
        for t in range(T - 1, -1, -1) if direction else range(T):
            carry, ys[t] = step({"params": params}, carry, x[t])
        half = out[..., direction * H : (direction + 1) * H]
        assert_close(half, jnp.stack(ys), TOL64, f"direction {direction} outputs")
        assert_tree_close(jax.tree.map(lambda a: a[direction], h_n), carry, TOL64, "h_n")


# ----------------------------------------------------------------------------- parameters


def torch_state_dict_shapes(kind, *, layers, bidirectional, bias=True, proj=0, input_size=I):
    """torch's state_dict (names, order, shapes) as documented for nn.RNN/LSTM/GRU."""
    G, D = GATES[kind], 2 if bidirectional else 1
    out = {}
    for k in range(layers):
        for suffix in ("", "_reverse")[:D]:
            s = f"_l{k}{suffix}"
            out[f"weight_ih{s}"] = (G * H, input_size if k == 0 else D * (proj or H))
            out[f"weight_hh{s}"] = (G * H, proj or H)
            if bias:
                out[f"bias_ih{s}"] = (G * H,)
                out[f"bias_hh{s}"] = (G * H,)
            if proj:
                out[f"weight_hr{s}"] = (proj, H)
    return out


def test_lstm_param_names_spelled_out():
    """torch's key order written out by hand once (bidirectional, projected)."""
    module = jaxrnn.LSTM(hidden_size=H, bidirectional=True, proj_size=P)
    assert traced_param_order(module, jnp.zeros((T, B, I))) == [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "weight_hr_l0",
        "weight_ih_l0_reverse",
        "weight_hh_l0_reverse",
        "bias_ih_l0_reverse",
        "bias_hh_l0_reverse",
        "weight_hr_l0_reverse",
    ]
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((T, B, I)))["params"]
    assert shapes["weight_ih_l0"].shape == (4 * H, I)
    assert shapes["weight_hh_l0_reverse"].shape == (4 * H, P)
    assert shapes["weight_hr_l0"].shape == (P, H)
    assert shapes["bias_hh_l0"].shape == (4 * H,)


PARAM_CASES = [
    Case("lstm", layers=2, bidirectional=True, proj=P),
    Case("lstm", layers=3),
    Case("gru", layers=2, bidirectional=True, bias=False),
    Case("rnn_tanh", layers=2, bidirectional=True),
    Case("rnn_relu", layers=1, bias=False),
]


@pytest.mark.parametrize("case", PARAM_CASES, ids=[c.id for c in PARAM_CASES])
def test_param_names_order_and_shapes_are_torch(case):
    module = case.module()
    x = jnp.zeros((T, B, I))
    expected = torch_state_dict_shapes(
        case.kind,
        layers=case.layers,
        bidirectional=case.bidirectional,
        bias=case.bias,
        proj=case.proj,
    )
    assert traced_param_order(module, x) == list(expected)
    params = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    assert {k: v.shape for k, v in params.items()} == expected  # flat: no nested submodules
    assert all(v.dtype == jnp.float32 for v in params.values())


@pytest.fixture(scope="module")
def lstm_initialised():
    """One real init of a bidirectional projected LSTM (jitted: the keys come back sorted;
    their order is checked by tracing above)."""
    module = jaxrnn.LSTM(hidden_size=H, bidirectional=True, proj_size=P)
    key = jax.random.key(3, impl="rbg")  # cheap to compile; the initializer is the same
    return jax.jit(module.init)(key, jnp.zeros((1, 1, I)))["params"]


def test_default_init_is_torch_uniform(lstm_initialised):
    """U(-1/sqrt(H), 1/sqrt(H)) for every parameter (weight_hr and biases included)."""
    expected = torch_state_dict_shapes("lstm", layers=1, bidirectional=True, proj=P)
    assert {k: v.shape for k, v in lstm_initialised.items()} == expected
    bound = 1 / np.sqrt(H)
    seen = set()
    for name, value in lstm_initialised.items():
        value = np.asarray(value)
        assert value.dtype == np.float32, name
        assert np.all(np.abs(value) <= bound), name
        assert np.unique(value).size > 0.9 * value.size, name  # not constant
        assert value.max() > bound / 2 and value.min() < -bound / 2, name  # spans the range
        seen.add(value.tobytes())
    assert len(seen) == len(lstm_initialised)  # each parameter drawn with its own key


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["plain", "lengths"])
def test_zero_state_takes_x_dtype_with_x64(x64, rng, lengths):
    """float32 in -> float32 out (and float32 h_n), even with x64 enabled."""
    module = jaxrnn.LSTM(hidden_size=H, bidirectional=True)
    x = randn(rng, T, B, I, dtype=jnp.float32)
    variables = init_random(module, x, dtype=jnp.float32)
    out, (h, c) = jax.jit(lambda v, x: module.apply(v, x, lengths=lengths))(variables, x)
    assert out.dtype == h.dtype == c.dtype == jnp.float32
    ref, (ref_h, ref_c) = rnn_layer(
        "lstm",
        to_numpy(variables["params"]),
        np.asarray(x),
        lengths=lengths,
        bidirectional=True,
    )
    assert_close(out, ref, TOL32)
    assert_close(c, ref_c, TOL32)
    for cls in (jaxrnn.GRU, jaxrnn.RNN):  # dtypes only: traced, not computed
        m = cls(hidden_size=H, num_layers=2)
        v = init_random(m, x, dtype=jnp.float32)
        o, hn = jax.eval_shape(lambda v: m.apply(v, x, lengths=lengths), v)
        assert o.dtype == hn.dtype == jnp.float32, cls.__name__


def test_float64_input_with_float32_params_computes_in_float64(x64, rng):
    """dtype=None means the input's dtype."""
    module = jaxrnn.GRU(hidden_size=H)
    x = randn(rng, T, B, I)
    variables = init_random(module, x, dtype=jnp.float32)
    out, h_n = jax.jit(module.apply)(variables, x)
    assert out.dtype == h_n.dtype == jnp.float64
    ref, ref_h = rnn_layer("gru", to_numpy(variables["params"]), np.asarray(x))
    assert_close(out, ref, TOL64)
    assert_close(h_n, ref_h, TOL64)


def test_bfloat16_runs(rng):
    case = Case("lstm", bidirectional=True, proj=P, lengths=True, hx=False)
    module = case.module(dtype=jnp.bfloat16)
    x, _, lengths = make_inputs(case, rng, jnp.float32)
    variables = init_random(module, x, dtype=jnp.float32, scale=0.3)
    out, h_n = jax.jit(lambda v, x: module.apply(v, x, lengths=lengths))(variables, x)
    assert out.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(h_n))
    ref, ref_h = reference(case, variables["params"], x, None, lengths)
    assert_close(out.astype(jnp.float32), ref, 3e-2, "bfloat16 output")
    assert_tree_close(jax.tree.map(lambda a: a.astype(jnp.float32), h_n), ref_h, 3e-2, "h_n")
    assert not np.asarray(out.astype(jnp.float32))[LENGTHS[0] :, 0].any()  # still masked


# ----------------------------------------------------------------------------- dropout, unroll


def _dropout_setup(rng, dropout, layers=2):
    module = jaxrnn.GRU(hidden_size=H, num_layers=layers, dropout=dropout)
    x = randn(rng, T, B, I, dtype=jnp.float32)
    return module, x, init_random(module, x, dtype=jnp.float32)


def test_dropout_active_only_when_not_deterministic(rng):
    module, x, variables = _dropout_setup(rng, 0.4)
    apply = jax.jit(module.apply, static_argnames="deterministic")
    det, h_det = apply(variables, x)
    det_again, _ = apply(variables, x, rngs={"dropout": jax.random.key(0)})  # rng ignored
    key_a, key_b = jax.random.key(1), jax.random.key(2)
    a, h_a = apply(variables, x, deterministic=False, rngs={"dropout": key_a})
    a2, _ = apply(variables, x, deterministic=False, rngs={"dropout": key_a})
    b, _ = apply(variables, x, deterministic=False, rngs={"dropout": key_b})
    assert np.abs(np.asarray(a) - np.asarray(det)).max() > 1e-3
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3  # the rng decides the mask
    np.testing.assert_array_equal(a, a2)  # and only the rng
    np.testing.assert_array_equal(det, det_again)
    # Dropout sits between layers: the first layer's final state is untouched by it.
    assert_close(h_a[0], h_det[0], 1e-6, "first layer h_n")
    assert np.abs(np.asarray(h_a[1]) - np.asarray(h_det[1])).max() > 1e-3


def test_dropout_needs_a_dropout_rng(rng):
    module, x, variables = _dropout_setup(rng, 0.4)
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        jax.eval_shape(lambda v: module.apply(v, x, deterministic=False), variables)


def test_dropout_zero_is_identity(rng):
    module, x, variables = _dropout_setup(rng, 0.0)

    @jax.jit
    def both(v):  # no rng needed with dropout=0
        return module.apply(v, x), module.apply(v, x, deterministic=False)

    (det, h_det), (out, h) = both(variables)
    np.testing.assert_array_equal(out, det)
    np.testing.assert_array_equal(h, h_det)


def test_dropout_is_not_applied_after_the_last_layer(x64, rng):
    """With dropout=1 the second layer sees zeros; its output equals a one-layer LSTM with the
    second layer's weights run on zeros (so nothing was dropped after it)."""
    module = jaxrnn.LSTM(hidden_size=H, num_layers=2, dropout=1.0, param_dtype=jnp.float64)
    x = randn(rng, T, B, I)
    variables = init_random(module, x)
    apply = jax.jit(
        lambda v: module.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    )
    out, (h_n, _) = apply(variables)
    l1 = {k.replace("_l1", "_l0"): v for k, v in variables["params"].items() if "_l1" in k}
    ref, (ref_h, _) = rnn_layer("lstm", to_numpy(l1), np.zeros((T, B, H)))
    assert_close(out, ref, TOL64)
    assert_close(h_n[1], ref_h[0], TOL64)
    assert np.abs(np.asarray(out)).min() > 0  # biases drive the output: not zeroed


def test_unroll_gives_the_same_result(x64, rng):
    unroll = 4  # does not divide T
    case = Case("lstm", bidirectional=True, proj=P, lengths=True, hx=True)
    x, hx, lengths = make_inputs(case, rng)
    module = case.module(param_dtype=jnp.float64, unroll=unroll)
    variables = init_random(module, x)
    out, h_n = jax.jit(lambda v: module.apply(v, x, hx, lengths=lengths))(variables)
    ref_out, ref_h = reference(case, variables["params"], x, hx, lengths)
    assert_close(out, ref_out, TOL64)
    assert_tree_close(h_n, ref_h, TOL64)


def test_input_size_field_is_checked_not_required(rng):
    x = randn(rng, T, B, I, dtype=jnp.float32)
    module = jaxrnn.GRU(hidden_size=H, input_size=I)
    params = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    assert params["weight_ih_l0"].shape == (3 * H, I)


# ----------------------------------------------------------------------------- forward mode


def _fused_and_plain(rng):
    """A GRU with the fused backward (the default) and with plain autodiff, and a loss each."""
    layer = jaxrnn.GRU(hidden_size=4, bidirectional=True)
    x = randn(rng, 5, 2, 3)
    variables = init_random(layer, x, seed=2)
    plain = layer.clone(fused_backward=False)

    def loss(module):
        return lambda x: jnp.sum(module.apply(variables, x, lengths=np.array([5, 2]))[0] ** 2)

    return loss(layer), loss(plain), x


FORWARD_MODE = {
    "jvp": lambda f, x: jax.jvp(f, (x,), (x,)),
    "jit(jvp)": lambda f, x: jax.jit(lambda x: jax.jvp(f, (x,), (x,)))(x),
    "jacfwd": lambda f, x: jax.jacfwd(f)(x),
    "linearize": lambda f, x: jax.linearize(f, x)[1](x),
    "hessian": lambda f, x: jax.hessian(f)(x),
    "jvp(grad)": lambda f, x: jax.jvp(jax.grad(f), (x,), (x,)),
    "grad(jvp)": lambda f, x: jax.grad(lambda x: jax.jvp(f, (x,), (x,))[1])(x),
    "jvp(vmap)": lambda f, x: jax.jvp(jax.vmap(f), (x[None],), (x[None],)),
}


@pytest.mark.parametrize("transform", FORWARD_MODE.values(), ids=FORWARD_MODE.keys())
def test_forward_mode_works_by_default(x64, rng, transform):
    """The fused loop (a custom_vjp) steps aside under forward mode: the same numbers as
    plain autodiff (fused_backward=False)."""
    fused, plain, x = _fused_and_plain(rng)
    for got, want in zip(
        jax.tree.leaves(transform(fused, x)), jax.tree.leaves(transform(plain, x))
    ):
        assert_close(got, want, TOL64)


@pytest.mark.parametrize(
    "transform, expected",
    [
        (lambda f, x: jax.grad(f)(x), False),
        (lambda f, x: jax.vjp(f, x)[0], False),
        (lambda f, x: jax.jit(jax.grad(f))(x), False),
        (lambda f, x: jax.vmap(jax.grad(f))(x[None]), False),
        (lambda f, x: jax.jvp(f, (x,), (x,)), True),
        (lambda f, x: jax.linearize(f, x), True),
        (lambda f, x: jax.jacfwd(f)(x), True),
        (lambda f, x: jax.hessian(f)(x), True),
    ],
    ids=["grad", "vjp", "jit(grad)", "vmap(grad)", "jvp", "linearize", "jacfwd", "hessian"],
)
def test_reverse_mode_keeps_the_fused_backward(transform, expected):
    """Only forward mode is detected: grad and vjp keep the hand-written backward."""
    seen = []

    def f(x):
        seen.append(jaxrnn.scan.forward_mode(x))
        return jnp.sum(jnp.sin(x))

    transform(f, jnp.ones(3))
    assert seen and all(s == expected for s in seen), seen


def test_jvp_of_a_function_jitted_before_is_jaxs_error(x64, rng):
    """The one case the layer cannot see (the README says so): jit traced f without the jvp."""
    fused, plain, x = _fused_and_plain(rng)
    jax.jvp(jax.jit(plain), (x,), (x,))  # plain autodiff: fine
    with pytest.raises(TypeError, match="forward-mode autodiff.*custom_vjp"):
        jax.jvp(jax.jit(fused), (x,), (x,))


# ----------------------------------------------------------------------------- help()

DOCUMENTED = [
    jaxrnn.RNN,
    jaxrnn.LSTM,
    jaxrnn.GRU,
    jaxrnn.LinearRNN,
    jaxrnn.RNNCell,
    jaxrnn.LSTMCell,
    jaxrnn.GRUCell,
    jaxrnn.LinearCell,
    jaxrnn.Embed,
    jaxrnn.Recurrent,
    jaxrnn.Bidirectional,
    jaxrnn.nnx.RNN,
    jaxrnn.nnx.LSTM,
    jaxrnn.nnx.GRU,
    jaxrnn.nnx.RNNCell,
    jaxrnn.nnx.LSTMCell,
    jaxrnn.nnx.GRUCell,
    jaxrnn.nnx.Embed,
]


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_help_shows_the_call(cls):
    """``help(cls)`` shows ``__call__``'s arguments with their shapes and what it returns."""
    doc = cls.__call__.__doc__ or ""
    assert "Returns" in doc and "[" in doc, f"{cls.__name__}.__call__ is not documented"
    assert doc.strip().splitlines()[0] in pydoc.render_doc(cls)
