"""Bad input raises ValueError / TypeError naming the argument; Embed refuses bad token ids."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import init_random, randn
from jax.experimental.checkify import JaxRuntimeError

import jaxrnn

T, B, I, H, P = 9, 3, 5, 11, 7


def _shapes_only(module, *args, **kwargs):
    """Run a layer's checks (all at trace time) without computing anything."""
    return jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), *args, **kwargs))


# ----------------------------------------------------------------------------- x


@pytest.mark.parametrize("cls", [jaxrnn.RNN, jaxrnn.LSTM, jaxrnn.GRU, jaxrnn.LinearRNN])
@pytest.mark.parametrize("shape", [(T,), (2, T, B, I)], ids=["1d", "4d"])
def test_x_of_wrong_rank(cls, shape):
    with pytest.raises(ValueError, match=r"x must be \[time, batch, features\].*got shape"):
        _shapes_only(cls(hidden_size=H), jnp.zeros(shape))


@pytest.mark.parametrize("cls", [jaxrnn.RNN, jaxrnn.LSTM, jaxrnn.GRU, jaxrnn.LinearRNN])
def test_integer_x(cls):
    with pytest.raises(TypeError, match="x must be a floating array.*int32"):
        _shapes_only(cls(hidden_size=H), jnp.zeros((T, B, I), jnp.int32))


def test_x_not_an_array():
    with pytest.raises(TypeError, match="x must be an array"):
        _shapes_only(jaxrnn.GRU(hidden_size=H), [[1.0, 2.0]])


@pytest.mark.parametrize("cls", [jaxrnn.LSTM, jaxrnn.LinearRNN])
@pytest.mark.parametrize(
    "shape",
    [(0, B, I), (0, I)],
    ids=["time_major", "unbatched"],
)
def test_x_with_zero_time_steps(cls, shape):
    with pytest.raises(ValueError, match="x has 0 time steps"):
        _shapes_only(cls(hidden_size=H), jnp.zeros(shape))


@pytest.mark.parametrize("cls", [jaxrnn.GRU, jaxrnn.LinearRNN])
def test_x_with_zero_time_steps_batch_first(cls):
    with pytest.raises(ValueError, match="x has 0 time steps"):
        _shapes_only(cls(hidden_size=H, batch_first=True), jnp.zeros((B, 0, I)))


def test_empty_batch_batch_first_is_not_called_zero_time_steps():
    module = jaxrnn.GRU(hidden_size=H, batch_first=True)
    try:
        _shapes_only(module, jnp.zeros((0, T, I)))  # [B=0, T=9, I]: nine time steps
    except ValueError as error:
        assert "0 time steps" not in str(error), str(error)


def test_x_features_must_match_input_size():
    module = jaxrnn.LSTM(hidden_size=H, input_size=I + 2)
    with pytest.raises(ValueError, match=rf"x has {I} features, but input_size={I + 2}"):
        _shapes_only(module, jnp.zeros((T, B, I)))


@pytest.mark.parametrize("cls", [jaxrnn.RNN, jaxrnn.LSTM, jaxrnn.GRU])
def test_x_features_must_match_the_weights(cls, rng):
    module = cls(hidden_size=H, num_layers=2)
    variables = init_random(module, jnp.zeros((T, B, I)), dtype=jnp.float32)
    x = randn(rng, T, B, I + 1, dtype=jnp.float32)
    with pytest.raises(ValueError, match=rf"x has {I + 1} features, but weight_ih_l0 expects {I}"):
        module.apply(variables, x)


def test_layer_input_must_match_the_weights_of_the_next_layer(rng):
    """Params of a unidirectional model given to a bidirectional one: layer 1 sees 2H."""
    uni = jaxrnn.GRU(hidden_size=H, num_layers=2)
    variables = init_random(uni, jnp.zeros((T, B, I)), dtype=jnp.float32)
    params = dict(variables["params"])
    for k, v in list(params.items()):
        params[k + "_reverse"] = v
    bi = jaxrnn.GRU(hidden_size=H, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=rf"layer 1.* has {2 * H} features.*weight_ih_l1"):
        bi.apply({"params": params}, randn(rng, T, B, I, dtype=jnp.float32))


# ----------------------------------------------------------------------------- hx


@pytest.fixture
def gru():
    module = jaxrnn.GRU(hidden_size=H, num_layers=2, bidirectional=True)
    return module, init_random(module, jnp.zeros((T, B, I)), dtype=jnp.float32)


@pytest.mark.parametrize(
    "shape",
    [(4, B, H + 1), (2, B, H), (4, B + 1, H), (4, 1, H)],
    ids=["hidden", "layers", "batch", "batch1"],
)
def test_hx_of_wrong_shape(gru, shape):
    module, variables = gru
    expected = rf"hx must have shape \(4, {B}, {H}\).*{re.escape(f'got {shape}')}"
    with pytest.raises(ValueError, match=expected):
        module.apply(variables, jnp.zeros((T, B, I)), jnp.zeros(shape))


def test_hx_is_never_batch_first():
    module = jaxrnn.GRU(hidden_size=H, batch_first=True)
    x = jnp.zeros((B, T, I))
    variables = init_random(module, x, dtype=jnp.float32)
    with pytest.raises(ValueError, match="hx must have shape"):
        module.apply(variables, x, jnp.zeros((B, 1, H)))


def test_2d_hx_with_3d_x(gru):
    module, variables = gru
    with pytest.raises(ValueError, match=r"hx must be 3-D .* for batched \(3-D\) x; got 2-D"):
        module.apply(variables, jnp.zeros((T, B, I)), jnp.zeros((4, H)))


def test_3d_hx_with_2d_x(gru):
    module, variables = gru
    with pytest.raises(ValueError, match=r"hx must be 2-D .* for unbatched \(2-D\) x; got 3-D"):
        module.apply(variables, jnp.zeros((T, I)), jnp.zeros((4, 1, H)))


def test_hx_of_wrong_shape_unbatched(gru):
    module, variables = gru
    with pytest.raises(ValueError, match=r"hx must have shape \(4, 11\).*without the batch"):
        module.apply(variables, jnp.zeros((T, I)), jnp.zeros((2, H)))


def test_hx_of_wrong_dtype(gru):
    module, variables = gru
    with pytest.raises(TypeError, match="hx has dtype int32, but the input is float32"):
        module.apply(variables, jnp.zeros((T, B, I)), jnp.zeros((4, B, H), jnp.int32))
    with pytest.raises(TypeError, match="hx has dtype bfloat16"):
        module.apply(variables, jnp.zeros((T, B, I)), jnp.zeros((4, B, H), jnp.bfloat16))


def test_hx_not_an_array(gru):
    module, variables = gru
    with pytest.raises(TypeError, match="hx must be an array, got float"):
        module.apply(variables, jnp.zeros((T, B, I)), 0.5)
    with pytest.raises(ValueError, match=r"hx must be one array \[L·D, B, H\], got 2 arrays"):
        module.apply(variables, jnp.zeros((T, B, I)), (jnp.zeros((4, B, H)),) * 2)


@pytest.fixture
def lstm():
    module = jaxrnn.LSTM(hidden_size=H, proj_size=P)
    return module, init_random(module, jnp.zeros((T, B, I)), dtype=jnp.float32)


def test_lstm_hx_must_be_a_pair(lstm):
    module, variables = lstm
    x = jnp.zeros((T, B, I))
    with pytest.raises(ValueError, match=r"hx must be a pair \(h_0.*c_0.*got 1 arrays"):
        module.apply(variables, x, jnp.zeros((1, B, P)))
    with pytest.raises(ValueError, match=r"hx must be a pair.*got 3 arrays"):
        module.apply(variables, x, (jnp.zeros((1, B, P)),) * 3)


def test_lstm_hx_shapes_name_h0_and_c0(lstm):
    """With proj_size, h_0 is [L·D, B, P] and c_0 is [L·D, B, H]; swapping them is caught."""
    module, variables = lstm
    x = jnp.zeros((T, B, I))
    h, c = jnp.zeros((1, B, P)), jnp.zeros((1, B, H))
    with pytest.raises(ValueError, match=rf"hx\[0\] \(h_0\) must have shape \(1, {B}, {P}\)"):
        module.apply(variables, x, (c, c))
    with pytest.raises(ValueError, match=rf"hx\[1\] \(c_0\) must have shape \(1, {B}, {H}\)"):
        module.apply(variables, x, (h, h))
    out, (h_n, c_n) = jax.eval_shape(lambda: module.apply(variables, x, (h, c)))
    assert out.shape == (T, B, P) and h_n.shape == (1, B, P) and c_n.shape == (1, B, H)


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("proj_size", [H, H + 4, -1], ids=["equal", "larger", "negative"])
def test_proj_size_must_be_below_hidden_size(proj_size):
    with pytest.raises(ValueError, match=rf"proj_size must be .*hidden_size = {H}.*{proj_size}"):
        _shapes_only(jaxrnn.LSTM(hidden_size=H, proj_size=proj_size), jnp.zeros((T, B, I)))


@pytest.mark.parametrize("cls", [jaxrnn.RNN, jaxrnn.RNNCell], ids=["RNN", "RNNCell"])
def test_bad_nonlinearity(cls):
    module = cls(hidden_size=H, nonlinearity="sigmoid")
    args = (jnp.zeros((T, B, I)),) if cls is jaxrnn.RNN else (jnp.zeros((B, H)), jnp.zeros((B, I)))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        _shapes_only(module, *args)


@pytest.mark.parametrize(
    "field, value",
    [("hidden_size", 0), ("num_layers", 0), ("dropout", 1.5), ("dropout", -0.1), ("unroll", 0)],
)
def test_bad_config_values(field, value):
    kwargs = {"hidden_size": H, field: value}
    with pytest.raises(ValueError, match=field):
        _shapes_only(jaxrnn.GRU(**kwargs), jnp.zeros((T, B, I)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: jaxrnn.LSTM(10, 20),
        lambda: jaxrnn.GRU(10),
        lambda: jaxrnn.RNN(10, 20, 2),
        lambda: jaxrnn.LinearRNN(10),
        lambda: jaxrnn.LSTMCell(10),
    ],
    ids=["LSTM", "GRU", "RNN", "LinearRNN", "LSTMCell"],
)
def test_fields_are_keyword_only(make):
    """torch's positional order starts with input_size: positional args would shift."""
    with pytest.raises(TypeError, match="keyword-only|positional"):
        make()


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(jaxrnn.RNN),
        pytest.param(jaxrnn.LSTM),
        jaxrnn.GRU,
        jaxrnn.LinearRNN,
        pytest.param(jaxrnn.RNNCell),
        jaxrnn.LSTMCell,
        jaxrnn.GRUCell,
        jaxrnn.LinearCell,
        jaxrnn.Embed,
    ],
    ids=lambda c: c.__name__,
)
def test_no_field_is_positional(cls):
    """Every field of every public module is keyword-only (Flax's own parent/name aside)."""
    params = inspect.signature(cls.__init__).parameters.items()
    positional = [
        name
        for name, p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and name not in ("self", "parent", "name")
    ]
    assert positional == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: jaxrnn.LSTM(10, hidden_size=20), id="LSTM"),
        pytest.param(lambda: jaxrnn.RNN(10, hidden_size=20), id="RNN"),
        pytest.param(lambda: jaxrnn.GRU(10, hidden_size=20), id="GRU"),
    ],
)
def test_torch_style_positional_input_size_is_refused(make):
    """torch users write nn.LSTM(10, hidden_size=20) meaning input_size=10: must not be
    accepted as something else."""
    with pytest.raises((TypeError, ValueError)):
        make()


# ----------------------------------------------------------------------------- Embed

V, F = 13, 5  # vocabulary, features


@pytest.fixture(scope="module")
def embed():
    module = jaxrnn.Embed(num_embeddings=V, features=F)
    table = np.random.default_rng(0).uniform(-1, 1, (V, F)).astype(np.float32)
    return module, {"params": {"embedding": jnp.asarray(table)}}


@pytest.mark.parametrize("bad", [V, V + 7, -1, -V], ids=["V", "V_plus_7", "minus_1", "minus_V"])
def test_embed_out_of_range_ids_raise(embed, bad):
    module, variables = embed
    ids = np.array([[1, 2, 3], [4, bad, 0]])
    expected = rf"ids must be in \[0, {V}\).*ids\[1, 1\] = {bad}"
    with pytest.raises(jaxrnn.TokenIdError, match=expected):
        module.apply(variables, ids)
    with pytest.raises(IndexError, match="ids"):  # torch.nn.Embedding raises IndexError
        module.apply(variables, jnp.asarray(ids))
    assert issubclass(jaxrnn.TokenIdError, IndexError)


def test_embed_reports_how_many_ids_are_bad(embed):
    module, variables = embed
    with pytest.raises(jaxrnn.TokenIdError, match=r"\(3 of 4 out of range\)"):
        module.apply(variables, np.array([V, 0, -3, 99]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_embed_float_ids(embed, dtype):
    module, variables = embed
    with pytest.raises(TypeError, match="ids must be integer token ids"):
        module.apply(variables, np.array([1, 2]).astype(dtype))


def test_embed_valid_ids_look_up_rows(embed):
    module, variables = embed
    ids = np.array([[0, V - 1], [5, 5]])
    out = module.apply(variables, ids)
    np.testing.assert_array_equal(out, np.asarray(variables["params"]["embedding"])[ids])


def test_embed_under_jit_gives_nan_rows_not_clamped(embed):
    module, variables = embed
    table = np.asarray(variables["params"]["embedding"])
    ids = jnp.array([[3, V, -1], [V - 1, 0, V + 100]])
    out = np.asarray(jax.jit(module.apply)(variables, ids))
    assert out.shape == (2, 3, F)
    bad = np.array([[False, True, True], [False, False, True]])
    assert np.isnan(out[bad]).all()  # not table[V-1] (clamp) nor table[-1] (wrap)
    np.testing.assert_array_equal(out[~bad], table[np.asarray(ids)[~bad]])


def test_checked_raises_inside_jit(embed):
    module, variables = embed

    def model(v, ids):
        return jnp.sum(module.apply(v, ids) ** 2)

    safe = jaxrnn.checked(model)
    ids = jnp.array([1, 4, V - 1])
    np.testing.assert_allclose(safe(variables, ids), model(variables, np.asarray(ids)), rtol=1e-6)
    for bad in (V, -1):
        with pytest.raises(JaxRuntimeError, match=rf"out-of-bounds.*index {V} is out of bounds"):
            safe(variables, ids.at[1].set(bad))


def test_check_ids_directly():
    jaxrnn.check_ids(np.array([0, 6]), 7)
    with pytest.raises(jaxrnn.TokenIdError, match=r"tokens must be in \[0, 7\)"):
        jaxrnn.check_ids(np.array([0, 7]), 7, name="tokens")
    with pytest.raises(TypeError, match="tokens must be integer"):
        jaxrnn.check_ids(np.array([0.0]), 7, name="tokens")


# ----------------------------------------------------------------------------- cell carries


@pytest.fixture(scope="module")
def lstm_cell():
    cell = jaxrnn.LSTMCell(hidden_size=H)
    x = jnp.ones((2, I))
    return cell, cell.init(jax.random.key(0), cell.initialize_carry(None, x.shape), x), x


def test_lstm_cell_refuses_a_bare_array_carry(lstm_cell):
    """A [2, H] array with batch 2 would unpack as (h, c) along the batch rows."""
    cell, variables, x = lstm_cell
    with pytest.raises(
        TypeError, match=rf"carry must be a pair \(h, c\).*got an array of shape \(2, {H}\)"
    ):
        cell.apply(variables, jnp.zeros((2, H)), x)


@pytest.mark.parametrize("batch", [1, 3], ids=["batch1_broadcast", "batch3"])
def test_lstm_cell_refuses_a_carry_of_another_batch(lstm_cell, batch):
    cell, variables, x = lstm_cell
    carry = (jnp.zeros((batch, H)), jnp.zeros((2, H)))
    expected = rf"carry\[0\] \(h\) must have shape \(2, {H}\).*got \({batch}, {H}\)"
    with pytest.raises(ValueError, match=expected):
        cell.apply(variables, carry, x)


def test_cell_carry_of_the_wrong_width(lstm_cell):
    cell, variables, x = lstm_cell
    with pytest.raises(ValueError, match=rf"carry\[1\] \(c\) must have shape \(2, {H}\).*hidden"):
        cell.apply(variables, (jnp.zeros((2, H)), jnp.zeros((2, H + 1))), x)


def test_gru_cell_carry_is_one_array():
    cell = jaxrnn.GRUCell(hidden_size=H)
    x = jnp.ones((2, I))
    variables = jax.eval_shape(cell.init, jax.random.key(0), jnp.zeros((2, H)), x)
    with pytest.raises(TypeError, match=r"carry must be one array h \[2, 11\]; got a tuple"):
        cell.apply(variables, (jnp.zeros((2, H)),), x)
    with pytest.raises(ValueError, match=r"carry must have shape \(2, 11\).*got \(1, 11\)"):
        cell.apply(variables, jnp.zeros((1, H)), x)
    with pytest.raises(TypeError, match="carry must be an array, got float"):
        cell.apply(variables, 0.0, x)


# ----------------------------------------------------------------------------- hints


@pytest.mark.parametrize(
    "make, hint",
    [
        (lambda: jaxrnn.LSTM(10, 20), r"jaxrnn\.LSTM\(hidden_size=.*jaxrnn\.nnx\.LSTM\(input_size"),
        (lambda: jaxrnn.GRU(10), r"jaxrnn\.GRU\(hidden_size=.*jaxrnn\.nnx\.GRU\(input_size"),
        (lambda: jaxrnn.GRUCell(10), r"jaxrnn\.nnx\.GRUCell\(input_size, hidden_size"),
        (lambda: jaxrnn.LinearRNN(10), r"jaxrnn\.LinearRNN\(hidden_size=\.\.\., \.\.\.\)"),
    ],
    ids=["LSTM", "GRU", "GRUCell", "LinearRNN"],
)
def test_positional_arguments_get_a_hint(make, hint):
    with pytest.raises(TypeError, match=r"keyword arguments only, got \d positional.*" + hint):
        make()


def test_lengths_of_size_T_hint_at_batch_first():
    module = jaxrnn.GRU(hidden_size=H)  # x read as [T, B, I]: a [B, T, I] x gives T=B
    x = jnp.zeros((B, T, I))  # meant batch-first: 3 sequences of 9 steps
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    with pytest.raises(
        ValueError,
        match=rf"lengths must have shape \[{T}\].*got \({B},\).*"
        r"one entry per time step.*batch_first=True",
    ):
        jax.eval_shape(lambda v: module.apply(v, x, lengths=np.full(B, 2)), variables)


def test_hx_dtype_error_names_the_compute_dtype(gru):
    module, variables = gru
    bf16 = module.clone(dtype=jnp.bfloat16)
    x, hx = jnp.zeros((T, B, I)), jnp.zeros((4, B, H))
    with pytest.raises(
        TypeError,
        match=r"the input is bfloat16: the layer computes in bfloat16 "
        r"\(dtype=bfloat16\)",
    ):
        bf16.apply(variables, x, hx)
    with pytest.raises(TypeError, match=r"computes in float32 \(x's dtype, as dtype=None\)"):
        module.apply(variables, x, hx.astype(jnp.float16))
