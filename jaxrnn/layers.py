"""Recurrent layers with ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` semantics, on ``lax.scan``.

Notation used in every shape:

    T  time steps           B  batch               I  input features
    H  hidden size          P  LSTM proj_size      L  num_layers
    D  directions (1 or 2)  G  gates (RNN 1, GRU 3, LSTM 4)

``variables["params"]`` of a layer is flat and holds exactly the keys and shapes of the torch
module's ``state_dict()`` (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, …), so a
state_dict copies over one to one (see ``jaxrnn.interop``).

Per layer and direction the input projection ``gx = x @ W_ihᵀ + b_ih`` is one matmul over all
time steps (``[T·B, I] @ [I, G·H]``) before the scan; only ``h @ W_hhᵀ`` runs inside it.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import cells, cudnn
from .scan import length_mask, linear_recurrence, masked_scan, recurrent_scan

Array = jax.Array


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _is_int(value) -> bool:
    """A Python or NumPy integer, not a bool (``True`` would silently mean 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate_x(x, name: str = "x") -> Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if x.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be [time, batch, features] ([batch, time, features] with "
            f"batch_first=True) or unbatched [time, features]; got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating array (embed token ids first, e.g. jaxrnn.Embed); "
            f"got dtype {x.dtype}"
        )
    return jnp.asarray(x)


def _time_major(x: Array, batch_first: bool) -> tuple[Array, bool]:
    """x → ``([T, B, I], batched)``; unbatched ``[T, I]`` gets a batch axis of 1."""
    x = _validate_x(x)
    batched = x.ndim == 3
    if not batched:
        x = x[:, None]
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    if x.shape[0] == 0:
        raise ValueError(f"x has 0 time steps (shape {tuple(x.shape)}); need T ≥ 1")
    return x, batched


def validate_lengths(lengths, time: int, batch: int | None) -> Array:
    """Check ``lengths`` (``[B]`` ints, 1 ≤ length ≤ T) and return it as a jax array.

    Shape and dtype are checked always. Values are checked when they are concrete (not under
    ``jit``); under ``jit`` a sequence whose length is out of range gets NaN outputs and
    states instead (see :class:`RNNBase`), never a silent clamp.
    """
    if not hasattr(lengths, "shape"):
        lengths = np.asarray(lengths)
    expected = "[]" if batch is None else f"[{batch}] (one per sequence)"
    want_shape = () if batch is None else (batch,)
    if tuple(lengths.shape) != want_shape:
        raise ValueError(f"lengths must have shape {expected}, got {tuple(lengths.shape)}")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if _is_concrete(lengths):
        values = np.asarray(lengths)
        bad = np.flatnonzero((values < 1) | (values > time))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"lengths must satisfy 1 <= length <= T = {time}; got lengths[{i}] = "
                f"{int(values.reshape(-1)[i])} ({bad.size} out of range)"
            )
    return jnp.asarray(lengths)


class RNNBase(nn.Module, kw_only=True):
    """Shared body of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    Fields carry torch.nn's constructor names (keyword-only: torch's positional order starts
    with ``input_size``, which is inferred here). ``input_size``, when given, is checked
    against the input. ``unroll`` is passed to ``lax.scan``. ``dtype`` is the computation
    dtype (``None``: the input's), ``param_dtype`` the parameters'. ``fused_backward`` runs
    the time loop with :func:`jaxrnn.scan.recurrent_scan`, whose hand-written backward
    computes the ``W_hh`` gradient as one matmul after the loop (same numbers, faster); set
    it ``False`` for forward-mode autodiff (``jax.jvp``, ``jax.hessian``), which a
    ``custom_vjp`` does not support. An LSTM with ``proj_size`` always uses plain autodiff.

    ``__call__(x, hx=None, *, lengths=None, deterministic=True) -> (output, h_n)``:

      x: ``[T, B, I]``, ``[B, T, I]`` with ``batch_first``, or unbatched ``[T, I]``.
      hx: ``[L·D, B, H]`` (unbatched ``[L·D, H]``), for LSTM ``(h_0, c_0)`` with h ``[L·D, B, P]``
        when ``proj_size > 0``. Never batch-first. Zeros of ``x.dtype`` when ``None``.
      lengths: ``[B]`` ints in ``[1, T]``: packed-sequence semantics (outputs past a length
        are 0, ``h_n`` is the state at the last valid step, the reverse direction runs over
        the valid prefix only).
      deterministic: disables the dropout between layers; with ``dropout > 0`` and
        ``deterministic=False`` a ``"dropout"`` rng is needed.

    Returns ``output: [T, B, D·H]`` (``[B, T, D·H]`` with ``batch_first``, ``D·P`` with a
    projection) and ``h_n`` shaped like ``hx``.
    """

    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    input_size: int | None = None
    unroll: int = 1
    fused_backward: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    kind: ClassVar[str]  # a key of cells.KINDS: a class constant, or a property (RNN)

    # -- structure ---------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _proj(self) -> int:
        return 0

    @property
    def _out_size(self) -> int:
        return self._proj or self.hidden_size

    def _check_config(self):
        for field, value in (("hidden_size", self.hidden_size), ("num_layers", self.num_layers)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if self.input_size is not None and (not _is_int(self.input_size) or self.input_size < 0):
            raise ValueError(f"input_size must be None or an int >= 0, got {self.input_size!r}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {self.dropout}")
        if not isinstance(self.unroll, (bool, int, np.integer)) or self.unroll < 1:
            raise ValueError(f"unroll must be an int >= 1 (or True), got {self.unroll!r}")

    # -- the layer ---------------------------------------------------------------------
    @nn.compact
    def __call__(self, x, hx=None, *, lengths=None, deterministic: bool = True):
        self._check_config()
        x, batched = _time_major(x, self.batch_first)  # [T, B, I]
        T, B, I = x.shape
        if self.input_size is not None and I != self.input_size:
            raise ValueError(f"x has {I} features, but input_size={self.input_size}")
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)

        mask = valid = None
        if lengths is not None:
            lengths = validate_lengths(lengths, T, B if batched else None).reshape(B)
            mask = length_mask(lengths, T)  # [T, B]
            if not _is_concrete(lengths):
                valid = (lengths >= 1) & (lengths <= T)  # [B], checked values are eager only
        carries = self._initial_carries(hx, B, dtype, batched)

        if self._use_cudnn(dtype, deterministic):
            out, h_n = self._cudnn_stack(x, carries, lengths)
        else:
            out, h_n = self._scan_stack(x, carries, mask, dtype, deterministic)
        if valid is not None:
            out = jnp.where(valid[None, :, None], out, jnp.nan)
            h_n = jax.tree.map(lambda a: jnp.where(valid[None, :, None], a, jnp.nan), h_n)
        if not batched:
            out = out[:, 0]
            h_n = jax.tree.map(lambda a: a[:, 0], h_n)
        elif self.batch_first:
            out = jnp.swapaxes(out, 0, 1)
        return out, h_n

    def _scan_stack(self, x: Array, carries: list, mask, dtype, deterministic: bool):
        """Every layer and direction as a scan: ``(output [T, B, D·H], h_n [L·D, B, H])``."""
        D = self.num_directions
        layer_input, finals = x, []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w = self._weights(suffix, layer_input.shape[-1])
                w = jax.tree.map(lambda a: a.astype(dtype), w)
                gx = cells.affine(layer_input, w.weight_ih, w.bias_ih)  # [T, B, G·H]
                carry, out = self._scan(
                    w, carries[layer * D + direction], gx, mask, reverse=bool(direction)
                )
                outputs.append(out)
                finals.append(carry)
            layer_input = jnp.concatenate(outputs, axis=-1) if D == 2 else outputs[0]
            if self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = nn.Dropout(self.dropout)(layer_input, deterministic=deterministic)

        h_n = jax.tree.map(lambda *c: jnp.stack(c), *finals)  # [L·D, B, H] (each of (h, c))
        return layer_input, h_n  # [T, B, D·H]

    def _use_cudnn(self, dtype, deterministic: bool) -> bool:
        """Whether the stack runs as one cuDNN call (only :class:`LSTM` has the backend)."""
        return False

    def _scan(self, w: cells.CellWeights, carry, gx: Array, mask, *, reverse: bool):
        """One direction of one layer over time: ``(final carry, outputs [T, B, H])``."""
        kind = cells.KINDS[self.kind]
        if self.fused_backward and w.weight_hr is None:
            return recurrent_scan(
                kind.vjp,
                carry,
                gx,
                w.weight_hh,
                w.bias_hh,
                mask,
                reverse=reverse,
                unroll=self.unroll,
            )
        step = functools.partial(kind.step, w=w)
        return masked_scan(step, carry, gx, mask, reverse=reverse, unroll=self.unroll)

    def _weights(self, suffix: str, input_size: int) -> cells.CellWeights:
        if self.has_variable("params", "weight_ih" + suffix):
            expected = self.get_variable("params", "weight_ih" + suffix).shape[1]
            if expected != input_size:
                what = "x" if suffix.startswith("_l0") else f"the input of layer {suffix[2:]}"
                raise ValueError(
                    f"{what} has {input_size} features, but weight_ih{suffix} expects {expected}"
                )
        return cells.make_weights(
            self,
            input_size=input_size,
            hidden_size=self.hidden_size,
            gates=cells.KINDS[self.kind].gates,
            bias=self.bias,
            proj_size=self._proj,
            suffix=suffix,
            param_dtype=self.param_dtype,
        )

    def _initial_carries(self, hx, batch: int, dtype, batched: bool) -> list:
        """hx → one carry per (layer, direction), each ``[B, H]`` (LSTM: ``(h, c)``)."""
        LD = self.num_layers * self.num_directions
        shapes = self._state_shapes(LD, batch)  # one [L·D, B, size] per state array
        if hx is None:
            states = [jnp.zeros(s, dtype) for s in shapes]
        else:
            parts = hx if isinstance(hx, (tuple, list)) else (hx,)
            names = ("hx[0] (h_0)", "hx[1] (c_0)") if len(shapes) == 2 else ("hx",)
            if len(parts) != len(shapes):
                raise ValueError(f"hx must be {self._hx_doc()}, got {len(parts)} arrays")
            states = [
                self._check_state(p, s, n, batched, dtype) for p, s, n in zip(parts, shapes, names)
            ]
        carries = [tuple(s[i] for s in states) for i in range(LD)]
        return [c if len(c) > 1 else c[0] for c in carries]

    def _state_shapes(self, LD: int, batch: int) -> list[tuple[int, ...]]:
        """``h`` (``P`` wide with a projection), then the kind's other states (LSTM's c)."""
        others = cells.KINDS[self.kind].states - 1
        return [(LD, batch, self._out_size)] + [(LD, batch, self.hidden_size)] * others

    def _hx_doc(self) -> str:
        return "one array [L·D, B, H]"

    @staticmethod
    def _check_state(state, shape, name: str, batched: bool, dtype):
        if not hasattr(state, "shape"):
            raise TypeError(f"{name} must be an array, got {type(state).__name__}")
        want = shape if batched else (shape[0], shape[2])
        if batched and state.ndim == 2:
            raise ValueError(f"{name} must be 3-D {want} for batched (3-D) x; got 2-D")
        if not batched and state.ndim == 3:
            raise ValueError(f"{name} must be 2-D {want} for unbatched (2-D) x; got 3-D")
        if tuple(state.shape) != want:
            raise ValueError(
                f"{name} must have shape {want} = [num_layers·num_directions, batch, size]"
                f"{'' if batched else ' without the batch axis'}; got {tuple(state.shape)}"
            )
        if state.dtype != dtype:
            raise TypeError(f"{name} has dtype {state.dtype}, but the input is {dtype}")
        return state if batched else state[:, None]


class RNN(RNNBase, kw_only=True):
    """Elman RNN, as ``torch.nn.RNN``: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``nonlinearity`` is ``"tanh"`` or ``"relu"``. See :class:`RNNBase` for the call.
    """

    nonlinearity: str = "tanh"

    @property
    def kind(self) -> str:
        return cells.elman_kind(self.nonlinearity)


class GRU(RNNBase, kw_only=True):
    """GRU, as ``torch.nn.GRU`` (gates ``r, z, n``; see :func:`jaxrnn.cells.gru_core`)."""

    kind = "gru"


class LSTM(RNNBase, kw_only=True):
    """LSTM, as ``torch.nn.LSTM`` (gates ``i, f, g, o``; see :func:`jaxrnn.cells.lstm_core`).

    ``hx`` and ``h_n`` are pairs ``(h, c)``. With ``0 < proj_size < hidden_size`` the hidden
    state is projected by ``weight_hr_l{k}: [P, H]``: ``h`` is ``[.., P]``, ``c`` is
    ``[.., H]``, and the output is ``D·P`` wide.

    ``backend``: ``"scan"`` (default) runs every layer and direction as a ``lax.scan``;
    ``"cudnn"`` runs the whole stack as one cuDNN call on an NVIDIA GPU (:mod:`jaxrnn.cudnn`:
    float32, both biases, no projection, no dropout while training) and refuses anything
    else with the reason; ``"auto"`` takes cuDNN where it can and the scan elsewhere.
    """

    proj_size: int = 0
    backend: str = "scan"
    kind = "lstm"

    @property
    def _proj(self) -> int:
        return self.proj_size

    def _check_config(self):
        super()._check_config()
        if (
            not _is_int(self.proj_size)
            or self.proj_size < 0
            or (self.proj_size and self.proj_size >= self.hidden_size)
        ):
            raise ValueError(
                f"proj_size must be 0 or 0 < proj_size < hidden_size = {self.hidden_size}, "
                f"got {self.proj_size}"
            )
        if self.backend not in cudnn.BACKENDS:
            raise ValueError(f"backend must be one of {cudnn.BACKENDS}, got {self.backend!r}")

    def _use_cudnn(self, dtype, deterministic: bool) -> bool:
        if self.backend == "scan":
            return False
        why_not = cudnn.unsupported(
            proj_size=self.proj_size,
            bias=self.bias,
            dropout=self.dropout if self.num_layers > 1 else 0.0,
            deterministic=deterministic,
            dtype=dtype,
        )
        if not cudnn.available():
            why_not = f"jax's backend is {jax.default_backend()!r}, cuDNN needs a CUDA GPU"
        if why_not and self.backend == "cudnn":
            raise ValueError(
                f"backend='cudnn' cannot run this LSTM: {why_not}; "
                "use backend='auto' to fall back to the scan"
            )
        return why_not is None

    def _cudnn_stack(self, x: Array, carries: list, lengths):
        """The whole stack as one cuDNN call (see :mod:`jaxrnn.cudnn`)."""
        T, B, I = x.shape
        D, H = self.num_directions, self.hidden_size
        params = {}
        for suffix in cudnn.suffixes(self.num_layers, self.bidirectional):
            w = self._weights(suffix, I if suffix.startswith("_l0") else D * H)
            params.update(
                {f"{k}{suffix}": v.astype(x.dtype) for k, v in w._asdict().items() if v is not None}
            )
        h0, c0 = (jnp.stack(s) for s in zip(*carries))  # [L·D, B, H] each
        if lengths is None:
            lengths = jnp.full((B,), T, jnp.int32)
        y, h_n, c_n = cudnn.lstm(
            params,
            jnp.swapaxes(x, 0, 1),
            h0,
            c0,
            lengths,
            hidden_size=H,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
        )
        return jnp.swapaxes(y, 0, 1), (h_n, c_n)

    def _hx_doc(self) -> str:
        return "a pair (h_0 [L·D, B, H or P], c_0 [L·D, B, H])"


class LinearRNN(nn.Module, kw_only=True):
    """The seeds' linear recurrence, no nonlinearity::

        h_t = W_hh h_{t-1} + b_hh + W_ih x_t + b_ih

    Parameters ``weight_ih [H, I]``, ``weight_hh [H, H]``, ``bias_ih``, ``bias_hh`` (torch
    layouts), and with ``learn_initial_state`` a learnable ``h0 [H]`` initialised as the seed
    does (``N(0, 0.01²)``); otherwise ``h_{-1}`` is ``hx`` or zeros.

    ``associative=True`` computes the same states with ``lax.associative_scan`` (O(log T)
    depth; work O(T H³), so for small H and long T).

    ``__call__(x, hx=None) -> (states, h_n)`` with x ``[T, B, I]`` (``[B, T, I]`` with
    ``batch_first``) or ``[T, I]``; hx ``[B, H]`` (``[H]`` unbatched); states like x with
    ``H`` features; h_n ``[B, H]``.
    """

    hidden_size: int
    bias: bool = True
    batch_first: bool = False
    learn_initial_state: bool = False
    associative: bool = False
    unroll: int = 1
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, hx=None):
        x, batched = _time_major(x, self.batch_first)  # [T, B, I]
        T, B, I = x.shape
        w = cells.make_weights(
            self,
            input_size=I,
            hidden_size=self.hidden_size,
            gates=1,
            bias=self.bias,
            param_dtype=self.param_dtype,
        )
        if self.learn_initial_state:
            init = nn.initializers.normal(0.01)
            h0 = self.param("h0", init, (self.hidden_size,), self.param_dtype)
            if hx is not None:
                raise ValueError("hx must be None when learn_initial_state=True")
        h0 = hx if hx is not None else (h0 if self.learn_initial_state else None)
        want = (B, self.hidden_size) if batched else (self.hidden_size,)
        if h0 is None:
            h0 = jnp.zeros(want, x.dtype)
        elif hx is not None and tuple(hx.shape) != want:
            raise ValueError(f"hx must have shape {want} = [batch, hidden]; got {hx.shape}")
        h0 = jnp.broadcast_to(h0, (B, self.hidden_size)).astype(x.dtype)

        u = cells.affine(x, w.weight_ih, w.bias_ih)  # [T, B, H]
        if w.bias_hh is not None:
            u = u + w.bias_hh
        states = linear_recurrence(
            w.weight_hh, u, h0, associative=self.associative, unroll=self.unroll
        )  # [T, B, H]
        h_n = states[-1]
        if not batched:
            return states[:, 0], h_n[0]
        return (jnp.swapaxes(states, 0, 1) if self.batch_first else states), h_n


class LinearWeights(nn.Module, kw_only=True):
    """The parameters of a ``torch.nn.Linear`` under Flax Dense names, returned as arrays.

    ``__call__(in_features) -> (kernel [in, out], bias [out] | None)``. For step functions
    that run inside a ``lax.scan`` (where a Flax submodule cannot be called): the seeds'
    custom cells are written this way, so their parameter paths (``hidden_to_hidden.kernel``)
    map to torch's (``hidden_to_hidden.weight``) like any Dense. Initialised as torch.nn.Linear:
    U(-1/√in, 1/√in) for the weight and the bias.
    """

    features: int
    use_bias: bool = True
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, in_features: int):
        init = cells.torch_uniform(1.0 / np.sqrt(in_features))
        kernel = self.param("kernel", init, (in_features, self.features), self.param_dtype)
        bias = (
            self.param("bias", init, (self.features,), self.param_dtype) if self.use_bias else None
        )
        return kernel, bias
