"""Recurrent layers with ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` semantics, on ``lax.scan``.

Notation used in every shape:

    T  time steps           B  batch               I  input features
    H  hidden size          P  LSTM proj_size      L  num_layers
    D  directions (1 or 2)  G  gates (RNN 1, GRU 3, LSTM 4)

``variables["params"]`` of a layer is flat and holds exactly the keys and shapes of the torch
module's ``state_dict()`` (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``, …), so a
state_dict copies over one to one (see ``jaxrnn.interop``).

One copy of the math: :func:`run_stack` is the whole layer stack as a pure function of a
:class:`Stack` (torch's constructor arguments), a flat ``{torch_name: array}`` params dict and
the inputs. The linen layers here only create the parameters and call it; so do the NNX layers
(``jaxrnn.nnx``).

Per layer and direction the input projection ``gx = x @ W_ihᵀ + b_ih`` is one matmul over all
time steps (``[T·B, I] @ [I, G·H]``) before the scan; only ``h @ W_hhᵀ`` runs inside it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
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


def _time_major(x, batch_first: bool) -> tuple[Array, bool]:
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


def validate_lengths(lengths, time: int, batch: int | None, batch_first: bool | None = None):
    """Check ``lengths`` (``[B]`` ints, 1 ≤ length ≤ T) and return it as a jax array.

    Shape and dtype are checked always. Values are checked when they are concrete (not under
    ``jit``); under ``jit`` a sequence whose length is out of range gets NaN outputs and
    states instead (see :func:`nan_where_invalid`), never a silent clamp. ``batch_first``
    (when known) lets a wrong size that matches ``T`` hint at the layout of ``x``.
    """
    if not hasattr(lengths, "shape"):
        lengths = np.asarray(lengths)
    expected = "[]" if batch is None else f"[{batch}] (one per sequence)"
    want_shape = () if batch is None else (batch,)
    if tuple(lengths.shape) != want_shape:
        hint = ""
        if batch_first is not None and batch is not None and tuple(lengths.shape) == (time,):
            layout = "[batch, time, ...]" if batch_first else "[time, batch, ...]"
            hint = (
                f"; lengths has one entry per time step (T = {time}): x is read as {layout} "
                f"with batch_first={batch_first} — is batch_first={not batch_first} meant?"
            )
        raise ValueError(f"lengths must have shape {expected}, got {tuple(lengths.shape)}{hint}")
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


def length_masks(lengths, time: int, batch: int, batched: bool, batch_first: bool):
    """``lengths`` → ``(lengths [B], mask [T, B], valid [B] | None)``, all ``None`` without
    lengths. ``valid`` is set only for traced lengths (concrete ones were checked)."""
    if lengths is None:
        return None, None, None
    lengths = validate_lengths(lengths, time, batch if batched else None, batch_first)
    lengths = lengths.reshape(batch)
    valid = None if _is_concrete(lengths) else (lengths >= 1) & (lengths <= time)
    return lengths, length_mask(lengths, time), valid


def nan_where_invalid(valid, tree, batch_axis: int):
    """Every leaf of ``tree`` NaN for the sequences whose traced length is out of range
    (``valid [B]`` false): loud, never a silent clamp. ``valid=None``: ``tree`` as is."""
    if valid is None:
        return tree

    def where(a):
        shape = [1] * a.ndim
        shape[batch_axis] = a.shape[batch_axis]
        return jnp.where(valid.reshape(shape), a, jnp.nan)

    return jax.tree.map(where, tree)


# ----------------------------------------------------------------------------- the stack


@dataclasses.dataclass(frozen=True)
class Stack:
    """What a layer stack computes, without its parameters: torch's constructor arguments
    (``input_size`` optional: checked when given) plus jaxrnn's (``unroll``,
    ``fused_backward``, ``dtype``, ``backend``; see :class:`RNNBase`). ``kind`` is a key of
    :data:`jaxrnn.cells.KINDS`."""

    kind: str
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    proj_size: int = 0
    input_size: int | None = None
    unroll: int = 1
    fused_backward: bool = True
    dtype: Any = None
    backend: str = "scan"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """Width of ``h`` and of each direction's output: ``P`` with a projection, else ``H``."""
        return self.proj_size or self.hidden_size

    @property
    def gates(self) -> int:
        return cells.KINDS[self.kind].gates

    def check(self) -> Stack:
        """Refuse a configuration torch would refuse, naming the field; returns ``self``."""
        for field, value in (("hidden_size", self.hidden_size), ("num_layers", self.num_layers)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if self.input_size is not None and (not _is_int(self.input_size) or self.input_size < 0):
            raise ValueError(f"input_size must be None or an int >= 0, got {self.input_size!r}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {self.dropout}")
        if not isinstance(self.unroll, (bool, int, np.integer)) or self.unroll < 1:
            raise ValueError(f"unroll must be an int >= 1 (or True), got {self.unroll!r}")
        P, H = self.proj_size, self.hidden_size
        if not _is_int(P) or P < 0 or (P and (P >= H or self.kind != "lstm")):
            raise ValueError(
                f"proj_size must be 0 or 0 < proj_size < hidden_size = {H}, got {P}"
                + ("" if self.kind == "lstm" or not P else " (LSTM only)")
            )
        if self.backend not in cudnn.BACKENDS or (self.backend != "scan" and self.kind != "lstm"):
            raise ValueError(f"backend must be one of {cudnn.BACKENDS}, got {self.backend!r}")
        return self

    def suffixes(self) -> list[tuple[int, str]]:
        """``(layer, suffix)`` of every direction in torch's order: ``_l0``, ``_l0_reverse``, …"""
        directions = ("", "_reverse")[: self.num_directions]
        return [(layer, f"_l{layer}{d}") for layer in range(self.num_layers) for d in directions]

    def parameters(self, input_size: int) -> dict[str, tuple[int, ...]]:
        """Every parameter in torch's state_dict order: name → torch shape."""
        shapes = {}
        for layer, suffix in self.suffixes():
            size = input_size if layer == 0 else self.num_directions * self.out_size
            one = cells.weight_shapes(
                input_size=size,
                hidden_size=self.hidden_size,
                gates=self.gates,
                bias=self.bias,
                proj_size=self.proj_size,
            )
            shapes |= {name + suffix: shape for name, shape in one.items()}
        return shapes

    def input_features(self, x) -> int:
        """``I`` of ``x``, after checking its rank, dtype, time steps and ``input_size``."""
        I = _time_major(x, self.batch_first)[0].shape[-1]
        if self.input_size is not None and I != self.input_size:
            raise ValueError(f"x has {I} features, but input_size={self.input_size}")
        return I

    def state_shapes(self, batch: tuple[int, ...]) -> list[tuple[int, ...]]:
        """``hx``'s arrays: ``h [L·D, *batch, P or H]``, then LSTM's ``c [L·D, *batch, H]``."""
        LD = self.num_layers * self.num_directions
        others = cells.KINDS[self.kind].states - 1
        return [(LD, *batch, self.out_size)] + [(LD, *batch, self.hidden_size)] * others

    def hx_doc(self) -> str:
        if self.kind == "lstm":
            return "a pair (h_0 [L·D, B, H or P], c_0 [L·D, B, H])"
        return "one array [L·D, B, H]"

    def use_cudnn(self, dtype, deterministic: bool) -> bool:
        """Whether the stack runs as one cuDNN call (``backend``, LSTM only)."""
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


def initial_state(stack: Stack, input_shape: tuple[int, ...], dtype) -> Array | tuple:
    """Zeros shaped like ``hx`` for inputs of ``input_shape`` (``x.shape``: ``[T, B, I]``,
    ``[B, T, I]`` with ``batch_first``, or ``[T, I]``): ``h``, or LSTM's ``(h, c)``."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"input_shape must be x's shape (2-D or 3-D), got {input_shape}")
    batch = () if len(input_shape) == 2 else (input_shape[0 if stack.batch_first else 1],)
    states = tuple(jnp.zeros(s, dtype) for s in stack.state_shapes(batch))
    return states if len(states) > 1 else states[0]


def check_params(stack: Stack, params: Mapping, input_size: int) -> None:
    """Every parameter of ``stack`` present with torch's shape; a layer's input width that
    does not fit its ``weight_ih`` is named (``x`` or the input of layer k)."""
    expected = stack.parameters(input_size)
    missing = [k for k in expected if k not in params]
    if missing:
        raise KeyError(f"params lack {missing}; this {stack.kind} needs {list(expected)}")
    for name, shape in expected.items():
        got = tuple(params[name].shape)
        if got == shape:
            continue
        if name.startswith("weight_ih") and got[0] == shape[0] and len(got) == 2:
            layer = int(name.removeprefix("weight_ih_l").split("_")[0])
            what = "x" if layer == 0 else f"the input of layer {layer}"
            raise ValueError(f"{what} has {shape[1]} features, but {name} expects {got[1]}")
        raise ValueError(f"params[{name!r}] has shape {got}, but this {stack.kind} needs {shape}")


def run_stack(
    stack: Stack,
    params: Mapping[str, Array],
    x,
    hx=None,
    *,
    lengths=None,
    dropout: Callable[[Array], Array] | None = None,
):
    """The layer stack of ``stack`` as a pure function: torch.nn.RNN / LSTM / GRU's forward.

    Args:
      stack: the configuration (:class:`Stack`).
      params: ``{torch_name: array}``, torch's state_dict keys and shapes.
      x, hx, lengths: as :meth:`RNNBase.__call__`.
      dropout: applied to every layer's output except the last (``None``: no dropout, as
        in evaluation), e.g. a ``flax.linen.Dropout`` or ``flax.nnx.Dropout`` call.

    Returns:
      ``(output, h_n)`` as :meth:`RNNBase.__call__`.
    """
    stack.check()
    I = stack.input_features(x)
    check_params(stack, params, I)
    x, batched = _time_major(x, stack.batch_first)  # [T, B, I]
    T, B, _ = x.shape
    dtype = stack.dtype or x.dtype
    x = x.astype(dtype)
    lengths, mask, valid = length_masks(lengths, T, B, batched, stack.batch_first)
    carries = _initial_carries(stack, hx, B, dtype, batched)
    if stack.use_cudnn(dtype, deterministic=dropout is None):
        out, h_n = _cudnn_stack(stack, params, x, carries, lengths)
    else:
        out, h_n = _scan_stack(stack, params, x, carries, mask, dtype, dropout)
    out, h_n = nan_where_invalid(valid, out, 1), nan_where_invalid(valid, h_n, 1)
    if not batched:
        return out[:, 0], jax.tree.map(lambda a: a[:, 0], h_n)
    return (jnp.swapaxes(out, 0, 1) if stack.batch_first else out), h_n


def _scan_stack(stack: Stack, params, x: Array, carries: list, mask, dtype, dropout):
    """Every layer and direction as a scan: ``(output [T, B, D·H], h_n [L·D, B, H])``."""
    layer_input, finals, outputs = x, [], []
    for i, (layer, suffix) in enumerate(stack.suffixes()):
        w = cells.CellWeights(*(params.get(n + suffix) for n in cells.WEIGHT_NAMES))
        w = jax.tree.map(lambda a: a.astype(dtype), w)
        gx = cells.affine(layer_input, w.weight_ih, w.bias_ih)  # [T, B, G·H]
        reverse = suffix.endswith("_reverse")
        carry, out = _scan(stack, w, carries[i], gx, mask, reverse=reverse)
        outputs.append(out)
        finals.append(carry)
        if len(outputs) == stack.num_directions:  # the layer is done
            layer_input = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
            outputs = []
            if dropout is not None and layer < stack.num_layers - 1:
                layer_input = dropout(layer_input)
    h_n = jax.tree.map(lambda *c: jnp.stack(c), *finals)  # [L·D, B, H] (each of (h, c))
    return layer_input, h_n  # [T, B, D·H]


def _scan(stack: Stack, w: cells.CellWeights, carry, gx: Array, mask, *, reverse: bool):
    """One direction of one layer over time: ``(final carry, outputs [T, B, H])``."""
    kind = cells.KINDS[stack.kind]
    if stack.fused_backward and w.weight_hr is None:
        return recurrent_scan(
            kind.vjp, carry, gx, w.weight_hh, w.bias_hh, mask, reverse=reverse, unroll=stack.unroll
        )
    step = functools.partial(kind.step, w=w)
    return masked_scan(step, carry, gx, mask, reverse=reverse, unroll=stack.unroll)


def _cudnn_stack(stack: Stack, params, x: Array, carries: list, lengths):
    """The whole LSTM stack as one cuDNN call (see :mod:`jaxrnn.cudnn`)."""
    T, B, _ = x.shape
    names = [n + s for _, s in stack.suffixes() for n in cells.WEIGHT_NAMES[:4]]
    weights = {k: params[k].astype(x.dtype) for k in names}
    h0, c0 = (jnp.stack(s) for s in zip(*carries))  # [L·D, B, H] each
    if lengths is None:
        lengths = jnp.full((B,), T, jnp.int32)
    y, h_n, c_n = cudnn.lstm(
        weights,
        jnp.swapaxes(x, 0, 1),
        h0,
        c0,
        lengths,
        hidden_size=stack.hidden_size,
        num_layers=stack.num_layers,
        bidirectional=stack.bidirectional,
    )
    return jnp.swapaxes(y, 0, 1), (h_n, c_n)


def _initial_carries(stack: Stack, hx, batch: int, dtype, batched: bool) -> list:
    """hx → one carry per (layer, direction), each ``[B, H]`` (LSTM: ``(h, c)``)."""
    shapes = stack.state_shapes((batch,))  # one [L·D, B, size] per state array
    if hx is None:
        states = [jnp.zeros(s, dtype) for s in shapes]
    else:
        parts = hx if isinstance(hx, (tuple, list)) else (hx,)
        names = ("hx[0] (h_0)", "hx[1] (c_0)") if len(shapes) == 2 else ("hx",)
        if len(parts) != len(shapes):
            raise ValueError(f"hx must be {stack.hx_doc()}, got {len(parts)} arrays")
        states = [
            _check_state(p, s, n, batched, dtype, stack.dtype)
            for p, s, n in zip(parts, shapes, names)
        ]
    LD = shapes[0][0]
    carries = [tuple(s[i] for s in states) for i in range(LD)]
    return [c if len(c) > 1 else c[0] for c in carries]


def _check_state(state, shape, name: str, batched: bool, dtype, dtype_field):
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
        why = f"dtype={jnp.dtype(dtype).name}" if dtype_field else "x's dtype, as dtype=None"
        raise TypeError(
            f"{name} has dtype {state.dtype}, but the input is {jnp.dtype(dtype).name}: the "
            f"layer computes in {jnp.dtype(dtype).name} ({why}); pass hx in that dtype"
        )
    return state if batched else state[:, None]


# ----------------------------------------------------------------------------- linen layers


class RNNBase(cells.KeywordsOnly, nn.Module, kw_only=True):
    """Shared body of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    Fields carry torch.nn's constructor names (keyword-only: torch's positional order starts
    with ``input_size``, which is inferred here; ``jaxrnn.nnx`` has the positional form).
    ``input_size``, when given, is checked against the input. ``unroll`` is passed to
    ``lax.scan``. ``dtype`` is the computation dtype (``None``: the input's), ``param_dtype``
    the parameters'. ``fused_backward`` runs the time loop with
    :func:`jaxrnn.scan.recurrent_scan`, whose hand-written backward computes the ``W_hh``
    gradient as one matmul after the loop (same numbers, faster); under forward-mode autodiff
    it switches to plain autodiff by itself (see the README for the one case where it cannot).
    An LSTM with ``proj_size`` always uses plain autodiff.

    ``kernel_init``, ``recurrent_kernel_init``, ``bias_init``: Flax initializers for
    ``weight_ih``/``weight_hr``, ``weight_hh`` and the biases (``None``: torch's
    U(-1/√H, 1/√H), drawn exactly as before), see :class:`jaxrnn.cells.Inits`.

    The computation is :func:`run_stack`; this module creates the parameters (in torch's
    state_dict order) and calls it.
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
    kernel_init: Callable | None = None
    recurrent_kernel_init: Callable | None = None
    bias_init: Callable | None = None

    kind: ClassVar[str]  # a key of cells.KINDS: a class constant, or a property (RNN)
    proj_size = 0
    backend = "scan"
    forget_bias = None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def stack(self) -> Stack:
        """This layer's configuration, as :func:`run_stack` takes it."""
        return Stack(
            kind=self.kind,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            proj_size=self.proj_size,
            input_size=self.input_size,
            unroll=self.unroll,
            fused_backward=self.fused_backward,
            dtype=self.dtype,
            backend=self.backend,
        )

    @property
    def inits(self) -> cells.Inits:
        return cells.Inits(
            self.kernel_init, self.recurrent_kernel_init, self.bias_init, self.forget_bias
        )

    @nn.compact
    def __call__(self, x, hx=None, *, lengths=None, deterministic: bool = True):
        """Run the stack over ``x``, as ``torch.nn.RNN`` / ``LSTM`` / ``GRU``'s forward.

        Args:
          x: ``[T, B, I]``, ``[B, T, I]`` with ``batch_first``, or unbatched ``[T, I]``.
          hx: ``[L·D, B, H]`` (unbatched ``[L·D, H]``); for LSTM the pair ``(h_0, c_0)`` with
            h ``[L·D, B, P]`` when ``proj_size > 0``. Never batch-first. ``None``: zeros of
            the compute dtype (see :meth:`initialize_carry`).
          lengths: ``[B]`` ints in ``[1, T]``: packed-sequence semantics (outputs past a length
            are 0, ``h_n`` is the state at the last valid step, the reverse direction runs over
            the valid prefix only). Out of range: an error, or NaN for that sequence under jit.
          deterministic: disables the dropout between layers; with ``dropout > 0`` and
            ``deterministic=False`` a ``"dropout"`` rng is needed.

        Returns:
          ``(output, h_n)``: output ``[T, B, D·H]`` (``[B, T, D·H]`` with ``batch_first``,
          ``D·P`` with a projection, ``[T, D·H]`` unbatched), zero past each length; ``h_n``
          shaped like ``hx`` (LSTM: ``(h_n, c_n)``).
        """
        stack = self.stack.check()
        self.inits.check(kind=stack.kind, bias=stack.bias)
        params = self._params(stack, stack.input_features(x))
        dropout = None
        if not deterministic and stack.dropout > 0 and stack.num_layers > 1:
            dropout = functools.partial(nn.Dropout(stack.dropout), deterministic=False)
        return run_stack(stack, params, x, hx, lengths=lengths, dropout=dropout)

    def _params(self, stack: Stack, input_size: int) -> dict[str, Array]:
        """Create (or fetch) every parameter, in torch's state_dict order."""
        existing = self.variables.get("params", {})
        if existing:  # a clearer error than Flax's own shape check
            check_params(stack, existing, input_size)
        return {
            name: self.param(
                name,
                self.inits.of(name.split("_l")[0], stack.hidden_size, stack.gates),
                shape,
                self.param_dtype,
            )
            for name, shape in stack.parameters(input_size).items()
        }

    @nn.nowrap
    def initialize_carry(self, key, input_shape: tuple[int, ...]):
        """Zeros shaped like ``hx`` for ``x`` of shape ``input_shape`` (``key`` unused, kept for
        Flax's API), in the compute dtype (``dtype``, else ``param_dtype``): ``[L·D, B, H]``
        (unbatched ``[L·D, H]``), for LSTM ``(h, c)`` with ``h`` ``P`` wide when projected."""
        del key
        return initial_state(self.stack, tuple(input_shape), self.dtype or self.param_dtype)


class RNN(RNNBase, kw_only=True):
    """Elman RNN, as ``torch.nn.RNN``: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``nonlinearity`` is ``"tanh"`` or ``"relu"``. See :meth:`RNNBase.__call__` for the call.
    """

    nonlinearity: str = "tanh"
    nnx_call = "RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', ..., rngs=...)"

    @property
    def kind(self) -> str:
        return cells.elman_kind(self.nonlinearity)


class GRU(RNNBase, kw_only=True):
    """GRU, as ``torch.nn.GRU`` (gates ``r, z, n``; see :func:`jaxrnn.cells.gru_core`).

    See :meth:`RNNBase.__call__` for the call.
    """

    kind = "gru"
    nnx_call = "GRU(input_size, hidden_size, num_layers=1, ..., rngs=...)"


class LSTM(RNNBase, kw_only=True):
    """LSTM, as ``torch.nn.LSTM`` (gates ``i, f, g, o``; see :func:`jaxrnn.cells.lstm_core`).

    ``hx`` and ``h_n`` are pairs ``(h, c)``. With ``0 < proj_size < hidden_size`` the hidden
    state is projected by ``weight_hr_l{k}: [P, H]``: ``h`` is ``[.., P]``, ``c`` is
    ``[.., H]``, and the output is ``D·P`` wide. ``forget_bias`` is added to the forget gate's
    block of every ``bias_hh`` at init (see :class:`jaxrnn.cells.Inits`).

    ``backend``: ``"scan"`` (default) runs every layer and direction as a ``lax.scan``;
    ``"cudnn"`` runs the whole stack as one cuDNN call on an NVIDIA GPU (:mod:`jaxrnn.cudnn`:
    float32, both biases, no projection, no dropout while training) and refuses anything
    else with the reason; ``"auto"`` takes cuDNN where it can and the scan elsewhere.
    See :meth:`RNNBase.__call__` for the call.
    """

    proj_size: int = 0
    backend: str = "scan"
    forget_bias: float | None = None
    kind = "lstm"
    nnx_call = "LSTM(input_size, hidden_size, num_layers=1, ..., proj_size=0, *, rngs)"


class LinearRNN(cells.KeywordsOnly, nn.Module, kw_only=True):
    """The seeds' linear recurrence, no nonlinearity::

        h_t = W_hh h_{t-1} + b_hh + W_ih x_t + b_ih

    Parameters ``weight_ih [H, I]``, ``weight_hh [H, H]``, ``bias_ih``, ``bias_hh`` (torch
    layouts), and with ``learn_initial_state`` a learnable ``h0 [H]`` initialised as the seed
    does (``N(0, 0.01²)``); otherwise ``h_{-1}`` is ``hx`` or zeros.

    ``associative=True`` computes the same states with ``lax.associative_scan`` (O(log T)
    depth; work O(T H³), so for small H and long T).

    ``__call__(x, hx=None) -> (states, h_n)`` with x ``[T, B, I]`` (``[B, T, I]`` with
    ``batch_first``) or ``[T, I]``; hx ``[B, H]`` (``[H]`` unbatched); states like x with
    ``H`` features; h_n ``[B, H]``. ``kernel_init``, ``recurrent_kernel_init``, ``bias_init``:
    as :class:`RNNBase`'s.
    """

    hidden_size: int
    bias: bool = True
    batch_first: bool = False
    learn_initial_state: bool = False
    associative: bool = False
    unroll: int = 1
    param_dtype: Any = jnp.float32
    kernel_init: Callable | None = None
    recurrent_kernel_init: Callable | None = None
    bias_init: Callable | None = None

    @nn.compact
    def __call__(self, x, hx=None):
        """All the states of the recurrence over ``x``.

        Args:
          x: ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``) or unbatched ``[T, I]``.
          hx: ``[B, H]`` (unbatched ``[H]``), the state before the first step; ``None``: the
            learnable ``h0`` with ``learn_initial_state``, else zeros.

        Returns:
          ``(states, h_n)``: states shaped like x with ``H`` features, ``h_n [B, H]``.
        """
        x, batched = _time_major(x, self.batch_first)  # [T, B, I]
        T, B, I = x.shape
        w = cells.make_weights(
            self,
            input_size=I,
            hidden_size=self.hidden_size,
            gates=1,
            bias=self.bias,
            param_dtype=self.param_dtype,
            inits=cells.Inits(self.kernel_init, self.recurrent_kernel_init, self.bias_init),
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

    @nn.nowrap
    def initialize_carry(self, key, input_shape: tuple[int, ...]):
        """Zeros shaped like ``hx`` for ``x`` of shape ``input_shape``: ``[B, H]`` (unbatched
        ``[H]``), in ``param_dtype`` (``key`` unused, kept for Flax's API)."""
        del key
        batch = () if len(input_shape) == 2 else (input_shape[0 if self.batch_first else 1],)
        return jnp.zeros((*batch, self.hidden_size), self.param_dtype)


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
        """Create (or fetch) the parameters for inputs of ``in_features``.

        Returns:
          ``(kernel [in_features, features], bias [features] | None)``.
        """
        init = cells.torch_uniform(1.0 / np.sqrt(in_features))
        kernel = self.param("kernel", init, (in_features, self.features), self.param_dtype)
        bias = (
            self.param("bias", init, (self.features,), self.param_dtype) if self.use_bias else None
        )
        return kernel, bias
