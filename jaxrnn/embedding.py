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


class Embed(nn.Module, kw_only=True):
    """``torch.nn.Embedding``: a ``[num_embeddings, features]`` table, initialised ``N(0, 1)``.

    The parameter is called ``embedding`` (as ``flax.linen.Embed``); ``jaxrnn.interop`` maps it
    to torch's ``weight``. ``ids: [...]`` ints → ``[..., features]``.
    """

    num_embeddings: int
    features: int
    param_dtype: Any = jnp.float32
    embedding_init: Callable = nn.initializers.normal(stddev=1.0)

    @nn.compact
    def __call__(self, ids) -> Array:
        check_ids(ids, self.num_embeddings)
        table = self.param(
            "embedding",
            self.embedding_init,
            (self.num_embeddings, self.features),
            self.param_dtype,
        )
        return lookup(table, jnp.asarray(ids))


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
