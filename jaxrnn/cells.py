"""One step of each recurrence, in PyTorch's conventions.

Every cell splits the way cuDNN and torch do:

    gx = x @ W_ihᵀ + b_ih      input projection: one matmul for all time steps, before the scan
    gh = h @ W_hhᵀ + b_hh      recurrent projection: the only matmul inside the scan

Each recurrence kind (``linear``, ``rnn_tanh``, ``rnn_relu``, ``lstm``, ``gru``) is one entry of
the table ``KINDS``: its gate count, its carry, its core (the elementwise equations, given both
projections) with a hand-written backward, and its torch names. ``Kind.step`` takes the carry
and a precomputed ``gx`` and returns the new carry; the layers in ``layers.py`` scan it.
The linen cells (``RNNCell``, ``LSTMCell``, ``GRUCell``, ``LinearCell``) create the parameters
under ``torch.nn.RNNCell``'s names and shapes and compute one step, ``(carry, x) -> (carry, y)``,
for step-by-step code such as sampling.

Gates are fused: LSTM ``W_ih`` is ``[4H, I]`` with blocks ``i, f, g, o``; GRU ``W_ih`` is
``[3H, I]`` with blocks ``r, z, n``, exactly as torch stores them. Two biases, as torch has
them: folding them into one keeps the forward pass but breaks training parity.

Shapes: ``B`` batch, ``I`` input features, ``H`` hidden size, ``P`` LSTM projection size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

NONLINEARITIES: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def affine(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """``x @ weightᵀ + bias`` with torch's weight layout ``[out, in]``; x: ``[..., in]``."""
    y = x @ weight.T
    return y if bias is None else y + bias


def torch_uniform(bound: float) -> Callable:
    """Initializer U(-bound, bound), torch's default for recurrent weights (bound = 1/√H)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


class CellWeights(NamedTuple):
    """One direction of one layer, torch names and layouts. ``G`` = number of gates."""

    weight_ih: Array  # [G·H, I]
    weight_hh: Array  # [G·H, H]  ([4H, P] with projection)
    bias_ih: Array | None = None  # [G·H]
    bias_hh: Array | None = None  # [G·H]
    weight_hr: Array | None = None  # [P, H], LSTM projection only


WEIGHT_NAMES = CellWeights._fields  # torch's state_dict order within one direction
FORGET = 1  # the forget gate's block in LSTM's gate order i, f, g, o


class Inits(NamedTuple):
    """How parameters start. ``None`` keeps torch's default, U(-1/√H, 1/√H), drawn exactly as
    before (same keys, same numbers).

    ``kernel`` (``weight_ih`` and ``weight_hr``), ``recurrent`` (``weight_hh``) and ``bias``
    (``bias_ih``, ``bias_hh``) are Flax initializers ``(key, shape, dtype) -> array``. A weight
    initializer is called in Flax's layout ``[in, out]`` once per gate block ``[in, H]`` (each
    with its own key; so ``nn.initializers.orthogonal()`` makes every gate's ``W_h*``
    orthogonal, as in ``flax.linen.LSTMCell``) and the blocks are transposed into torch's
    ``[G·H, in]``. A bias initializer gets the whole ``[G·H]``.

    ``forget_bias`` (LSTM only) is added to the forget-gate block ``f`` of ``bias_hh`` (rows
    ``H:2H``) after its initializer: torch adds ``b_if + b_hf``, so the gate's bias is shifted
    by ``forget_bias`` (and equals it with ``bias=nn.initializers.zeros``).
    """

    kernel: Callable | None = None
    recurrent: Callable | None = None
    bias: Callable | None = None
    forget_bias: float | None = None

    def of(self, name: str, hidden_size: int, gates: int) -> Callable:
        """The initializer of one of :data:`WEIGHT_NAMES`, for torch's shape of it."""
        chosen = {
            "weight_ih": self.kernel,
            "weight_hh": self.recurrent,
            "bias_ih": self.bias,
            "bias_hh": self.bias,
            "weight_hr": self.kernel,
        }[name]
        if chosen is None:
            init = torch_uniform(1.0 / math.sqrt(hidden_size))
        elif name.startswith("weight"):
            init = per_gate(chosen, 1 if name == "weight_hr" else gates)
        else:
            init = chosen
        if name == "bias_hh" and self.forget_bias is not None:
            init = shifted_block(init, FORGET, gates, self.forget_bias)
        return init

    def check(self, *, kind: str, bias: bool) -> None:
        """``forget_bias`` needs an LSTM with biases."""
        if self.forget_bias is None:
            return
        if kind != "lstm":
            raise ValueError(f"forget_bias is for LSTMs only, got kind {kind!r}")
        if not bias:
            raise ValueError("forget_bias needs bias=True (it is added to bias_hh)")


def per_gate(init: Callable, gates: int) -> Callable:
    """A Flax weight initializer (layout ``[in, out]``) → one for torch's ``[G·H, in]``, called
    once per gate block ``[in, H]`` with its own key (the key as is when ``G = 1``)."""

    def init_blocks(key, shape, dtype=jnp.float32):
        rows, cols = shape  # [G·H, in]
        if gates == 1:
            return init(key, (cols, rows), dtype).T
        keys = jax.random.split(key, gates)
        return jnp.concatenate([init(k, (cols, rows // gates), dtype).T for k in keys])

    return init_blocks


def shifted_block(init: Callable, block: int, gates: int, shift: float) -> Callable:
    """``init`` with ``shift`` added to block ``block`` of ``G`` (e.g. LSTM's forget bias)."""

    def init_shifted(key, shape, dtype=jnp.float32):
        value = init(key, shape, dtype)
        size = shape[0] // gates
        return value.at[block * size : (block + 1) * size].add(jnp.asarray(shift, dtype))

    return init_shifted


def weight_shapes(
    *, input_size: int, hidden_size: int, gates: int, bias: bool = True, proj_size: int = 0
) -> dict[str, tuple[int, ...]]:
    """One direction's parameters in torch's state_dict order: name → torch shape."""
    G, H, real_hidden = gates, hidden_size, proj_size or hidden_size
    shapes = {"weight_ih": (G * H, input_size), "weight_hh": (G * H, real_hidden)}
    if bias:
        shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
    if proj_size:
        shapes["weight_hr"] = (proj_size, H)
    return shapes


def make_weights(
    module: nn.Module,
    *,
    input_size: int,
    hidden_size: int,
    gates: int,
    bias: bool = True,
    proj_size: int = 0,
    suffix: str = "",
    param_dtype: Dtype = jnp.float32,
    inits: Inits | None = None,
) -> CellWeights:
    """Create (or fetch) one direction's parameters on ``module`` under torch's names.

    The order of creation is torch's state_dict order: ``weight_ih, weight_hh, bias_ih,
    bias_hh, weight_hr``; ``suffix`` is e.g. ``"_l1_reverse"`` (empty for a cell); ``inits``
    (:class:`Inits`, ``None``: torch's) says how they start.
    """
    inits = inits or Inits()
    shapes = weight_shapes(
        input_size=input_size, hidden_size=hidden_size, gates=gates, bias=bias, proj_size=proj_size
    )
    return CellWeights(
        **{
            name: module.param(
                name + suffix, inits.of(name, hidden_size, gates), shape, param_dtype
            )
            for name, shape in shapes.items()
        }
    )


# ----------------------------------------------------------------------------- pure steps
#
# Each recurrence is written as a ``core`` and a ``step``:
#
#     core(carry, gx, gh) -> carry     the elementwise part, given both projections
#     step(carry, gx, w)  =  core(carry, gx, gh = h @ W_hhᵀ + b_hh)      (Kind.step, for all)
#
# ``scan.recurrent_scan`` runs cores with a hand-written backward pass (the ``W_hh`` gradient
# as one matmul after the loop); ``scan.masked_scan`` runs steps under plain autodiff.


def blocks(gates, n: int) -> tuple[Array, ...]:
    """A fused gate array ``[B, n·H]`` split into its ``n`` blocks ``[B, H]``; a tuple of
    blocks (what :func:`jaxrnn.scan.recurrent_scan` passes as ``gx``) is returned as is."""
    if isinstance(gates, (tuple, list)):
        return tuple(gates)
    return tuple(jnp.split(gates, n, axis=-1))


def linear_core(h: Array, gx: Array, gh: Array) -> Array:
    """Linear recurrence (the seeds' LinRNN), no nonlinearity::

        h' = W_ih x + b_ih + W_hh h + b_hh  =  gx + gh

    h, gx, gh: ``[B, H]``.
    """
    del h
    return gx + gh


def elman_core(h: Array, gx: Array, gh: Array, nonlinearity: str = "tanh") -> Array:
    """Elman RNN, as ``torch.nn.RNN``::

        h' = act(W_ih x + b_ih + W_hh h + b_hh)  =  act(gx + gh),   act = tanh | relu

    h, gx, gh: ``[B, H]``.
    """
    del h
    return NONLINEARITIES[nonlinearity](gx + gh)


def lstm_core(carry: tuple[Array, Array], gx: Array, gh: Array) -> tuple[Array, Array]:
    """LSTM, as ``torch.nn.LSTM``::

        i = σ(W_ii x + b_ii + W_hi h + b_hi)
        f = σ(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = σ(W_io x + b_io + W_ho h + b_ho)
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c')

    carry: ``(h [B, H], c [B, H])``; gx, gh: ``[B, 4H]`` in gate order ``i, f, g, o``.
    """
    return lstm_core_fwd(carry, gx, gh)[0]


def lstm_core_fwd(carry: tuple[Array, Array], gx: Array, gh: Array):
    """:func:`lstm_core` and the residuals ``(i, f, g, o, c, tanh c')`` of its backward."""
    _, c = carry
    i, f, g, o = (x + h for x, h in zip(blocks(gx, 4), blocks(gh, 4)))
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    return (o * tanh_c, c_new), (i, f, g, o, c, tanh_c)


def gru_core(h: Array, gx: Array, gh: Array) -> Array:
    """GRU, as ``torch.nn.GRU``::

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h

    h: ``[B, H]``; gx, gh: ``[B, 3H]`` in gate order ``r, z, n``. ``b_hn`` sits inside the
    ``r ⊙ (…)``, which is why the two biases cannot be folded.
    """
    return gru_core_fwd(h, gx, gh)[0]


def gru_core_fwd(h: Array, gx: Array, gh: Array):
    """:func:`gru_core` and the residuals ``(r, z, n, W_hn h + b_hn, h)`` of its backward."""
    x_r, x_z, x_n = blocks(gx, 3)
    h_r, h_z, h_n = blocks(gh, 3)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h, (r, z, n, h_n, h)


# ----------------------------------------------------------------------------- core VJPs
#
# ``scan.recurrent_scan`` differentiates the cores by hand. Each ``*_core_fwd`` returns the
# new carry and what its backward needs (activated gates, no pre-activations), so the backward
# loop evaluates no transcendental function; each ``*_core_bwd`` takes those residuals and the
# cotangent of the new carry and returns ``(d_carry, d_gx, d_gh)``, where ``d_carry`` is the
# elementwise part only (``h`` also reaches ``gh = h W_hhᵀ``; the scan adds that path), ``d_gh``
# is ``G`` blocks ``[B, H]`` (one per gate), and ``d_gx`` is ``None`` where it equals ``d_gh``
# (the cores that add ``gx + gh``), else its ``G`` blocks too. Blocks, not one ``[B, G·H]``
# array: XLA:CPU's loop is faster when nothing is concatenated inside it.
# ``tests/test_cells.py`` checks each against ``jax.vjp`` of its core.


def linear_core_fwd(h: Array, gx: Array, gh: Array):
    """:func:`linear_core`; its backward needs no residuals."""
    return linear_core(h, gx, gh), None


def linear_core_bwd(res, d_h: Array):
    """``h' = gx + gh``: both get ``d_h'``; the old ``h`` only reaches ``h'`` through gh."""
    del res
    return jnp.zeros_like(d_h), None, (d_h,)


def elman_core_fwd(h: Array, gx: Array, gh: Array, nonlinearity: str = "tanh"):
    """:func:`elman_core`; the residual is the new ``h`` itself."""
    h = elman_core(h, gx, gh, nonlinearity)
    return h, h


def elman_core_bwd(h: Array, d_h: Array, nonlinearity: str = "tanh"):
    """``d_a = d_h' ⊙ act'(a)`` from ``h' = act(a)``: ``1 - h'²`` (tanh), ``[h' > 0]`` (relu)."""
    d_a = d_h * (1 - h * h) if nonlinearity == "tanh" else jnp.where(h > 0, d_h, 0)
    return jnp.zeros_like(d_h), None, (d_a,)


def lstm_core_bwd(res, d_carry: tuple[Array, Array]):
    """Backward of :func:`lstm_core` from its activated gates::

        d_o = d_h' ⊙ tanh c'                 d_c = d_c' + d_h' ⊙ o ⊙ (1 - tanh² c')
        d_i = d_c ⊙ g    d_g = d_c ⊙ i    d_f = d_c ⊙ c    d_c_prev = d_c ⊙ f

    then through σ' = σ(1 - σ) and tanh' = 1 - tanh², in gate order ``i, f, g, o``.
    """
    i, f, g, o, c, tanh_c = res
    d_h, d_c = d_carry
    d_c = d_c + d_h * o * (1 - tanh_c * tanh_c)
    d_gates = (
        d_c * g * i * (1 - i),
        d_c * c * f * (1 - f),
        d_c * i * (1 - g * g),
        d_h * tanh_c * o * (1 - o),
    )
    return (jnp.zeros_like(d_h), d_c * f), None, d_gates


def gru_core_bwd(res, d_h: Array):
    """Backward of :func:`gru_core` from its activated gates::

        d_n = d_h' ⊙ (1 - z)    d_z = d_h' ⊙ (h - n)    d_h_prev = d_h' ⊙ z
        d_a_n = d_n ⊙ (1 - n²)  → d_gx_n = d_a_n,  d_gh_n = d_a_n ⊙ r,  d_r = d_a_n ⊙ h_n

    with ``r, z`` through σ' = σ(1 - σ); the ``r, z`` blocks of ``d_gx`` and ``d_gh`` are equal.
    """
    r, z, n, h_n, h = res
    d_a_n = d_h * (1 - z) * (1 - n * n)
    d_r = d_a_n * h_n * r * (1 - r)
    d_z = d_h * (h - n) * z * (1 - z)
    return d_h * z, (d_r, d_z, d_a_n), (d_r, d_z, d_a_n * r)


class CoreVJP(NamedTuple):
    """A core with its hand-written derivative, for :func:`jaxrnn.scan.recurrent_scan`.

    ``fwd(carry, gx, gh) -> (carry, residuals)``; ``bwd(residuals, d_carry) -> (d_carry,
    d_gx | None, d_gh)``. ``gx`` may be an array ``[B, G·H]`` or its ``G`` blocks (see
    :func:`blocks`).
    """

    fwd: Callable
    bwd: Callable


def recurrent_projection(carry, w: CellWeights) -> Array:
    """``gh = h @ W_hhᵀ + b_hh``: ``[B, G·H]`` — the only matmul inside the time loop."""
    return affine(output_of(carry), w.weight_hh, w.bias_hh)


# ----------------------------------------------------------------------------- the kinds


@dataclasses.dataclass(frozen=True)
class Kind:
    """Everything about one recurrence kind; :data:`KINDS` has one entry per kind.

    The cells, the layers and :mod:`jaxrnn.interop` read these facts and nothing else: adding
    a kind is its core (with ``*_fwd`` / ``*_bwd``) and one entry in :data:`KINDS`.
    """

    name: str  # torch's mode name: "linear" | "rnn_tanh" | "rnn_relu" | "lstm" | "gru"
    gates: int  # G: W_ih is [G·H, I], W_hh [G·H, H]
    states: int  # arrays in the carry: 1 (h), 2 (LSTM's (h, c)); h always first
    core: Callable  # (carry, gx, gh) -> carry
    core_fwd: Callable  # (carry, gx, gh) -> (carry, residuals)
    core_bwd: Callable  # (residuals, d_carry) -> (d_carry, d_gx | None, d_gh), see CoreVJP
    torch_layer: str | None = None  # torch.nn's layer class (jaxrnn's has the same name)
    torch_cell: str | None = None  # torch.nn's cell class (jaxrnn's has the same name)
    layer_keywords: tuple[str, ...] = ()  # constructor keywords beyond the common ones
    cell_keywords: tuple[str, ...] = ()

    @property
    def vjp(self) -> CoreVJP:
        """The core with its hand-written backward, for :func:`jaxrnn.scan.recurrent_scan`."""
        return CoreVJP(self.core_fwd, self.core_bwd)

    def step(self, carry, gx: Array, w: CellWeights):
        """One step, the same for every kind::

            carry' = core(carry, gx, gh),   gh = h @ W_hhᵀ + b_hh
            h'     = h' @ W_hrᵀ             only with torch's LSTM projection (proj_size > 0)

        gx = ``x @ W_ihᵀ + b_ih``: ``[B, G·H]``; carry: the core's, ``h`` first (with a
        projection ``h`` is ``[B, P]``, ``W_hh`` ``[4H, P]``, ``W_hr`` ``[P, H]``).
        """
        carry = self.core(carry, gx, recurrent_projection(carry, w))
        if w.weight_hr is None:
            return carry
        return (affine(carry[0], w.weight_hr), *carry[1:])  # h [B, P]


def _elman(nonlinearity: str) -> Kind:
    """``rnn_tanh`` / ``rnn_relu``: the Elman core with its nonlinearity bound."""

    def bind(f: Callable) -> Callable:
        return functools.partial(f, nonlinearity=nonlinearity)

    return Kind(
        "rnn_" + nonlinearity,
        gates=1,
        states=1,
        core=bind(elman_core),
        core_fwd=bind(elman_core_fwd),
        core_bwd=bind(elman_core_bwd),
        torch_layer="RNN",
        torch_cell="RNNCell",
        layer_keywords=("nonlinearity",),
        cell_keywords=("nonlinearity",),
    )


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "linear",
            gates=1,
            states=1,
            core=linear_core,
            core_fwd=linear_core_fwd,
            core_bwd=linear_core_bwd,
        ),
        _elman("tanh"),
        _elman("relu"),
        Kind(
            "lstm",
            gates=4,
            states=2,
            core=lstm_core,
            core_fwd=lstm_core_fwd,
            core_bwd=lstm_core_bwd,
            torch_layer="LSTM",
            torch_cell="LSTMCell",
            layer_keywords=("proj_size",),
        ),
        Kind(
            "gru",
            gates=3,
            states=1,
            core=gru_core,
            core_fwd=gru_core_fwd,
            core_bwd=gru_core_bwd,
            torch_layer="GRU",
            torch_cell="GRUCell",
        ),
    )
}


def elman_kind(nonlinearity: str) -> str:
    """``"tanh" | "relu"`` → the kind ``rnn_tanh | rnn_relu`` (anything else raises)."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return "rnn_" + nonlinearity


# Each kind's step under its own name, for code that steps one by hand (tasks, tests).
linear_step = KINDS["linear"].step
lstm_step = KINDS["lstm"].step
gru_step = KINDS["gru"].step


def elman_step(h: Array, gx: Array, w: CellWeights, nonlinearity: str = "tanh") -> Array:
    """The ``rnn_tanh`` / ``rnn_relu`` step: :func:`elman_core` with ``gh = W_hh h + b_hh``."""
    return KINDS[elman_kind(nonlinearity)].step(h, gx, w)


def output_of(carry) -> Array:
    """The per-step output of a carry: ``h`` (for LSTM the first of ``(h, c)``)."""
    return carry[0] if isinstance(carry, tuple) else carry


# ----------------------------------------------------------------------------- carries


def check_carry(carry, batch_shape: tuple[int, ...], *, states: int, sizes, name="carry"):
    """Refuse a carry that does not fit: its structure, batch and width, named.

    ``states``: arrays in the carry (1: ``h``, 2: LSTM's ``(h, c)``); ``sizes``: each one's
    width; ``batch_shape``: ``x.shape[:-1]``. Without this check a bare array given to an LSTM
    cell with a batch of 2 is unpacked as ``(h, c)`` along its batch rows, and a batch of 1
    broadcasts against any batch.
    """
    parts = ("h", "c")[:states]
    want = " and ".join(f"{p} {list(batch_shape) + [n]}" for p, n in zip(parts, sizes))
    if states > 1 and not isinstance(carry, (tuple, list)):
        got = f"an array of shape {tuple(carry.shape)}" if hasattr(carry, "shape") else carry
        raise TypeError(f"{name} must be a pair ({', '.join(parts)}): {want}; got {got}")
    if states == 1 and isinstance(carry, (tuple, list)):
        raise TypeError(f"{name} must be one array h {want[2:]}; got a {type(carry).__name__}")
    arrays = tuple(carry) if states > 1 else (carry,)
    if len(arrays) != states:
        raise ValueError(f"{name} must be a pair ({', '.join(parts)}); got {len(arrays)} arrays")
    for part, array, size in zip(parts, arrays, sizes):
        label = f"{name}[{parts.index(part)}] ({part})" if states > 1 else name
        if not hasattr(array, "shape"):
            raise TypeError(f"{label} must be an array, got {type(array).__name__}")
        expected = (*batch_shape, size)
        if tuple(array.shape) != expected:
            raise ValueError(
                f"{label} must have shape {expected} = [*batch, hidden_size] (x has batch "
                f"shape {tuple(batch_shape)}); got {tuple(array.shape)}"
            )


def cell_step(kind: Kind, carry, x: Array, w: CellWeights, hidden_size: int):
    """A cell's step ``(carry, x) -> (carry', y)``: the carry checked (:func:`check_carry`),
    then ``carry' = kind.step(carry, x @ W_ihᵀ + b_ih, w)`` and ``y = h'``. x: ``[*B, I]``."""
    check_carry(carry, x.shape[:-1], states=kind.states, sizes=(hidden_size,) * 2)
    carry = kind.step(carry, affine(x, w.weight_ih, w.bias_ih), w)
    return carry, output_of(carry)


# ----------------------------------------------------------------------------- positional hint


class KeywordsOnly:
    """A mixin for Flax modules with keyword-only fields: positional arguments raise a
    ``TypeError`` that shows the keyword call (and torch's positional one, on jaxrnn.nnx)."""

    nnx_call: ClassVar[str | None] = None  # e.g. "LSTM(input_size, hidden_size, ..., rngs=...)"
    example: ClassVar[str] = "hidden_size=..."

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            if args:
                raise TypeError(positional_hint(type(self), args))
            init(self, **kw)

        cls.__init__ = __init__


def positional_hint(cls, args: tuple) -> str:
    """The error for ``cls(*args)``: fields are keywords; torch's order is jaxrnn.nnx's."""
    name = cls.__name__
    hint = (
        f"jaxrnn.{name} takes keyword arguments only, got {len(args)} positional "
        f"{args!r}: write jaxrnn.{name}({cls.example}, ...) (a Flax linen module: input_size "
        "is read from x)"
    )
    if cls.nnx_call:
        hint += f"; for torch's positional order use jaxrnn.nnx.{cls.nnx_call}"
    return hint


# ----------------------------------------------------------------------------- linen cells


class _Cell(KeywordsOnly, nn.RNNCellBase, kw_only=True):
    """A single step with torch's RNNCell parameter names (``weight_ih``, ``weight_hh``, …).

    A ``flax.linen.RNNCellBase``: it runs inside ``flax.linen.RNN`` and ``jaxrnn.Recurrent``.
    ``kernel_init``, ``recurrent_kernel_init`` and ``bias_init`` (``None``: torch's
    U(-1/√H, 1/√H)) are described in :class:`Inits`.
    """

    hidden_size: int
    bias: bool = True
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable | None = None
    recurrent_kernel_init: Callable | None = None
    bias_init: Callable | None = None

    kind: ClassVar[str]  # a key of KINDS: a class constant, or a property (RNNCell)
    proj_size = 0
    forget_bias = None

    @nn.compact
    def __call__(self, carry, x: Array):
        """One step ``(carry, x) -> (carry', y)``.

        Args:
          carry: ``h [*B, H]``, for :class:`LSTMCell` the pair ``(h, c)``; zeros from
            :meth:`initialize_carry`. Its structure, batch and width are checked.
          x: ``[*B, I]`` (a batch ``[B, I]``, or one input ``[I]``).

        Returns:
          ``(carry', y)``: the new carry (same structure) and ``y = h' [*B, H]``.
        """
        kind = KINDS[self.kind]
        inits = Inits(
            self.kernel_init, self.recurrent_kernel_init, self.bias_init, self.forget_bias
        )
        inits.check(kind=kind.name, bias=self.bias)
        w = make_weights(
            self,
            input_size=x.shape[-1],
            hidden_size=self.hidden_size,
            gates=kind.gates,
            bias=self.bias,
            proj_size=self.proj_size,
            param_dtype=self.param_dtype,
            inits=inits,
        )
        return cell_step(kind, carry, x, w, self.hidden_size)

    @nn.nowrap
    def initialize_carry(self, key, input_shape: tuple[int, ...], dtype: Dtype = None):
        """Zero state for inputs of shape ``[..., I]`` (``key`` unused, kept for Flax's API):
        ``h``, or a tuple of the kind's state arrays (LSTM: ``(h, c)``)."""
        del key
        dtype = dtype or self.param_dtype
        h = jnp.zeros((*input_shape[:-1], self.hidden_size), dtype)
        states = KINDS[self.kind].states
        return h if states == 1 else (h,) * states

    @property
    def num_feature_axes(self) -> int:
        """One feature axis (``I``), as ``flax.linen.RNN`` asks of its cells."""
        return 1


class LinearCell(_Cell, kw_only=True):
    """``h' = W_ih x + b_ih + W_hh h + b_hh`` (no nonlinearity): the seeds' linear step."""

    kind = "linear"


class RNNCell(_Cell, kw_only=True):
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, as ``torch.nn.RNNCell``."""

    nonlinearity: str = "tanh"
    nnx_call = "RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', *, rngs)"

    @property
    def kind(self) -> str:
        return elman_kind(self.nonlinearity)


class LSTMCell(_Cell, kw_only=True):
    """One LSTM step as ``torch.nn.LSTMCell``; carry ``(h, c)``, see :func:`lstm_core`.

    ``forget_bias`` is added to the forget gate's block of ``bias_hh`` at init (see
    :class:`Inits`).
    """

    forget_bias: float | None = None
    kind = "lstm"
    nnx_call = "LSTMCell(input_size, hidden_size, bias=True, *, rngs)"


class GRUCell(_Cell, kw_only=True):
    """One GRU step as ``torch.nn.GRUCell``; see :func:`gru_core`."""

    kind = "gru"
    nnx_call = "GRUCell(input_size, hidden_size, bias=True, *, rngs)"
