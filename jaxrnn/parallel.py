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

Across processes (:mod:`jaxrnn.distributed`) the same code runs on every process: the mesh
spans every process's devices, ordered by process, so each process's devices hold one
contiguous block of each batch's rows. Every process computes the same global batch (host
NumPy, from the same seed), :func:`shard` keeps only its block and assembles the global array
with ``jax.make_array_from_process_local_data`` — nothing is compared or sent between processes
but the gradient sum. :func:`replicate` places each process's copy of the state on its own
devices.
"""

from __future__ import annotations

import collections

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def data_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh (``"batch"``) over the first ``devices`` devices (None: all).

    In a multi-process run: over every process's devices (``devices`` None or all of them),
    ordered by process.
    """
    available = jax.devices()
    if jax.process_count() > 1:
        return _global_mesh(available, devices)
    n = len(available) if devices is None else devices
    if not isinstance(n, int) or n < 1 or n > len(available):
        raise ValueError(
            f"devices must be an int in [1, {len(available)}] (the {jax.default_backend()} "
            f"devices jax sees), got {devices!r}; on a CPU, set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count=N before jax is imported"
        )
    return Mesh(np.asarray(available[:n]), (AXIS,))


def _global_mesh(available, devices) -> Mesh:
    if devices is not None and devices != len(available):
        raise ValueError(
            f"devices: a multi-process run trains on every process's devices; give None or "
            f"{len(available)} (all {jax.process_count()} processes' devices), got {devices!r}"
        )
    per_process = collections.Counter(d.process_index for d in available)
    if len(set(per_process.values())) > 1:
        raise ValueError(
            "data-parallel across processes needs the same number of devices on every "
            f"process; devices per process: {dict(sorted(per_process.items()))}"
        )
    ordered = sorted(available, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(ordered), (AXIS,))


def replicate(tree, mesh: Mesh):
    """Every array of ``tree`` on every device of ``mesh``.

    Across processes each process places its own copy, which must be the same everywhere
    (:func:`jaxrnn.distributed.check_same` checks it).
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if not mesh.is_multi_process:
        return jax.device_put(tree, sharding)

    def place(leaf):
        value = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_process_local_data(sharding, value, value.shape)

    return jax.tree.map(place, tree)


def shard(batch, mesh: Mesh, axis: int = 0):
    """Each array of ``batch`` split along its batch axis (``axis``: 0 for one batch, 1 for an
    epoch's stack ``[steps, batch, ...]``) over ``mesh``; the rest replicated.

    The batch size must be a multiple of the number of devices (a clear error otherwise).
    Across processes, ``batch`` is the global batch (the same on every process); each process
    places only its rows.
    """
    n = mesh.devices.size
    for name, value in batch.items():
        if np.ndim(value) <= axis or np.shape(value)[axis] % n:
            raise ValueError(
                f"data-parallel: batch[{name!r}] has shape {np.shape(value)}; its batch axis "
                f"({axis}) must be a multiple of the {n} devices: choose a batch_size that is"
            )
    sharding = NamedSharding(mesh, PartitionSpec(*[None] * axis, AXIS))
    if not mesh.is_multi_process:
        return jax.device_put(batch, sharding)
    return {name: _process_rows(value, sharding, axis) for name, value in batch.items()}


def _process_rows(value, sharding: NamedSharding, axis: int) -> jax.Array:
    """The global array of ``value`` from this process's block of rows along ``axis``."""
    shape = np.shape(value)
    rows = [index[axis] for index in sharding.addressable_devices_indices_map(shape).values()]
    start, stop = min(r.start for r in rows), max(r.stop for r in rows)
    local = np.asarray(value)[(slice(None),) * axis + (slice(start, stop),)]
    return jax.make_array_from_process_local_data(sharding, local, shape)


def local(tree):
    """``tree`` with each replicated array that spans processes replaced by its copy on this
    process's first device (others as they are): for work one process does alone (process 0's
    plots and reports), which must not launch a computation on every process's devices."""

    def one(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if not leaf.is_fully_replicated:
            raise ValueError(
                f"local: an array of shape {leaf.shape} is sharded across processes "
                f"({leaf.sharding}); only replicated arrays have a whole copy on each process"
            )
        return leaf.addressable_data(0)

    return jax.tree.map(one, tree)
