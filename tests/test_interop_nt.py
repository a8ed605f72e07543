"""Whole models by name, without torch: params_to_state_dict / state_dict_to_params.

A Flax submodule path joined by "." is the torch attribute path; Dense ``kernel [in, out]`` is
torch ``weight [out, in]``; Embed ``embedding`` is ``weight``; recurrent leaves are identical.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from checks import random_params
from flax import nnx

import jaxrnn

V, F, H, C, T, B = 13, 5, 7, 3, 4, 2  # vocabulary, embedding, hidden, classes, time, batch


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, ids):
        x = jaxrnn.Embed(num_embeddings=V, features=F, name="embed")(ids)
        out, _ = jaxrnn.LSTM(hidden_size=H, bidirectional=True, name="rnn")(x)
        return out


class Model(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(C, name="head")(Encoder(name="encoder")(ids))


def _rnn_names():
    return [
        f"encoder.rnn.{w}_l0{s}"
        for s in ("", "_reverse")
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


EXPECTED_SHAPES = {
    "encoder.embed.weight": (V, F),
    **{
        name: {"weight_ih": (4 * H, F), "weight_hh": (4 * H, H)}.get(
            name.split(".")[-1].removesuffix("_l0_reverse").removesuffix("_l0"), (4 * H,)
        )
        for name in _rnn_names()
    },
    "head.weight": (C, 2 * H),
    "head.bias": (C,),
}


@pytest.fixture(scope="module")
def params():
    shapes = jax.eval_shape(Model().init, jax.random.key(0), jnp.zeros((T, B), jnp.int32))
    return random_params(shapes["params"], seed=1, dtype=jnp.float32)


def test_names_are_joined_by_dots_with_torch_leaves(params):
    state = jaxrnn.params_to_state_dict(params)
    assert {k: v.shape for k, v in state.items()} == EXPECTED_SHAPES
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.testing.assert_array_equal(state["head.weight"], np.asarray(params["head"]["kernel"]).T)
    np.testing.assert_array_equal(state["head.bias"], params["head"]["bias"])
    np.testing.assert_array_equal(
        state["encoder.embed.weight"], params["encoder"]["embed"]["embedding"]
    )
    for name in _rnn_names():
        leaf = name.split(".")[-1]
        np.testing.assert_array_equal(state[name], params["encoder"]["rnn"][leaf])


def test_variables_wrapper_is_accepted(params):
    a = jaxrnn.params_to_state_dict(params)
    b = jaxrnn.params_to_state_dict({"params": params})
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_round_trip_is_exact(params):
    state = jaxrnn.params_to_state_dict(params)
    back = jaxrnn.state_dict_to_params(state, like=params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for (path, a), b in zip(jax.tree.leaves_with_path(back), jax.tree.leaves(params)):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    wrapped = jaxrnn.state_dict_to_params(state, like={"params": params})
    assert jax.tree.structure(wrapped) == jax.tree.structure(params)


def test_load_a_foreign_state_dict(params):
    """A float64 torch-layout state_dict is transposed where needed and cast to like's dtype."""
    rng = np.random.default_rng(2)
    state = {k: rng.uniform(-1, 1, shape) for k, shape in EXPECTED_SHAPES.items()}
    loaded = jaxrnn.state_dict_to_params(state, like=params)
    assert loaded["head"]["kernel"].shape == (2 * H, C)
    assert loaded["head"]["kernel"].dtype == jnp.float32
    np.testing.assert_array_equal(
        loaded["head"]["kernel"], state["head.weight"].T.astype(np.float32)
    )
    np.testing.assert_array_equal(
        loaded["encoder"]["embed"]["embedding"], state["encoder.embed.weight"].astype(np.float32)
    )
    np.testing.assert_array_equal(
        loaded["encoder"]["rnn"]["weight_hh_l0_reverse"],
        state["encoder.rnn.weight_hh_l0_reverse"].astype(np.float32),
    )
    # The loaded head is a working Dense layer computing x @ weightᵀ + bias.
    features = rng.standard_normal((B, 2 * H)).astype(np.float32)
    logits = nn.Dense(C).apply({"params": loaded["head"]}, features)
    expected = features @ state["head.weight"].T + state["head.bias"]
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)


def test_missing_keys_are_named(params):
    state = jaxrnn.params_to_state_dict(params)
    del state["encoder.rnn.bias_hh_l0_reverse"], state["head.bias"]
    with pytest.raises(
        KeyError,
        match=r"missing keys: \['encoder.rnn.bias_hh_l0_reverse', "
        r"'head.bias'\]",
    ):
        jaxrnn.state_dict_to_params(state, like=params)


def test_unexpected_keys_are_named(params):
    state = jaxrnn.params_to_state_dict(params)
    state["encoder.rnn.weight_hr_l0"] = np.zeros((3, H))
    with pytest.raises(KeyError, match=r"unexpected keys: \['encoder.rnn.weight_hr_l0'\]") as info:
        jaxrnn.state_dict_to_params(state, like=params)
    assert "missing keys" not in str(info.value)


def test_missing_and_unexpected_in_one_error(params):
    """A renamed key (flax name vs torch name) shows up on both sides."""
    state = jaxrnn.params_to_state_dict(params)
    state["head.kernel"] = state.pop("head.weight")
    with pytest.raises(
        KeyError,
        match=r"missing keys: \['head.weight'\].*"
        r"unexpected keys: \['head.kernel'\]",
    ):
        jaxrnn.state_dict_to_params(state, like=params)


def test_shape_mismatches_are_named_in_torch_layout(params):
    state = jaxrnn.params_to_state_dict(params)
    state["head.weight"] = np.zeros((C, 2 * H + 1))
    state["encoder.rnn.weight_ih_l0"] = np.zeros((4 * H, F + 2))
    with pytest.raises(ValueError, match="shape mismatch") as info:
        jaxrnn.state_dict_to_params(state, like=params)
    message = str(info.value)
    assert f"head.weight: state_dict has {(C, 2 * H + 1)}, the model needs {(C, 2 * H)}" in message
    assert (
        f"encoder.rnn.weight_ih_l0: state_dict has {(4 * H, F + 2)}, the model needs {(4 * H, F)}"
    ) in message
    assert "embed" not in message


def test_transposed_dense_weight_is_a_shape_mismatch(params):
    """Handing over the Flax kernel layout by mistake is caught, not silently accepted."""
    state = jaxrnn.params_to_state_dict(params)
    state["head.weight"] = np.asarray(params["head"]["kernel"])  # [in, out], not [out, in]
    with pytest.raises(ValueError, match=r"head.weight: state_dict has \(14, 3\)"):
        jaxrnn.state_dict_to_params(state, like=params)


def test_only_2d_dense_kernels_map_to_linear():
    with pytest.raises(ValueError, match=r"block.kernel: only 2-D Dense kernels.*\(2, 3, 4\)"):
        jaxrnn.params_to_state_dict({"block": {"kernel": np.zeros((2, 3, 4))}})


def test_import_and_name_mapping_without_torch():
    """``import jaxrnn`` and the name mapping work with torch unavailable; to_torch says so."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import jax, jax.numpy as jnp, numpy as np
        import jaxrnn

        lstm = jaxrnn.LSTM(hidden_size=4)
        shapes = jax.eval_shape(lstm.init, jax.random.key(0), jnp.zeros((2, 1, 3)))["params"]
        params = {k: jnp.full(v.shape, 0.25, v.dtype) for k, v in shapes.items()}
        state = jaxrnn.params_to_state_dict({"lstm": params})
        assert sorted(state) == sorted("lstm." + k for k in params), state
        back = jaxrnn.state_dict_to_params(state, like={"lstm": params})
        assert all(np.array_equal(back["lstm"][k], params[k]) for k in params)
        try:
            jaxrnn.to_torch(lstm, {"params": params})
        except ImportError:
            pass
        else:
            raise AssertionError("to_torch worked without torch")
        assert sys.modules["torch"] is None
        print("ok without torch")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok without torch"


# ----------------------------------------------------------------------------- NNX targets


class NnxTagger(nnx.Module):
    """Embed (padding row 0) → LSTM → Linear under torch's attribute names."""

    def __init__(self, rngs):
        self.embedding = jaxrnn.nnx.Embed(V, F, padding_idx=0, rngs=rngs)
        self.rnn = jaxrnn.nnx.LSTM(F, H, rngs=rngs)
        self.fc = nnx.Linear(H, C, rngs=rngs)


def test_nnx_state_and_model_map_by_name():
    model = NnxTagger(nnx.Rngs(0))
    state = jaxrnn.params_to_state_dict(nnx.state(model, nnx.Param))
    assert state.keys() == jaxrnn.params_to_state_dict(model).keys()
    assert state["fc.weight"].shape == (C, H) and state["embedding.weight"].shape == (V, F)
    rng = np.random.default_rng(3)
    foreign = {k: rng.uniform(-1, 1, v.shape) for k, v in state.items()}
    foreign["embedding.weight"][0] = 0  # torch keeps its padding row at zero
    params = jaxrnn.state_dict_to_params(foreign, like=model)
    nnx.update(model, params)
    for k, v in jaxrnn.params_to_state_dict(model).items():
        np.testing.assert_array_equal(v, foreign[k].astype(np.float32), err_msg=k)


def test_padding_row_that_is_not_zero_warns_for_an_nnx_target():
    """A state_dict carries no padding_idx: it is the target's. A non-zero row where the target
    pads says the torch model padded elsewhere (or not at all); with linen params there is no
    module to ask, so nothing is said."""
    model = NnxTagger(nnx.Rngs(0))
    state = {k: np.array(v) for k, v in jaxrnn.params_to_state_dict(model).items()}
    state["embedding.weight"][0] = 0.5
    with pytest.warns(UserWarning, match=r"\['embedding.weight'\]\[0\] is not zero.*padding_idx=0"):
        jaxrnn.state_dict_to_params(state, like=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxrnn.state_dict_to_params(state, like=nnx.state(model, nnx.Param))  # no module


def test_to_torch_points_nnx_modules_to_jaxrnn_nnx():
    with pytest.raises(TypeError, match=r"NNX module: use jaxrnn.nnx.to_torch\(model\)"):
        jaxrnn.to_torch(jaxrnn.nnx.GRU(2, 3, rngs=nnx.Rngs(0)))
