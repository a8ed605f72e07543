"""The parts of the benchmark (``benchmarks/bench.py``) that can be wrong without torch: FLOP
counting and the layer swaps (the timing itself is measured, not asserted)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jaxrnn
from benchmarks import bench
from jaxrnn import layers
from jaxrnn.tasks import index_recall


def test_matmul_flops_counts_dots_times_scan_length():
    w = jnp.ones((5, 3))

    def f(h, xs):  # one [2,3]x[3,5] dot outside; two per step of a 7-step scan
        h, _ = jax.lax.scan(lambda c, x: ((c @ w) @ w.T + x, None), h @ w.T, xs)
        return h

    jaxpr = jax.make_jaxpr(f)(jnp.ones((2, 3)), jnp.ones((7, 2, 5)))
    assert bench.matmul_flops(jaxpr.jaxpr) == 2 * 2 * 3 * 5 + 7 * 2 * (2 * 2 * 5 * 3)


def test_matmul_flops_of_an_lstm_gradient():
    """Forward 2·T·B·(I+H)·4H. Backward, for the params only (x is a constant, so no dx):
    dW_ih 2·T·B·I·4H, and for W_hh both dW_hh and dh, 2 · 2·T·B·H·4H."""
    T, B, I, H = 6, 4, 3, 5
    lstm = jaxrnn.LSTM(hidden_size=H)
    x = jnp.ones((T, B, I))
    params = lstm.init(jax.random.key(0), x)
    grad = jax.grad(lambda p: jnp.sum(lstm.apply(p, x)[0]))
    forward = 2 * T * B * (I + H) * 4 * H
    backward = 2 * T * B * I * 4 * H + 2 * (2 * T * B * H * 4 * H)
    assert bench.matmul_flops(jax.make_jaxpr(grad)(params).jaxpr) == forward + backward


def test_flax_swap_is_undone_and_autodiff_swap_is_undone():
    with bench.flax_layers("index-recall") as swapped:
        assert swapped and index_recall.LSTM is bench.FlaxLSTMStack
    assert index_recall.LSTM is layers.LSTM
    with bench.autodiff_layers():
        assert layers.recurrent_scan is not jaxrnn.scan.recurrent_scan
    assert layers.recurrent_scan is jaxrnn.scan.recurrent_scan
    with bench.flax_layers("bitflip") as swapped:  # its own cell on masked_scan: nothing
        assert not swapped


@pytest.mark.parametrize("cls", [bench.FlaxStack, bench.FlaxLSTMStack])
def test_flax_stand_in_has_the_layer_contract(cls):
    """Same call and output shapes as jaxrnn's layers, so a task model runs on it."""
    ref = (jaxrnn.LSTM if cls is bench.FlaxLSTMStack else jaxrnn.RNN)(
        hidden_size=4, num_layers=2, batch_first=True
    )
    ours = cls(hidden_size=4, num_layers=2, batch_first=True)
    x = jnp.ones((3, 6, 2))
    lengths = jnp.array([6, 2, 4])
    want = jax.eval_shape(lambda: ref.init_with_output(jax.random.key(0), x, lengths=lengths)[0])
    got = jax.eval_shape(lambda: ours.init_with_output(jax.random.key(0), x, lengths=lengths)[0])
    assert jax.tree.map(lambda a: a.shape, got) == jax.tree.map(lambda a: a.shape, want)
