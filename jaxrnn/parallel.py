"""Data-parallel training with ``jax.sharding``: the batch split across devices, params replicated.

Nothing in the train step changes. ``jax.jit`` compiles for the shardings of its inputs
(GSPMD): with the batch's leading axis sharded over a one-axis ``Mesh`` and the train state
replicated, each device runs the model on its share of the batch, and the gradient — a mean
over the batch — becomes a cross-device sum that XLA inserts. The result equals one device's
up to the order of that sum.

    mesh = data_mesh(2)                         # the first 2 devices, axis "batch"
    state = replicate(state, mesh)
    state, metrics, fault = train_step(state, shard(batch, mesh), fault)

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before jax is imported)
gives N host devices to try it; ``jaxrnn train TASK --devices N`` uses it in the engine.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def data_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh (``"batch"``) over the first ``devices`` devices (None: all)."""
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not isinstance(n, int) or n < 1 or n > len(available):
        raise ValueError(
            f"devices must be an int in [1, {len(available)}] (the {jax.default_backend()} "
            f"devices jax sees), got {devices!r}; on a CPU, set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count=N before jax is imported"
        )
    return Mesh(np.asarray(available[:n]), (AXIS,))


def replicate(tree, mesh: Mesh):
    """Every array of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard(batch, mesh: Mesh, axis: int = 0):
    """Each array of ``batch`` split along its batch axis (``axis``: 0 for one batch, 1 for an
    epoch's stack ``[steps, batch, ...]``) over ``mesh``; the rest replicated.

    The batch size must be a multiple of the number of devices (a clear error otherwise).
    """
    n = mesh.devices.size
    for name, value in batch.items():
        if np.ndim(value) <= axis or np.shape(value)[axis] % n:
            raise ValueError(
                f"data-parallel: batch[{name!r}] has shape {np.shape(value)}; its batch axis "
                f"({axis}) must be a multiple of the {n} devices: choose a batch_size that is"
            )
    spec = PartitionSpec(*[None] * axis, AXIS)
    return jax.device_put(batch, NamedSharding(mesh, spec))
