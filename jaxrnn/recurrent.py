"""Any cell over time, with the layers' contract: ``Recurrent`` and ``Bidirectional``.

``Recurrent(cell)`` scans a cell ``(carry, x_t) -> (carry, y_t)`` that has
``initialize_carry(key, input_shape)`` — jaxrnn's cells, ``flax.linen``'s ``RNNCellBase`` cells
(``LSTMCell``, ``GRUCell``, ``OptimizedLSTMCell``, ``SimpleCell``) or a user's own module — with
torch's packed-sequence semantics, as the layers have them::

    carry_t = cell(carry_{t-1}, x_t)   where t < length, else carry_{t-1} (held)
    y_t     = cell's output            where t < length, else 0

Scanning with ``reverse=True`` holds the initial carry through the padding, so each sequence
starts at its own last valid step (the valid prefix only, as torch's reverse direction); the
final carry is the carry at each sequence's last valid step either way. ``Bidirectional`` runs
one forward and one reverse ``Recurrent`` and concatenates their outputs, forward first.

The built-in layers (``jaxrnn.LSTM``, …) keep their fused path (one input projection before
the loop, a hand-written backward); ``Recurrent(jaxrnn.LSTMCell(...))`` computes the same
numbers step by step (``tests/test_recurrent.py``).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import length_masks

Array = jax.Array


def _along(m: Array, a: Array, axis: int) -> Array:
    """``m`` (``[B]``, or a scalar when unbatched) shaped to broadcast along ``a``'s ``axis``."""
    if m.ndim == 0:
        return m
    shape = [1] * a.ndim
    shape[axis] = m.shape[0]
    return m.reshape(shape)


def _masked_step(cell: nn.Module, carry, inputs):
    """One step where the mask ``m`` is true; the old carry and a zero output elsewhere."""
    x_t, m = inputs
    new, y = cell(carry, x_t)
    if m is None:
        return new, y
    carry = jax.tree.map(lambda n, o: jnp.where(_along(m, n, 0), n, o), new, carry)
    return carry, jax.tree.map(lambda a: jnp.where(_along(m, a, 0), a, 0), y)


class Recurrent(nn.Module):
    """A cell scanned over time with packed-sequence semantics (see the module docstring).

    ``cell``: a module with ``__call__(carry, x_t) -> (carry, y_t)`` and
    ``initialize_carry(key, input_shape)``; every carry leaf is ``[B, ...]`` (batch first).
    ``num_feature_axes`` (default 1) tells how many trailing axes of ``x`` are features.
    ``batch_first``: ``x`` is ``[B, T, ...]``; ``reverse``: scan from the last valid step back
    to the first; ``unroll``: passed to the scan.

    Parameters are the cell's, under ``cell`` (shared by every step).
    """

    cell: nn.Module
    _: dataclasses.KW_ONLY
    batch_first: bool = False
    reverse: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(self, x, carry=None, *, lengths=None, reverse: bool | None = None):
        """Scan the cell over ``x``.

        Args:
          x: ``[T, B, *F]`` (``[B, T, *F]`` with ``batch_first``) or unbatched ``[T, *F]``,
            ``F`` the cell's feature axes (one for the usual cells: ``[T, B, I]``).
          carry: the initial carry, ``[B, ...]`` leaves; ``None``: the cell's
            ``initialize_carry(jax.random.key(0), x_t.shape)``.
          lengths: ``[B]`` ints in ``[1, T]`` (unbatched: a scalar), checked as the layers
            check them; out-of-range under ``jit``: NaN for that sequence.
          reverse: overrides the field (``Bidirectional`` runs its backward one this way).

        Returns:
          ``(outputs, final_carry)``: the cell's outputs stacked over time in ``x``'s layout,
          zero past each length; the carry at each sequence's last valid step.
        """
        reverse = self.reverse if reverse is None else reverse
        xs, batched = self._time_major(x)  # [T, *B, *F]
        T = xs.shape[0]
        B = xs.shape[1] if batched else 1
        lengths, mask, valid = length_masks(lengths, T, B, batched, self.batch_first)
        if mask is not None and not batched:
            mask, valid = mask[:, 0], None if valid is None else valid[0]
        if carry is None:
            carry = self.cell.initialize_carry(jax.random.key(0), xs.shape[1:])
        scan = nn.scan(
            _masked_step,
            variable_broadcast="params",
            split_rngs={"params": False},
            reverse=reverse,
            unroll=self.unroll,
        )
        carry, ys = scan(self.cell, carry, (xs, mask))
        if valid is not None:  # traced lengths out of range: NaN, never a clamp
            carry = jax.tree.map(lambda a: jnp.where(_along(valid, a, 0), a, jnp.nan), carry)
            ys = jax.tree.map(lambda a: jnp.where(_along(valid, a, 1), a, jnp.nan), ys)
        if batched and self.batch_first:
            ys = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), ys)
        return ys, carry

    def _time_major(self, x) -> tuple[Array, bool]:
        """``x`` → ``([T, *B, *F], batched)``, checking its rank against the cell's."""
        if not hasattr(x, "shape"):
            raise TypeError(f"x must be an array, got {type(x).__name__}")
        features = getattr(self.cell, "num_feature_axes", 1)
        batch_axes = x.ndim - 1 - features
        if batch_axes not in (0, 1):
            raise ValueError(
                f"x must be [time, batch, *features] ([batch, time, *features] with "
                f"batch_first=True) or [time, *features], with {features} feature axes for "
                f"this cell; got shape {tuple(x.shape)}"
            )
        x = jnp.asarray(x)
        if batch_axes and self.batch_first:
            x = jnp.swapaxes(x, 0, 1)
        if x.shape[0] == 0:
            raise ValueError(f"x has 0 time steps (shape {tuple(x.shape)}); need T ≥ 1")
        return x, batch_axes == 1


class Bidirectional(nn.Module):
    """Two :class:`Recurrent` (or modules with its call), ``forward`` run forward and
    ``backward`` run in reverse over the valid prefix of each sequence, as torch's
    ``bidirectional=True``: outputs concatenated on the last axis, forward first."""

    forward: nn.Module
    backward: nn.Module

    @nn.compact
    def __call__(self, x, carry=None, *, lengths=None):
        """Run both directions.

        Args:
          x, lengths: as :meth:`Recurrent.__call__` (both directions share them; their
            ``batch_first`` must agree).
          carry: ``None`` or the pair ``(forward_carry, backward_carry)``.

        Returns:
          ``(outputs, (forward_carry, backward_carry))``: outputs ``[..., F_fwd + F_bwd]``.
        """
        layouts = {getattr(m, "batch_first", False) for m in (self.forward, self.backward)}
        if len(layouts) > 1:
            raise ValueError("forward and backward must agree on batch_first")
        if carry is None:
            carry = (None, None)
        if not isinstance(carry, (tuple, list)) or len(carry) != 2:
            raise TypeError("carry must be None or a pair (forward_carry, backward_carry)")
        out_f, carry_f = self.forward(x, carry[0], lengths=lengths, reverse=False)
        out_b, carry_b = self.backward(x, carry[1], lengths=lengths, reverse=True)
        outputs = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=-1), out_f, out_b)
        return outputs, (carry_f, carry_b)
