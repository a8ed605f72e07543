"""jaxrnn's layers as ``flax.nnx`` modules, with torch's constructors.

NNX builds parameters eagerly, so these take torch's arguments in torch's order::

    model = jaxrnn.nnx.LSTM(16, 64, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    output, (h_n, c_n) = model(x, lengths=lengths)

``RNN``, ``LSTM``, ``GRU`` take ``(input_size, hidden_size, num_layers=1, ...)`` as
``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (``RNN``'s ``nonlinearity`` fourth, as torch), and are
called ``model(x, hx=None, *, lengths=None) -> (output, h_n)`` with the shapes of
:meth:`jaxrnn.layers.RNNBase.__call__`. The cells take ``(input_size, hidden_size, bias=True)``
and step ``cell(carry, x) -> (carry, y)`` (``flax.nnx.RNNCellBase``: they run in
``flax.nnx.RNN``); ``Embed`` takes ``(num_embeddings, embedding_dim, padding_idx=None)``.

Every parameter is an attribute named as torch's state_dict key (``weight_ih_l0``,
``bias_hh_l1_reverse``; ``Embed.weight``), so ``jaxrnn.params_to_state_dict(nnx.state(model,
nnx.Param))`` gives torch's keys and shapes, and :func:`from_torch` / :func:`to_torch`
convert both ways bit-exactly. The math is the linen layers': :func:`jaxrnn.layers.run_stack`,
:func:`jaxrnn.cells.cell_step` and :func:`jaxrnn.embedding.embed` over the same parameters.

Dropout between layers is an ``nnx.Dropout`` (attribute ``drop``): active by default, off
after ``model.eval()`` (on again with ``model.train()``), or per call with
``deterministic=``; its masks come from the ``rngs`` given at construction (the
``"dropout"`` stream, else ``"default"``). ``jaxrnn.nnx`` keeps jaxrnn's meaning of
``dtype`` (the computation's; ``None``: the input's) and ``param_dtype`` (the parameters').
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import cells, embedding, interop, layers

Array = jax.Array


def _value(param) -> Array:
    return param[...]


class RNNBase(nnx.Module):
    """Shared body of :class:`RNN`, :class:`LSTM` and :class:`GRU` (see the module docstring).

    ``stack`` (a :class:`jaxrnn.layers.Stack`) holds the configuration; torch's attribute
    names (``hidden_size``, ``num_layers``, ``dropout``, …) read from it.
    """

    def __init__(self, stack: layers.Stack, *, rngs: nnx.Rngs, **options):
        inits = cells.Inits(
            options.pop("kernel_init", None),
            options.pop("recurrent_kernel_init", None),
            options.pop("bias_init", None),
            options.pop("forget_bias", None),
        )
        param_dtype = options.pop("param_dtype", jnp.float32)
        if options:
            raise TypeError(f"unexpected keyword arguments {sorted(options)}")
        if not layers._is_int(stack.input_size):
            raise ValueError(f"input_size must be an int >= 0, got {stack.input_size!r}")
        self.stack = stack.check()
        inits.check(kind=stack.kind, bias=stack.bias)
        for name, shape in stack.parameters(stack.input_size).items():
            init = inits.of(name.split("_l")[0], stack.hidden_size, stack.gates)
            setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))
        self.drop = nnx.Dropout(stack.dropout, rngs=rngs)

    def __call__(self, x, hx=None, *, lengths=None, deterministic: bool | None = None):
        """Run the stack over ``x``, as ``torch.nn.RNN`` / ``LSTM`` / ``GRU``'s forward.

        Args:
          x: ``[T, B, I]``, ``[B, T, I]`` with ``batch_first``, or unbatched ``[T, I]``.
          hx: ``[L·D, B, H]`` (unbatched ``[L·D, H]``); for LSTM the pair ``(h_0, c_0)`` with
            h ``[L·D, B, P]`` when ``proj_size > 0``. Never batch-first. ``None``: zeros.
          lengths: ``[B]`` ints in ``[1, T]``: packed-sequence semantics (outputs past a length
            are 0, ``h_n`` is the state at the last valid step, the reverse direction runs over
            the valid prefix only).
          deterministic: ``True`` turns the dropout between layers off for this call; ``None``
            follows ``model.eval()`` / ``model.train()`` (dropout on after construction).

        Returns:
          ``(output, h_n)``: output ``[T, B, D·H]`` (``[B, T, D·H]`` with ``batch_first``,
          ``D·P`` with a projection), zero past each length; ``h_n`` shaped like ``hx``.
        """
        params = {name: _value(getattr(self, name)) for name in self.stack.parameters(0)}
        if deterministic is None:
            deterministic = self.drop.deterministic
        dropout = None
        if not deterministic and self.stack.dropout > 0 and self.stack.num_layers > 1:
            dropout = functools.partial(self.drop, deterministic=False)
        return layers.run_stack(self.stack, params, x, hx, lengths=lengths, dropout=dropout)

    def initialize_carry(self, input_shape: tuple[int, ...], dtype: Any = None):
        """Zeros shaped like ``hx`` for ``x`` of shape ``input_shape``: ``[L·D, B, H]``
        (unbatched ``[L·D, H]``), for LSTM ``(h, c)``; ``dtype`` defaults to the compute
        dtype, else the parameters'."""
        dtype = dtype or self.stack.dtype or _value(self.weight_ih_l0).dtype
        return layers.initial_state(self.stack, tuple(input_shape), dtype)

    # torch's attribute names, read from the configuration
    input_size = property(lambda self: self.stack.input_size)
    hidden_size = property(lambda self: self.stack.hidden_size)
    num_layers = property(lambda self: self.stack.num_layers)
    bias = property(lambda self: self.stack.bias)
    batch_first = property(lambda self: self.stack.batch_first)
    dropout = property(lambda self: self.stack.dropout)
    bidirectional = property(lambda self: self.stack.bidirectional)
    proj_size = property(lambda self: self.stack.proj_size)


STACK_OPTIONS = ("dtype", "unroll", "fused_backward", "backend")  # jaxrnn's, beyond torch's


def _stack(kind: str, torch_args: tuple, options: dict, proj_size: int = 0) -> layers.Stack:
    """torch's positional arguments (input_size … bidirectional), ``proj_size`` and jaxrnn's
    :data:`STACK_OPTIONS` (taken out of ``options``) as a :class:`jaxrnn.layers.Stack`."""
    names = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout")
    kwargs = dict(zip((*names, "bidirectional"), torch_args))
    kwargs["dropout"] = float(kwargs["dropout"])
    extra = {k: options.pop(k) for k in STACK_OPTIONS if k in options}
    return layers.Stack(kind=kind, proj_size=proj_size, **kwargs, **extra)


class RNN(RNNBase):
    """Elman RNN, as ``torch.nn.RNN``: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    ``options``: ``kernel_init``, ``recurrent_kernel_init``, ``bias_init`` (see
    :class:`jaxrnn.cells.Inits`), ``param_dtype``, ``dtype``, ``unroll``, ``fused_backward``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        rngs: nnx.Rngs,
        **options,
    ):
        kind = cells.elman_kind(nonlinearity)
        args = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(_stack(kind, args, options), rngs=rngs, **options)

    @property
    def nonlinearity(self) -> str:
        return self.stack.kind.removeprefix("rnn_")


class LSTM(RNNBase):
    """LSTM, as ``torch.nn.LSTM`` (gates ``i, f, g, o``; ``proj_size`` as torch's).

    ``options``: those of :class:`RNN`, ``forget_bias`` (added to the forget gate's block of
    ``bias_hh``) and ``backend`` (``"scan" | "cudnn" | "auto"``, as ``jaxrnn.LSTM``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        rngs: nnx.Rngs,
        **options,
    ):
        args = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        stack = _stack("lstm", args, options, proj_size)
        super().__init__(stack, rngs=rngs, **options)


class GRU(RNNBase):
    """GRU, as ``torch.nn.GRU`` (gates ``r, z, n``). ``options``: those of :class:`RNN`."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        rngs: nnx.Rngs,
        **options,
    ):
        args = (input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        super().__init__(_stack("gru", args, options), rngs=rngs, **options)


# ----------------------------------------------------------------------------- cells


class _Cell(nnx.RNNCellBase):
    """One step with torch's cell parameters (``weight_ih``, ``weight_hh``, ``bias_ih``,
    ``bias_hh``); ``options``: ``kernel_init``, ``recurrent_kernel_init``, ``bias_init``,
    ``param_dtype`` (and ``forget_bias`` for :class:`LSTMCell`)."""

    def __init__(
        self,
        kind: str,
        input_size: int,
        hidden_size: int,
        bias: bool,
        *,
        rngs: nnx.Rngs,
        kernel_init: Callable | None = None,
        recurrent_kernel_init: Callable | None = None,
        bias_init: Callable | None = None,
        forget_bias: float | None = None,
        param_dtype: Any = jnp.float32,
    ):
        inits = cells.Inits(kernel_init, recurrent_kernel_init, bias_init, forget_bias)
        inits.check(kind=kind, bias=bias)
        self.kind, self.input_size = kind, input_size
        self.hidden_size, self.bias = hidden_size, bias
        gates = cells.KINDS[kind].gates
        shapes = cells.weight_shapes(
            input_size=input_size, hidden_size=hidden_size, gates=gates, bias=bias
        )
        for name, shape in shapes.items():
            init = inits.of(name, hidden_size, gates)
            setattr(self, name, nnx.Param(init(rngs.params(), shape, param_dtype)))

    def __call__(self, carry, x):
        """One step ``(carry, x) -> (carry', y)``.

        Args:
          carry: ``h [*B, H]``, for :class:`LSTMCell` the pair ``(h, c)``; checked.
          x: ``[*B, I]``.

        Returns:
          ``(carry', y)`` with ``y = h' [*B, H]``.
        """
        w = cells.CellWeights(
            *(_value(getattr(self, n)) if hasattr(self, n) else None for n in cells.WEIGHT_NAMES)
        )
        return cells.cell_step(cells.KINDS[self.kind], carry, x, w, self.hidden_size)

    def initialize_carry(self, input_shape: tuple[int, ...], rngs=None, carry_init=None):
        """Zero state for inputs ``[*B, I]``: ``h [*B, H]`` (LSTM: ``(h, c)``), in the
        parameters' dtype (``rngs`` and ``carry_init`` unused: zeros, as torch)."""
        del rngs, carry_init
        h = jnp.zeros((*input_shape[:-1], self.hidden_size), _value(self.weight_hh).dtype)
        return (h, h) if self.kind == "lstm" else h

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNNCell(_Cell):
    """``torch.nn.RNNCell(input_size, hidden_size, bias=True, nonlinearity="tanh")``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        rngs: nnx.Rngs,
        **options,
    ):
        kind = cells.elman_kind(nonlinearity)
        super().__init__(kind, input_size, hidden_size, bias, rngs=rngs, **options)

    @property
    def nonlinearity(self) -> str:
        return self.kind.removeprefix("rnn_")


class LSTMCell(_Cell):
    """``torch.nn.LSTMCell(input_size, hidden_size, bias=True)``; carry ``(h, c)``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, rngs: nnx.Rngs, **options
    ):
        super().__init__("lstm", input_size, hidden_size, bias, rngs=rngs, **options)


class GRUCell(_Cell):
    """``torch.nn.GRUCell(input_size, hidden_size, bias=True)``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, rngs: nnx.Rngs, **options
    ):
        super().__init__("gru", input_size, hidden_size, bias, rngs=rngs, **options)


# ----------------------------------------------------------------------------- Embed


NORMAL = jax.nn.initializers.normal(1.0)  # torch's nn.Embedding init, N(0, 1)


class Embed(nnx.Module):
    """``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)``: a table
    ``weight [V, F]`` initialised N(0, 1) (``embedding_init``), the ``padding_idx`` row at
    zero and never trained; out-of-range ids refused as :class:`jaxrnn.Embed` refuses them."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        rngs: nnx.Rngs,
        param_dtype: Any = jnp.float32,
        embedding_init: Callable | None = None,
    ):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = embedding.padding_index(padding_idx, num_embeddings)
        init = embedding.zero_row(embedding_init or NORMAL, self.padding_idx)
        self.weight = nnx.Param(init(rngs.params(), (num_embeddings, embedding_dim), param_dtype))

    def __call__(self, ids) -> Array:
        """Look up token ids.

        Args:
          ids: ``[...]`` integers in ``[0, num_embeddings)`` (checked when concrete; under
            ``jit`` a bad id gives a NaN row).

        Returns:
          ``[..., embedding_dim]``: ``weight[ids]``.
        """
        embedding.check_ids(ids, self.num_embeddings)
        return embedding.embed(_value(self.weight), jnp.asarray(ids), self.padding_idx)


# ----------------------------------------------------------------------------- torch


_CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}
_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}


def from_torch(module, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """A torch module → the NNX module computing the same function, torch's weights loaded.

    ``nn.RNN/LSTM/GRU`` → :class:`RNN` / :class:`LSTM` / :class:`GRU`; their cells → the
    cells; ``nn.Embedding`` → :class:`Embed`; ``nn.Linear`` → ``flax.nnx.Linear``
    (``kernel = weight.T``). Float64 needs ``jax_enable_x64`` (refused otherwise).
    ``rngs`` (default ``nnx.Rngs(0)``) seeds what is not a weight: the dropout masks.
    """
    read = interop.read_torch(module)
    rngs = rngs or nnx.Rngs(0)
    kwargs, dtype = dict(read.kwargs), read.dtype
    if read.what == "layer":
        model = _LAYERS[read.name](**kwargs, rngs=rngs, param_dtype=dtype)
    elif read.what == "cell":
        model = _CELLS[read.name](**kwargs, rngs=rngs, param_dtype=dtype)
    elif read.what == "Linear":
        model = nnx.Linear(
            kwargs["in_features"],
            kwargs["out_features"],
            use_bias=kwargs["bias"],
            param_dtype=dtype,
            rngs=rngs,
        )
    else:
        model = Embed(**kwargs, rngs=rngs, param_dtype=dtype)
    # like=the State, not the model: the padding row is torch's own, nothing to warn about
    params = interop.state_dict_to_params(read.state, like=nnx.state(model, nnx.Param))
    nnx.update(model, params)
    return model


def to_torch(model: nnx.Module):
    """An NNX module of this module (or ``nnx.Linear``) → the torch module, weights loaded
    bit-exactly (torch's keys are the parameter paths)."""
    torch = interop.import_torch("to_torch")
    if isinstance(model, RNNBase):
        kwargs = _torch_layer_kwargs(model)
        module = getattr(torch.nn, cells.KINDS[model.stack.kind].torch_layer)(**kwargs)
    elif isinstance(model, _Cell):
        kwargs = dict(input_size=model.input_size, hidden_size=model.hidden_size, bias=model.bias)
        if model.kind.startswith("rnn_"):
            kwargs["nonlinearity"] = model.nonlinearity
        module = getattr(torch.nn, cells.KINDS[model.kind].torch_cell)(**kwargs)
    elif isinstance(model, Embed):
        module = torch.nn.Embedding(model.num_embeddings, model.embedding_dim, model.padding_idx)
    elif isinstance(model, nnx.Linear):
        module = torch.nn.Linear(model.in_features, model.out_features, bias=model.use_bias)
    else:
        raise TypeError(
            f"jaxrnn.nnx.to_torch supports jaxrnn.nnx's layers, cells and Embed, and nnx.Linear; "
            f"got {type(model).__name__}. For a whole model use "
            "jaxrnn.params_to_state_dict(nnx.state(model, nnx.Param))"
        )
    state = interop.params_to_state_dict(model)
    dtype = next(iter(state.values())).dtype
    module = module.to(getattr(torch, str(dtype)))
    # np.array copies: arrays from JAX are read-only, which torch.from_numpy warns about.
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return module


def _torch_layer_kwargs(model: RNNBase) -> dict:
    stack = model.stack
    kwargs = dict(
        input_size=stack.input_size,
        hidden_size=stack.hidden_size,
        num_layers=stack.num_layers,
        bias=stack.bias,
        batch_first=stack.batch_first,
        dropout=stack.dropout,
        bidirectional=stack.bidirectional,
    )
    if stack.kind == "lstm":
        kwargs["proj_size"] = stack.proj_size
    if stack.kind.startswith("rnn_"):
        kwargs["nonlinearity"] = model.nonlinearity
    return kwargs
