"""The time loop: one masked ``lax.scan`` for forward, reverse and variable lengths.

``masked_scan`` steps a cell over time-major pre-activations ``gx: [T, B, G]``. With a
``mask: [T, B]`` (``t < length``) the carry updates only where the mask is true and the
outputs elsewhere are exactly zero. Scanning with ``reverse=True`` then starts each sequence
at its own last valid step, holding the initial state through the padding — which is what
torch's packed sequences do, with no index juggling.

``recurrent_scan`` runs the same loop for the layers, with a hand-written backward pass (the
``W_hh`` gradient as one matmul after the loop, gate activations saved instead of recomputed).

``linear_recurrence`` solves ``h_t = A h_{t-1} + u_t`` either sequentially or with
``lax.associative_scan`` (O(log T) depth), with one signature and the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .cells import CoreVJP, affine, output_of

Array = jax.Array


def masked_scan(
    step: Callable,
    carry,
    gx: Array,
    mask: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
):
    """Run ``carry = step(carry, gx[t])`` over time.

    Args:
      step: ``(carry, gx_t [B, G]) -> carry``; the output at each step is ``h``
        (:func:`jaxrnn.cells.output_of`).
      carry: initial state, a pytree of ``[B, ...]`` arrays.
      gx: ``[T, B, G]`` input pre-activations, time-major.
      mask: optional ``[T, B]`` bool, true where ``t < length``.
      reverse: scan from ``t = T-1`` down to 0.
      unroll: passed to ``lax.scan``.

    Returns:
      ``(final_carry, ys)`` with ``ys: [T, B, H]``; where the mask is false ``ys`` is 0 and
      the carry is left untouched.
    """
    if mask is None:

        def body(carry, g):
            carry = step(carry, g)
            return carry, output_of(carry)

        return jax.lax.scan(body, carry, gx, reverse=reverse, unroll=unroll)

    def masked_body(carry, inputs):
        g, m = inputs
        m = m[:, None]  # [B, 1]
        new = step(carry, g)
        carry = jax.tree.map(lambda n, o: jnp.where(m, n, o), new, carry)
        return carry, jnp.where(m, output_of(new), 0)

    return jax.lax.scan(masked_body, carry, (gx, mask), reverse=reverse, unroll=unroll)


def recurrent_scan(
    core: CoreVJP,
    carry,
    gx: Array,
    weight_hh: Array,
    bias_hh: Array | None = None,
    mask: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
):
    """``masked_scan`` of ``carry = core(carry, gx[t], h W_hhᵀ + b_hh)``, with a faster backward.

    Same arguments and results as :func:`masked_scan` for the step
    ``core(carry, g, affine(h, weight_hh, bias_hh))``, where ``core`` is a
    :class:`jaxrnn.cells.CoreVJP` (a kind's ``cells.KINDS[name].vjp``): the elementwise core
    with its hand-written derivative. The numbers are the same; what differs is the gradient's
    shape of work:

    * Plain autodiff of the scan adds ``d_ghᵀ h`` into a ``[G·H, H]`` carry at every step —
      a matmul with only ``B`` rows of depth, bound by memory traffic. Here the forward
      saves ``h_{t-1}``; the backward loop computes only ``d_gh_t`` and
      ``d_h_{t-1} = d_gh_t W_hh``, and afterwards::

          dW_hh = Σ_t d_gh_tᵀ h_{t-1}      one [G·H, T·B] × [T·B, H] matmul
          db_hh = Σ_t Σ_b d_gh_t

    * The forward saves the activated gates, so the backward loop is products only; autodiff
      would recompute (or save and re-read) every sigmoid and tanh.

    A ``jax.custom_vjp``, which forward-mode autodiff cannot differentiate: when ``jax.jvp``,
    ``jax.jacfwd``, ``jax.linearize`` or a forward-over-reverse transform (``jax.hessian``)
    traces the inputs, the same loop runs as :func:`masked_scan` under plain autodiff instead
    (same numbers). One case cannot be seen from here: ``jax.jvp`` of a function jitted
    *before* the jvp (``jax.jvp(jax.jit(f), ...)``) meets JAX's own error; jit the jvp
    (``jax.jit(lambda x: jax.jvp(f, ...))``) or use plain autodiff (the layers'
    ``fused_backward=False``).
    """
    if forward_mode(carry, gx, weight_hh, bias_hh):

        def step(carry, g):
            return core.fwd(carry, g, affine(output_of(carry), weight_hh, bias_hh))[0]

        return masked_scan(step, carry, gx, mask, reverse=reverse, unroll=unroll)
    return _recurrent_scan(core, reverse, unroll, carry, gx, weight_hh, bias_hh, mask)


def forward_mode(*trees) -> bool:
    """Whether forward-mode autodiff traces any leaf of ``trees``: a ``jax.jvp`` tracer
    (``jvp``, ``jacfwd``, and the outer transform of ``hessian``) or a ``jax.linearize`` one,
    found through the tracers of other transforms (``vmap``'s, reverse mode's) wrapped around
    it. Reverse mode alone (``grad``, ``vjp``) is not forward mode."""
    for leaf in jax.tree.leaves(trees):
        while isinstance(leaf, jax.core.Tracer):
            kind = type(leaf).__name__
            if kind == "JVPTracer":
                return True
            if kind == "LinearizeTracer" and not getattr(leaf._trace, "is_vjp", True):
                return True
            leaf = getattr(leaf, "primal", getattr(leaf, "val", None))
    return False


def _select(m, new, old):
    """Per sequence: ``new`` where ``m [B]`` is true, else ``old`` (every leaf ``[B, ...]``)."""
    return jax.tree.map(lambda n, o: jnp.where(m[:, None], n, o), new, old)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrent_scan(core, reverse, unroll, carry, gx, weight_hh, bias_hh, mask):
    return _recurrent_fwd(core, reverse, unroll, carry, gx, weight_hh, bias_hh, mask)[0]


def _recurrent_fwd(core, reverse, unroll, carry, gx, weight_hh, bias_hh, mask):
    def body(carry, inputs):
        g, m = inputs
        h = output_of(carry)
        new, res = core.fwd(carry, g, affine(h, weight_hh, bias_hh))
        y = output_of(new)
        if m is not None:
            new, y = _select(m, new, carry), jnp.where(m[:, None], y, 0)
        return new, (y, res, h)

    # Each gate's block as its own [T, B, H] array: XLA:CPU runs the elementwise step several
    # times faster when every gate slices its own input than when all slice one [T, B, G·H].
    gates = weight_hh.shape[0] // weight_hh.shape[1]  # G (W_hh is [G·H, H])
    xs = tuple(jnp.split(gx, gates, axis=-1)) if gates > 1 else gx
    final, (ys, res, h_prev) = jax.lax.scan(body, carry, (xs, mask), reverse=reverse, unroll=unroll)
    return (final, ys), (res, h_prev, weight_hh, bias_hh, mask)


def _recurrent_bwd(core, reverse, unroll, residuals, cotangents):
    res, h_prev, weight_hh, bias_hh, mask = residuals
    d_final, d_ys = cotangents
    gates = weight_hh.shape[0] // weight_hh.shape[1]  # G (W_hh is [G·H, H])
    w_blocks = jnp.split(weight_hh, gates, axis=0)  # G × [H, H]

    def add_to_h(d_carry, d_h):
        if isinstance(d_carry, tuple):
            return (d_carry[0] + d_h, *d_carry[1:])
        return d_carry + d_h

    def body(d_carry, inputs):
        r, m, dy = inputs
        d_new = add_to_h(d_carry, dy)  # the output y_t is the new h
        if m is not None:  # a held step passes d_carry straight through
            zeros = jax.tree.map(jnp.zeros_like, d_carry)
            d_new, d_held = _select(m, d_new, zeros), _select(m, zeros, d_carry)
        d_prev, d_g, d_gh = core.bwd(r, d_new)  # G blocks [B, H] each (d_g None: = d_gh)
        d_h = sum(d @ w for d, w in zip(d_gh, w_blocks))  # the path through h W_hhᵀ
        d_prev = add_to_h(d_prev, d_h)
        if m is not None:
            d_prev = jax.tree.map(jnp.add, d_prev, d_held)
        return d_prev, (d_g, d_gh)

    d_carry, (d_gx, d_gh) = jax.lax.scan(
        body, d_final, (res, mask, d_ys), reverse=not reverse, unroll=unroll
    )
    d_gh = jnp.concatenate(d_gh, axis=-1)  # [T, B, G·H]
    d_gx = d_gh if d_gx is None else jnp.concatenate(d_gx, axis=-1)
    d_weight = jnp.einsum("tbg,tbh->gh", d_gh, h_prev).astype(weight_hh.dtype)
    d_bias = None if bias_hh is None else d_gh.sum((0, 1)).astype(bias_hh.dtype)
    return d_carry, d_gx, d_weight, d_bias, None


_recurrent_scan.defvjp(_recurrent_fwd, _recurrent_bwd)


def length_mask(lengths: Array, time: int) -> Array:
    """``[T, B]`` bool, true where ``t < lengths[b]``."""
    return jnp.arange(time)[:, None] < lengths[None, :]


def linear_recurrence(
    weight_hh: Array, u: Array, h0: Array, *, associative: bool = False, unroll: int = 1
) -> Array:
    """All states of ``h_t = W_hh h_{t-1} + u_t``, ``t = 0..T-1``, from ``h_{-1} = h0``.

    Args:
      weight_hh: ``[H, H]``.
      u: ``[T, B, H]`` the input terms (``W_ih x_t + b_ih + b_hh``).
      h0: ``[B, H]``.
      associative: use ``lax.associative_scan`` over the affine maps ``h ↦ A h + u``
        (depth O(log T), work O(T H³)) instead of a sequential scan (work O(T B H²)).

    Returns:
      ``[T, B, H]``.
    """
    if not associative:

        def body(h, u_t):
            h = h @ weight_hh.T + u_t
            return h, h

        return jax.lax.scan(body, h0, u, unroll=unroll)[1]

    # Fold the initial state into the first input: h_0 = A h0 + u_0.
    u = u.at[0].add(h0 @ weight_hh.T)
    A = jnp.broadcast_to(weight_hh, (u.shape[0], *weight_hh.shape))  # [T, H, H]

    def compose(earlier, later):
        # (A2, u2) ∘ (A1, u1) = (A2 A1, A2 u1 + u2): apply `earlier`, then `later`.
        A1, u1 = earlier
        A2, u2 = later
        return A2 @ A1, jnp.einsum("tij,tbj->tbi", A2, u1) + u2

    return jax.lax.associative_scan(compose, (A, u))[1]
