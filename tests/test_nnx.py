"""``jaxrnn.nnx``: NNX layers with torch's constructors and the linen layers' math (no torch).

One copy of the math: an NNX layer given a linen layer's parameters gives the very same bits
(both call ``jaxrnn.layers.run_stack``). Parameter paths are torch's state_dict keys; dropout
follows ``model.eval()`` / ``model.train()``; the cells run in ``flax.nnx.RNN``. The torch side
(parity, ``from_torch`` / ``to_torch``) is in ``parity/test_layers.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import init_random, randn
from flax import nnx

import jaxrnn

T, B, I, H, P = 6, 3, 5, 7, 4
LENGTHS = np.array([6, 2, 4])


def _params(model) -> dict:
    return jaxrnn.params_to_state_dict(nnx.state(model, nnx.Param))


CONFIGS = [
    pytest.param("LSTM", (I, H, 1, True, False, 0.0, True), {}, id="LSTM-bi"),
    pytest.param("LSTM", (I, H), dict(proj_size=P, batch_first=True), id="LSTM-proj-bf"),
    pytest.param("GRU", (I, H, 2, False), {}, id="GRU-L2-nobias"),
    pytest.param("RNN", (I, H, 1, "relu"), dict(bidirectional=True), id="RNN-relu-bi"),
]


@pytest.mark.parametrize("name, args, kwargs", CONFIGS)
def test_same_bits_as_the_linen_layer(x64, rng, name, args, kwargs):
    """torch's positional constructor; params under torch's keys; the linen layer with the same
    parameters gives identical outputs, states and gradients."""
    model = getattr(jaxrnn.nnx, name)(*args, **kwargs, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    linen_kwargs = dict(zip(("hidden_size", "num_layers"), args[1:3])) | kwargs
    if name == "RNN":
        linen_kwargs["nonlinearity"] = args[3]
    elif len(args) > 3:
        linen_kwargs["bias"] = args[3]
    if len(args) > 6:
        linen_kwargs["bidirectional"] = args[6]
    layer = getattr(jaxrnn, name)(**linen_kwargs)
    x = randn(rng, *((B, T, I) if layer.batch_first else (T, B, I)))
    variables = init_random(layer, x, seed=1)
    assert {k: v.shape for k, v in _params(model).items()} == {
        k: v.shape for k, v in variables["params"].items()
    }
    nnx.update(model, dict(variables["params"]))

    def linen_loss(params):
        out, h_n = layer.apply({"params": params}, x, lengths=LENGTHS)
        return jnp.sum(out**2) + sum(jnp.sum(a) for a in jax.tree.leaves(h_n)), (out, h_n)

    def nnx_loss(model):
        out, h_n = model(x, lengths=LENGTHS)
        return jnp.sum(out**2) + sum(jnp.sum(a) for a in jax.tree.leaves(h_n)), (out, h_n)

    (_, ref), ref_grads = jax.value_and_grad(linen_loss, has_aux=True)(variables["params"])
    (_, got), grads = nnx.value_and_grad(nnx_loss, has_aux=True)(model)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)
    grads = nnx.to_pure_dict(grads)
    for k, g in ref_grads.items():
        np.testing.assert_array_equal(grads[k], g, err_msg=k)


def test_param_paths_are_torch_state_dict_keys():
    class Tagger(nnx.Module):
        def __init__(self, rngs):
            self.embedding = jaxrnn.nnx.Embed(11, I, padding_idx=0, rngs=rngs)
            self.rnn = jaxrnn.nnx.LSTM(I, H, bidirectional=True, rngs=rngs)
            self.fc = nnx.Linear(2 * H, 3, rngs=rngs)

    state = _params(Tagger(nnx.Rngs(0)))
    expected = {"embedding.weight": (11, I), "fc.weight": (3, 2 * H), "fc.bias": (3,)}
    for s in ("", "_reverse"):
        expected |= {f"rnn.weight_ih_l0{s}": (4 * H, I), f"rnn.weight_hh_l0{s}": (4 * H, H)}
        expected |= {f"rnn.bias_ih_l0{s}": (4 * H,), f"rnn.bias_hh_l0{s}": (4 * H,)}
    assert {k: v.shape for k, v in state.items()} == expected


def test_state_dict_to_params_like_an_nnx_model(rng):
    """A state_dict (here made by hand, as torch's would be) loads into an NNX model."""
    model = jaxrnn.nnx.GRU(I, H, 2, rngs=nnx.Rngs(0))
    state = {k: rng.uniform(-1, 1, v.shape).astype(np.float32) for k, v in _params(model).items()}
    nnx.update(model, jaxrnn.state_dict_to_params(state, like=model))
    for k, v in _params(model).items():
        np.testing.assert_array_equal(v, state[k])


def test_default_init_is_torch_uniform_and_options_apply():
    model = jaxrnn.nnx.LSTM(I, H, 2, rngs=nnx.Rngs(0))
    bound = 1 / np.sqrt(H)
    for name, value in _params(model).items():
        assert np.abs(value).max() <= bound and value.max() > bound / 2, name
    custom = jaxrnn.nnx.LSTM(
        I,
        H,
        recurrent_kernel_init=nn.initializers.orthogonal(),
        bias_init=nn.initializers.zeros,
        forget_bias=1.0,
        rngs=nnx.Rngs(0),
    )
    w = np.asarray(custom.weight_hh_l0[...], np.float64)
    for block in np.split(w, 4):
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)
    np.testing.assert_array_equal(custom.bias_hh_l0[...], np.repeat([0.0, 1.0, 0.0, 0.0], H))
    with pytest.raises(ValueError, match="forget_bias is for LSTMs only"):
        jaxrnn.nnx.GRU(I, H, forget_bias=1.0, rngs=nnx.Rngs(0))


def test_dropout_follows_train_and_eval(rng):
    model = jaxrnn.nnx.GRU(I, H, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0))
    x = randn(rng, T, B, I, dtype=jnp.float32)
    first, second = model(x)[0], model(x)[0]  # training mode after construction
    assert not np.array_equal(first, second)  # a new mask per call
    model.eval()
    a, b = model(x)[0], model(x)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, model(x, deterministic=True)[0])
    assert not np.array_equal(a, model(x, deterministic=False)[0])
    model.train()
    assert not np.array_equal(a, model(x)[0])


def test_jit_and_initialize_carry(rng):
    model = jaxrnn.nnx.LSTM(I, H, 2, proj_size=P, rngs=nnx.Rngs(0))
    x = randn(rng, T, B, I, dtype=jnp.float32)
    h, c = model.initialize_carry(x.shape)
    assert h.shape == (2, B, P) and c.shape == (2, B, H) and not np.asarray(h).any()
    out, (h_n, c_n) = nnx.jit(lambda m, x, hx: m(x, hx))(model, x, (h, c))
    np.testing.assert_allclose(out, model(x)[0], rtol=1e-6)
    assert out.shape == (T, B, P) and h_n.shape == (2, B, P)


def test_errors_are_the_linen_layers(rng):
    model = jaxrnn.nnx.GRU(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=rf"x has {I + 1} features, but input_size={I}"):
        model(jnp.zeros((T, B, I + 1)))
    with pytest.raises(ValueError, match=r"lengths must have shape \[3\]"):
        model(jnp.zeros((T, B, I)), lengths=np.ones(2, int))
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        jaxrnn.nnx.GRU(I, H, rngs=nnx.Rngs(0), hidden=3)


# ----------------------------------------------------------------------------- cells, Embed


@pytest.mark.parametrize(
    "name, linen",
    [("LSTMCell", jaxrnn.LSTMCell), ("GRUCell", jaxrnn.GRUCell), ("RNNCell", jaxrnn.RNNCell)],
)
def test_cells_in_nnx_rnn_equal_the_linen_cells(x64, rng, name, linen):
    cell = getattr(jaxrnn.nnx, name)(I, H, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    x = randn(rng, B, T, I)
    out = nnx.RNN(cell)(x)
    params = {k: v for k, v in _params(cell).items()}
    ref = nn.RNN(linen(hidden_size=H, param_dtype=jnp.float64)).apply(
        {"params": {"cell": params}}, x
    )
    np.testing.assert_array_equal(out, ref)
    with pytest.raises((TypeError, ValueError), match="carry"):
        cell(jnp.zeros((1, H)) if name != "LSTMCell" else jnp.zeros((B, H)), x[:, 0])


def test_embed_padding_row_and_bad_ids():
    embed = jaxrnn.nnx.Embed(9, 4, padding_idx=-1, rngs=nnx.Rngs(0))
    assert embed.padding_idx == 8 and not np.asarray(embed.weight[...][8]).any()
    ids = jnp.array([[8, 1], [2, 8]])
    grads = nnx.grad(lambda m: jnp.sum(m(ids) * 3.0))(embed)
    g = np.asarray(nnx.to_pure_dict(grads)["weight"])
    assert not g[8].any() and (g[1] == 3.0).all()
    with pytest.raises(jaxrnn.TokenIdError, match=r"ids must be in \[0, 9\)"):
        embed(np.array([9]))
