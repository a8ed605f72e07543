"""The ``bitflip`` (seed 002) and ``sinusoid`` (seed 003) tasks: data, models, training."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.engine import make_steps
from jaxrnn.interop import params_to_state_dict
from jaxrnn.runs import fit
from jaxrnn.tasks import bitflip, sinusoid

TINY_BITFLIP = bitflip.BitFlipConfig(n_bits=6, embedding_dim=8, epochs=3)
TINY_SINUSOID = sinusoid.SinusoidConfig(
    n_time_steps=30, n_train=64, n_test=16, epochs=4, batch_size=8, observe=5
)


# ----------------------------------------------------------------------------- bitflip


@pytest.mark.parametrize(
    "n, n_bits, bits, flipped",
    [
        (0, 8, "00000000", 255),
        (5, 8, "00000101", 250),
        (200, 8, "11001000", 55),
        (255, 8, "11111111", 0),
        (6, 3, "110", 1),
    ],
)
def test_bitflip_data_hand_checked(n, n_bits, bits, flipped):
    assert "".join(map(str, bitflip.to_bits([n], n_bits)[0])) == bits  # most significant first
    assert bitflip.flip([n], n_bits)[0] == flipped
    assert bitflip.from_bits(bitflip.to_bits([n], n_bits))[0] == n


def test_bitflip_dataset_targets_and_held_out_split():
    config = bitflip.BitFlipConfig(n_bits=8)
    data = bitflip.BitFlip().data(config, np.random.default_rng(0))
    train, test = (bitflip.from_bits(data[s]["x"]) for s in ("train", "test"))
    assert len(test) == 64 and len(train) == 192
    assert not set(train) & set(test), "held-out integers leak into training"
    for split in data.values():
        np.testing.assert_array_equal(split["y"], 1 - split["x"])
        ints = bitflip.from_bits(split["x"])
        np.testing.assert_array_equal(bitflip.from_bits(split["y"]), (~ints) & 255)
    with pytest.raises(ValueError, match="ints must be in"):
        bitflip.to_bits([256], 8)


def _seed_bitflip_numpy(state_dict, ids, concat):
    """The seed's Model.forward as a Python loop over torch-layout weights, in float64."""
    sd = {k: np.asarray(v, np.float64) for k, v in state_dict.items()}
    W, b = sd["rnn_cell.i2h.linear_layer.weight"], sd["rnn_cell.i2h.linear_layer.bias"]
    V, c = sd["rnn_cell.h2o.linear_layer.weight"], sd["rnn_cell.h2o.linear_layer.bias"]
    join = (lambda x, h: np.concatenate([x, h], 1)) if concat else (lambda x, h: x + h)
    emb = sd["embedding.weight"][ids]  # [B, T, d]
    h = np.zeros((ids.shape[0], emb.shape[-1]))
    outputs = []
    for t in range(ids.shape[1]):
        h = np.tanh(join(emb[:, t], h) @ W.T + b)  # i2h
        outputs.append(np.tanh(join(emb[:, t], h) @ V.T + c))  # h2o
    return np.stack(outputs, 1)


@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_bitflip_model_matches_seed_loop_and_torch_names(mode):
    d = 5
    model = bitflip.Model(x_dim=d, concat_layers=mode == "concat")
    ids = bitflip.to_bits(np.array([3, 77, 250]), 8)
    params = model.init(jax.random.key(1), ids)["params"]
    state_dict = params_to_state_dict(params)
    in_dim = 2 * d if mode == "concat" else d
    assert {k: v.shape for k, v in state_dict.items()} == {
        "embedding.weight": (2, d),
        "rnn_cell.i2h.linear_layer.weight": (d, in_dim),
        "rnn_cell.i2h.linear_layer.bias": (d,),
        "rnn_cell.h2o.linear_layer.weight": (2, in_dim),
        "rnn_cell.h2o.linear_layer.bias": (2,),
    }
    outputs, hidden_states = jax.jit(model.apply)({"params": params}, ids)
    assert outputs.shape == (3, 8, 2) and hidden_states.shape == (3, 8, d)
    want = _seed_bitflip_numpy(state_dict, ids, mode == "concat")
    np.testing.assert_allclose(np.asarray(outputs), want, atol=1e-5)


def test_bitflip_trains_and_predicts():
    task = bitflip.BitFlip()
    result = fit(task, TINY_BITFLIP, seed=0, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0], losses
    assert set(result.final) >= {"test_bit_accuracy", "test_exact"}
    assert all(math.isfinite(v) for v in result.final.values()), result.final
    assert result.final["test_bit_accuracy"] > 0.9, result.final
    ints = np.array([0, 5, 42, 63])
    predicted = bitflip.predict(result.state.params, ints, TINY_BITFLIP)
    assert predicted.shape == (4,) and predicted.dtype.kind == "i"
    # the per-integer metric agrees with predict on the held-out integers
    test_ints = bitflip.from_bits(result.data["test"]["x"])
    exact = np.mean(
        bitflip.predict(result.state.params, test_ints, TINY_BITFLIP) == bitflip.flip(test_ints, 6)
    )
    assert exact == pytest.approx(result.final["test_exact"])


# ----------------------------------------------------------------------------- sinusoid


def test_generate_sin_matches_the_formula():
    rng = np.random.default_rng(0)
    x = sinusoid.generate_sin(rng, 3, (1.0, 0.5), n_time_steps=20, sample_frequency=0.1)
    phases = np.random.default_rng(0).random((3, 2)) * 2 * np.pi
    t = np.arange(20) * 0.1
    want = 0.5 * np.sin(2 * np.pi * t + phases[:, :1]) + 0.5 * np.sin(np.pi * t + phases[:, 1:])
    np.testing.assert_allclose(x, want, atol=1e-12)


def _seed_linrnn_numpy(state_dict, x):
    """The seed's LinRNN.forward (step in a Python loop), float64."""
    sd = {k: np.asarray(v, np.float64) for k, v in state_dict.items()}
    lin = lambda name, v: v @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]  # noqa: E731
    hidden, outputs = sd["initial_hidden_state"], []
    for t in range(x.shape[1]):
        hidden = lin("input_to_hidden", x[:, t]) + lin("hidden_to_hidden", hidden)
        outputs.append(lin("hidden_to_output", hidden))
    return np.stack(outputs, 1)


def test_linrnn_matches_seed_loop_and_associative_gives_the_same_loss():
    config = sinusoid.SinusoidConfig(n_hidden=3, n_time_steps=40)
    task = sinusoid.Sinusoid()
    data = task.data(config, np.random.default_rng(1))
    batch = {"x": data["test"]["x"][:8]}
    model = task.model(config)
    params = task.init(model, jax.random.key(2), batch)
    # random values for every parameter, the initial state and the biases included
    keys = iter(jax.random.split(jax.random.key(3), 10))
    params = jax.tree.map(lambda p: 0.4 * jax.random.normal(next(keys), p.shape), params)
    state_dict = params_to_state_dict(params)
    assert {k: v.shape for k, v in state_dict.items()} == {
        "input_to_hidden.weight": (3, 1),
        "input_to_hidden.bias": (3,),
        "hidden_to_hidden.weight": (3, 3),
        "hidden_to_hidden.bias": (3,),
        "hidden_to_output.weight": (1, 3),
        "hidden_to_output.bias": (1,),
        "initial_hidden_state": (3,),
    }
    y = jax.jit(model.apply)({"params": params}, batch["x"])
    np.testing.assert_allclose(
        np.asarray(y), _seed_linrnn_numpy(state_dict, batch["x"]), atol=1e-4, rtol=1e-4
    )
    assoc = task.model(config.replace(associative=True))

    def loss_and_grad(m):
        loss = lambda p: task.loss(m, p, batch, key=None, train=False)[0]  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    (loss_seq, grad_seq), (loss_assoc, grad_assoc) = loss_and_grad(model), loss_and_grad(assoc)
    assert abs(float(loss_seq) - float(loss_assoc)) <= 1e-5 * max(1.0, abs(float(loss_seq)))
    for a, b in zip(jax.tree.leaves(grad_seq), jax.tree.leaves(grad_assoc)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_sinusoid_trains_and_generates():
    task = sinusoid.Sinusoid()
    result = fit(task, TINY_SINUSOID, seed=0, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0], losses
    assert set(result.final) == {"test_mse", "generation_mse"}
    assert all(math.isfinite(v) for v in result.final.values()), result.final
    model, params, x = result.model, result.state.params, result.data["test"]["x"]
    y = sinusoid.generate(model, params, x, TINY_SINUSOID.observe)
    assert y.shape == (16, 29, 1)
    # while it observes, generation is the teacher-forced forward pass
    forward = model.apply({"params": params}, x[:, :-1])
    np.testing.assert_allclose(np.asarray(y[:, :5]), np.asarray(forward[:, :5]), atol=1e-6)
    # observing everything, it is the forward pass throughout
    all_seen = sinusoid.generate(model, params, x, x.shape[1] - 1)
    np.testing.assert_allclose(np.asarray(all_seen), np.asarray(forward), atol=1e-5)
    with pytest.raises(ValueError, match="observe must be in"):
        sinusoid.generate(model, params, x, 0)


def test_sinusoid_plot_writes_generation_png(tmp_path):
    task, config = sinusoid.Sinusoid(), TINY_SINUSOID
    data = task.data(config, np.random.default_rng(0))
    model = task.model(config)
    params = task.init(model, jax.random.key(0), task.init_batch(data, config))
    files = task.plot(make_steps(task, model), params, data, config, tmp_path)
    assert files == [str(tmp_path / "generation.png")]
    assert (tmp_path / "generation.png").stat().st_size > 0


def test_sinusoid_rejects_bad_config():
    task = sinusoid.Sinusoid()
    with pytest.raises(ValueError, match="observe"):
        task.data(TINY_SINUSOID.replace(observe=30), np.random.default_rng(0))
    with pytest.raises(ValueError, match="weights"):
        task.data(TINY_SINUSOID.replace(weights=(1.0,), freqs=(1.0, 2.0)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_input"):
        model = task.model(TINY_SINUSOID)
        model.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
