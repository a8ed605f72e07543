"""An optional cuDNN backend for :class:`jaxrnn.LSTM` on NVIDIA GPUs.

``jaxrnn.LSTM(..., backend="cudnn")`` (or ``"auto"``) runs the whole layer stack as one
cuDNN call through ``jax.experimental.rnn.lstm``, forward and backward, instead of one
``lax.scan`` per layer and direction. The parameters stay torch's ``state_dict``
(``weight_ih_l0``, …); :func:`pack_weights` lays them out as the flat vector cuDNN reads —
both use the gate order ``i, f, g, o``, so no gate is moved.

What cuDNN covers: float32 LSTMs with both biases, any ``num_layers``, bidirectional,
``lengths`` (packed semantics, as the scan). Not covered, and refused with ``"cudnn"``
(``"auto"`` falls back to the scan): ``proj_size``, ``bias=False``, dropout between layers
while training (cuDNN draws its own masks), other dtypes, and any machine without a CUDA
GPU. Matmul precision follows ``jax_default_matmul_precision`` as XLA's does: set it to
``"highest"`` to keep TF32 out of float32 results (the parity tolerances need that).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

BACKENDS = ("scan", "cudnn", "auto")


def available() -> bool:
    """True where ``jax.experimental.rnn`` can run: a CUDA GPU and jaxlib's cuDNN RNN."""
    try:
        from jax.experimental import rnn
    except ImportError:  # pragma: no cover - every supported jax has the module
        return False
    return rnn.gpu_rnn is not None and jax.default_backend() == "gpu"


def unsupported(
    *, proj_size: int, bias: bool, dropout: float, deterministic: bool, dtype
) -> str | None:
    """Why a layer configuration cannot run on cuDNN (``None`` if it can)."""
    if proj_size:
        return f"proj_size={proj_size} (cuDNN's LSTM has no projection here)"
    if not bias:
        return "bias=False (jax.experimental.rnn has both biases only)"
    if dropout > 0 and not deterministic:
        return f"dropout={dropout} while training (cuDNN would draw its own masks)"
    if jnp.dtype(dtype) != jnp.float32:
        return f"dtype {jnp.dtype(dtype)} (float32 only)"
    return None


def suffixes(num_layers: int, bidirectional: bool) -> list[str]:
    """Parameter suffixes in cuDNN's pseudo-layer order: layer 0 forward, reverse, layer 1 …"""
    directions = ("", "_reverse") if bidirectional else ("",)
    return [f"_l{layer}{d}" for layer in range(num_layers) for d in directions]


def pack_weights(params: dict, *, num_layers: int, bidirectional: bool) -> Array:
    """torch-named LSTM parameters → cuDNN's flat weight vector ``[N]``.

    The layout (``jax.experimental.rnn``'s docstring): every pseudo-layer's ``W_ih, W_hh``
    (row-major, torch's ``[4H, in]`` as is), then every pseudo-layer's ``b_ih, b_hh``.
    """
    names = suffixes(num_layers, bidirectional)
    weights = [params[kind + s].ravel() for s in names for kind in ("weight_ih", "weight_hh")]
    biases = [params[kind + s] for s in names for kind in ("bias_ih", "bias_hh")]
    return jnp.concatenate(weights + biases)


def lstm(
    params: dict,
    x: Array,
    h0: Array,
    c0: Array,
    lengths: Array,
    *,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
):
    """The LSTM stack on cuDNN.

    Args:
      params: torch-named parameters (a ``jaxrnn.LSTM``'s).
      x: ``[B, T, I]`` batch-first, as cuDNN takes it.
      h0, c0: ``[L·D, B, H]``.
      lengths: ``[B]`` valid steps per sequence.

    Returns ``(y [B, T, D·H], h_n [L·D, B, H], c_n [L·D, B, H])``.
    """
    from jax.experimental import rnn

    w = pack_weights(params, num_layers=num_layers, bidirectional=bidirectional)
    return rnn.lstm(
        x,
        h0,
        c0,
        w,
        lengths.astype(jnp.int32),
        input_size=x.shape[-1],
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=0.0,
        bidirectional=bidirectional,
    )
