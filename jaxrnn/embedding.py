"""Token embeddings that refuse out-of-range ids.

``torch.nn.Embedding`` raises ``IndexError`` for an id outside ``[0, num_embeddings)``; a plain
JAX gather silently clamps it (and ``jnp.take`` wraps negative ids). jaxrnn never does either:

* **Eagerly** (ids are concrete arrays, not traced): :func:`check_ids` raises
  :class:`TokenIdError` naming the argument, the valid range and the first bad id.
* **Under ``jit``** the check cannot raise from inside the compiled program, so an
  out-of-range id (negative ones included) looks up a row of NaN — loud, never a clamp — and
  :func:`checked` wraps any function with ``jax.experimental.checkify`` index checks so that
  the same lookup raises a ``JaxRuntimeError`` saying which index was out of bounds.
* **At the data boundary** the training engine calls :func:`check_ids` once on each
  dataset, on the host, before anything is compiled: this is the check that tasks rely on,
  at zero cost per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Array = jax.Array


class TokenIdError(IndexError, ValueError):
    """A token id outside ``[0, num_embeddings)`` (an ``IndexError`` as in torch)."""


def check_ids(ids, num_embeddings: int, name: str = "ids") -> None:
    """Raise :class:`TokenIdError` unless every id is an integer in ``[0, num_embeddings)``.

    Works on NumPy arrays and concrete JAX arrays; on a tracer (under ``jit``) only the dtype
    is checked — see the module docstring for what happens then.
    """
    ids_dtype = getattr(ids, "dtype", None) or np.asarray(ids).dtype
    if not jnp.issubdtype(ids_dtype, jnp.integer):
        raise TypeError(f"{name} must be integer token ids, got dtype {ids_dtype}")
    if isinstance(ids, jax.core.Tracer):
        return
    values = np.asarray(ids)
    bad = (values < 0) | (values >= num_embeddings)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TokenIdError(
            f"{name} must be in [0, {num_embeddings}) (num_embeddings={num_embeddings}); "
            f"got {name}[{', '.join(map(str, where))}] = {values[where]} "
            f"({int(bad.sum())} of {values.size} out of range)"
        )


def lookup(table: Array, ids: Array) -> Array:
    """``table[ids]`` for ``table: [V, F]``, ``ids: [...]`` → ``[..., F]``.

    An id outside ``[0, V)`` gives a NaN row (negative ids are not wrapped around).
    """
    num_embeddings = table.shape[0]
    ids = jnp.where(ids < 0, num_embeddings, ids)  # keep jnp.take from wrapping negatives
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def padding_index(padding_idx, num_embeddings: int) -> int | None:
    """torch's ``padding_idx`` checked and made non-negative (``-1`` is the last row)."""
    if padding_idx is None:
        return None
    if not isinstance(padding_idx, (int, np.integer)) or isinstance(padding_idx, bool):
        raise TypeError(f"padding_idx must be None or an int, got {padding_idx!r}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(
            f"padding_idx must be in [-{num_embeddings}, {num_embeddings}) "
            f"(num_embeddings={num_embeddings}), got {padding_idx}"
        )
    return int(padding_idx) % num_embeddings


def zero_row(init: Callable, row: int | None) -> Callable:
    """``init`` with row ``row`` set to zeros (torch's padding row); the same key use."""
    if row is None:
        return init

    def init_padded(key, shape, dtype=jnp.float32):
        return init(key, shape, dtype).at[row].set(0)

    return init_padded


def embed(table: Array, ids: Array, padding_idx: int | None = None) -> Array:
    """``table[ids]`` as ``torch.nn.Embedding``: table ``[V, F]``, ids ``[...]`` → ``[..., F]``.

    An out-of-range id gives a NaN row (:func:`lookup`). The row ``padding_idx`` (non-negative,
    see :func:`padding_index`) is looked up as is but gets no gradient: where ``ids ==
    padding_idx`` the output is ``stop_gradient``-ed, as torch zeroes that row's gradient.
    """
    out = lookup(table, ids)
    if padding_idx is None:
        return out
    return jnp.where((ids == padding_idx)[..., None], jax.lax.stop_gradient(out), out)


class Embed(nn.Module, kw_only=True):
    """``torch.nn.Embedding``: a ``[num_embeddings, features]`` table, initialised ``N(0, 1)``.

    The parameter is called ``embedding`` (as ``flax.linen.Embed``); ``jaxrnn.interop`` maps it
    to torch's ``weight``. ``padding_idx`` is torch's: that row starts at zero and gets no
    gradient (it is still looked up, whatever it holds); negative values count from the end.
    """

    num_embeddings: int
    features: int
    padding_idx: int | None = None
    param_dtype: Any = jnp.float32
    embedding_init: Callable = nn.initializers.normal(stddev=1.0)

    @nn.compact
    def __call__(self, ids) -> Array:
        """Look up token ids.

        Args:
          ids: ``[...]`` integers in ``[0, num_embeddings)`` (checked when concrete; under
            ``jit`` a bad id gives a NaN row).

        Returns:
          ``[..., features]``: ``embedding[ids]``.
        """
        check_ids(ids, self.num_embeddings)
        padding_idx = padding_index(self.padding_idx, self.num_embeddings)
        table = self.param(
            "embedding",
            zero_row(self.embedding_init, padding_idx),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )
        return embed(table, jnp.asarray(ids), padding_idx)


def checked(fn: Callable) -> Callable:
    """``jit(fn)`` that raises on an out-of-range embedding id (and any other OOB index).

    Uses ``checkify`` index checks; the error (a ``JaxRuntimeError``) names the index and the
    table's shape. Costs a little speed: use it to debug, and :func:`check_ids` on the data.
    """
    checked_fn = jax.jit(checkify.checkify(fn, errors=checkify.index_checks))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err, out = checked_fn(*args, **kwargs)
        err.throw()
        return out

    return wrapper
