"""Multi-process runs on ``jax.distributed``: joining, one writer, errors every process sees.

A run across N processes (one per host, each with its own devices) is JAX's multi-controller
model: every process runs the same program, ``jax.devices()`` lists every process's devices,
and a jitted step over a mesh of all of them is one SPMD computation whose cross-process sums
go over the network (gloo on CPUs, NCCL on GPUs, ICI on TPUs). This module holds what that
needs beyond :mod:`jaxrnn.parallel`'s sharding::

    initialize(Distributed("10.0.0.1:1234", num_processes=2, process_id=0))  # first thing
    with agree("writing the checkpoint"):  # a barrier that carries errors
        if is_writer():                    # process 0 writes the files
            save(...)

* :func:`initialize` calls ``jax.distributed.initialize`` (which must run before jax computes
  anything), with gloo for CPU collectives; ``True`` lets jax detect the cluster (SLURM,
  Open MPI, Cloud TPU).
* :func:`agree`: every process leaves the block together, or every process raises — the one
  that failed its own error, the others a :class:`ProcessFailedError` naming it. A bad
  resume on one host, or a full disk on process 0, never leaves the others waiting.
* :func:`reports_lost_peers`: a collective whose peer died (killed, out of memory) fails at
  once on gloo ("Connection closed by peer"); it becomes a :class:`PeerLostError` that says
  which process is gone and how to continue. A peer that hangs instead is declared dead by
  jax's coordination service after ``heartbeat_timeout`` seconds, and jax then terminates
  every process; if process 0 (which hosts that service) dies, jax terminates the others at
  once ("Terminating process because the JAX distributed service detected fatal errors").
* :func:`check_same`: one checksum per process says whether every process built the same
  train state (the same seed, config and checkpoint).
* :func:`leave`: how the command line ends a process after an error, without waiting in jax's
  shutdown barrier for a peer that is gone.

In one process (no ``jax.distributed``) all of it is a no-op: :func:`agree` is a plain block,
:func:`is_writer` is true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import re
import sys
import time
import zlib

import jax
import numpy as np
from jax.experimental import multihost_utils

MESSAGE_BYTES = 1024  # an error's text shared by agree (longer ones are cut)
EXIT_GRACE_SECONDS = 1.0  # process 0 leaves last: the others print their error first
# The persistent compilation cache across processes, from this jax version on: with 0.5.3 a
# second run whose processes load their steps from it dies in gloo (mismatched messages), with
# 0.9.1 one hangs before its first evaluation; 0.10.2 loads them and trains alike (tested).
CACHE_ACROSS_PROCESSES = (0, 10)
# Whether this jax's initialize takes heartbeat_timeout_seconds (0.5.3 does not)
HEARTBEAT_TIMEOUT = (
    "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters
)
# How a collective reports a peer that went away. Gloo (CPU): "Connection closed by peer",
# "Connection reset by peer", "Broken pipe"; the coordination service: "heartbeat timeout".
PEER_LOST = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "heartbeat timeout",
)


@dataclasses.dataclass(frozen=True)
class Distributed:
    """How this process joins a multi-process run: ``jax.distributed.initialize``'s arguments.

    Give ``coordinator_address``, ``num_processes`` and ``process_id`` together, or none of
    them for jax's cluster auto-detection (SLURM's ``srun``, Open MPI's ``mpirun``, Cloud TPU).

    Args:
      coordinator_address: ``"HOST:PORT"``: process 0's address, reachable from every
        process, and a free port on it; the same on every process.
      num_processes: how many processes the run has (N).
      process_id: this process's number, ``0 … N-1``; process 0 writes the run's files.
      initialization_timeout: seconds to wait for every process to join.
      heartbeat_timeout: seconds without a heartbeat after which jax declares a process dead
        and terminates the others (jax versions whose ``initialize`` lacks
        ``heartbeat_timeout_seconds``, such as 0.5.3, keep their own 100 s).
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    initialization_timeout: int = 300
    heartbeat_timeout: int = 100

    def __post_init__(self):
        given = [self.coordinator_address, self.num_processes, self.process_id]
        if any(v is not None for v in given) and any(v is None for v in given):
            raise ValueError(
                "distributed: give coordinator_address, num_processes and process_id together "
                "(or none of them, for jax's cluster auto-detection); got "
                f"coordinator_address={self.coordinator_address!r}, "
                f"num_processes={self.num_processes!r}, process_id={self.process_id!r}"
            )
        for name in ("num_processes", "initialization_timeout", "heartbeat_timeout"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"distributed: {name} must be an int >= 1, got {value!r}")
        if self.coordinator_address is not None:
            _check_address(self.coordinator_address)
            n, i = self.num_processes, self.process_id
            if not _is_int(i) or not 0 <= i < n:
                raise ValueError(
                    f"distributed: process_id must be an int in [0, {n - 1}] "
                    f"(num_processes={n}), got {i!r}"
                )

    @property
    def detect(self) -> bool:
        """Whether jax detects the cluster (no address given)."""
        return self.coordinator_address is None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_address(address) -> None:
    host, _, port = str(address).rpartition(":")
    if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"distributed: coordinator_address must be 'HOST:PORT' (process 0's address and a "
            f"free port, e.g. '10.0.0.1:1234'), got {address!r}"
        )


def as_distributed(distributed) -> Distributed | None:
    """``fit``'s ``distributed`` argument as a :class:`Distributed`: None or False → None
    (one process), True → ``Distributed()`` (jax's cluster auto-detection)."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        return Distributed()
    if not isinstance(distributed, Distributed):
        raise TypeError(
            "distributed must be None, True (jax's cluster auto-detection) or a "
            f"jaxrnn.distributed.Distributed, got {type(distributed).__name__}"
        )
    return distributed


def initialize(distributed: Distributed | bool | None) -> None:
    """Join the multi-process run ``distributed`` describes (see :func:`as_distributed`):
    ``jax.distributed.initialize``, with gloo collectives for CPU devices. Call it before jax
    computes anything. A process that already joined (e.g. ``jaxrnn train``'s flags did it) is
    checked against ``distributed`` and left as it is; None does nothing."""
    spec = as_distributed(distributed)
    if spec is None:
        return
    if jax.distributed.is_initialized():
        _check_joined(spec)
        return
    previous = jax.config.jax_cpu_collectives_implementation
    if previous is None:  # unset (jax 0.5.3): then jax picks gloo itself; say so
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeouts = {"initialization_timeout": spec.initialization_timeout}
    if HEARTBEAT_TIMEOUT:  # older jax: a fixed 100 s (10 missed heartbeats, 10 s apart)
        timeouts["heartbeat_timeout_seconds"] = spec.heartbeat_timeout
    try:
        jax.distributed.initialize(
            coordinator_address=spec.coordinator_address,
            num_processes=spec.num_processes,
            process_id=spec.process_id,
            **timeouts,
        )
    except (RuntimeError, ValueError) as e:
        jax.config.update("jax_cpu_collectives_implementation", previous)
        raise _initialize_error(spec, e) from e


def _initialize_error(spec: Distributed, error: Exception) -> Exception:
    """jax's error from ``jax.distributed.initialize``, said in this library's terms."""
    if "must be called before" in str(error):
        return RuntimeError(
            "distributed: jax.distributed.initialize must run before jax computes anything, "
            "and this process has already used jax (an array, jax.devices(), a jitted "
            "call...). Call jaxrnn.distributed.initialize(Distributed(...)) first thing in "
            "the script, or use `jaxrnn train TASK --coordinator-address HOST:PORT "
            "--num-processes N --process-id I`"
        )
    if spec.detect:
        return ValueError(
            "distributed=True: jax found no cluster to join (it detects SLURM's srun, Open "
            "MPI's mpirun and Cloud TPU) and said: "
            f"{error}. Give coordinator_address, num_processes and process_id instead"
        )
    return type(error)(f"distributed: jax.distributed.initialize failed: {error}")


def _check_joined(spec: Distributed) -> None:
    if spec.detect:
        return
    have = (jax.process_count(), jax.process_index())
    if have != (spec.num_processes, spec.process_id):
        raise ValueError(
            f"distributed: this process already joined a run as process {have[1]} of "
            f"{have[0]}, not process {spec.process_id} of {spec.num_processes} as asked"
        )


def joined() -> bool:
    """Whether this process is one of several of a ``jax.distributed`` run (without starting
    jax's backend when it is not)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def may_cache_compilations() -> bool:
    """Whether this process may use JAX's persistent compilation cache: alone, always; as one
    of several, from jax :data:`CACHE_ACROSS_PROCESSES` on."""
    return jax.process_count() == 1 or jax.__version_info__ >= CACHE_ACROSS_PROCESSES


def is_writer() -> bool:
    """Whether this process writes the run's files and shows its progress: process 0 (the
    only process of a single-process run)."""
    return jax.process_index() == 0


# ----------------------------------------------------------------------------- errors


class ProcessFailedError(RuntimeError):
    """Another process of the run failed; ``process`` is its number (None if unknown)."""

    def __init__(self, message: str, process: int | None = None):
        super().__init__(message)
        self.process = process


class PeerLostError(ProcessFailedError):
    """A collective lost a peer: another process died or its host became unreachable."""


@contextlib.contextmanager
def agree(what: str):
    """Every process leaves this block together — a barrier — or every process raises: the
    one whose block raised re-raises its own error, the others raise
    :class:`ProcessFailedError` naming it and its error. ``what`` says in words what the
    block did ("writing the checkpoint").

    The block must hold no collective (no jitted step over the mesh): a process that failed
    before it would meet the others' collective with the agreement's. In one process the
    block's errors pass through as they are.
    """
    if jax.process_count() == 1:
        yield
        return
    try:
        yield
    except Exception as error:
        _share(what, error)
        raise
    _share(what, None)


def _share(what: str, error: Exception | None) -> None:
    """Tell every process whether this one failed ``what`` (and how); raise
    :class:`ProcessFailedError` here if another one did and this one did not."""
    mine = np.zeros(1 + MESSAGE_BYTES, np.uint8)
    if error is not None:
        text = f"{type(error).__name__}: {error}".encode()[:MESSAGE_BYTES]
        mine[0], mine[1 : 1 + len(text)] = 1, np.frombuffer(text, np.uint8)
    rows = multihost_utils.process_allgather(mine)  # [processes, 1 + MESSAGE_BYTES]
    failed = [i for i, row in enumerate(rows) if row[0]]
    if error is not None or not failed:
        return
    first = failed[0]
    text = bytes(rows[first][1:]).rstrip(b"\0").decode(errors="replace")
    more = f" (and processes {failed[1:]})" if len(failed) > 1 else ""
    raise ProcessFailedError(
        f"process {first}{more} of {len(rows)} failed while {what}: {text}", process=first
    )


@contextlib.contextmanager
def reports_lost_peers():
    """Turn a collective's error about a peer that went away (:data:`PEER_LOST`) into a
    :class:`PeerLostError` naming the process that is gone. Also a decorator."""
    try:
        yield
    except Exception as error:
        if not any(sign in str(error) for sign in PEER_LOST) or jax.process_count() == 1:
            raise
        n, me = jax.process_count(), jax.process_index()
        others = [i for i in range(n) if i != me]
        who = f"process {others[0]}" if len(others) == 1 else f"one of processes {others}"
        said = re.sub(r"([^:]{4,80}: )\1+", r"\1", str(error))  # "Error dispatching…: " ×7
        raise PeerLostError(
            f"process {me} of {n} lost {who} (killed, crashed, out of memory, or its host "
            f"went down: its own log says why): {said}. This process stops too; start "
            "every process again with --resume (fit(..., resume=True)) to continue from the "
            "last checkpoint",
            process=others[0] if len(others) == 1 else None,
        ) from error


def check_same(tree, what: str) -> None:
    """Raise ``ValueError`` on every process if ``tree`` (arrays) is not the same on every
    process — e.g. the train state after a resume from different checkpoint files. One
    checksum per process crosses the network, not the arrays."""
    if jax.process_count() == 1:
        return
    digest = 0
    for leaf in jax.tree.leaves(tree):
        value = np.ascontiguousarray(jax.device_get(leaf))
        digest = zlib.crc32(f"{value.shape}{value.dtype}".encode(), digest)
        digest = zlib.crc32(value.tobytes(), digest)
    digests = multihost_utils.process_allgather(np.asarray([digest], np.uint32)).ravel()
    differ = [i for i, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise ValueError(
            f"{what} differs between processes: processes {differ} hold another than process "
            "0's. Every process must build it alike (the same seed, config and checkpoint "
            "file: out_dir on a file system every host shares)"
        )


def leave(code: int) -> int:
    """End this process of a multi-process run with exit status ``code`` now, after an
    error it has printed: jax's shutdown barrier at exit would wait for a peer that died or
    is stuck in a collective. Process 0 hosts jax's coordination service, and jax terminates
    the others when it goes, so it leaves last (:data:`EXIT_GRACE_SECONDS`). In one process:
    returns ``code``."""
    if not joined():
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    if jax.process_index() == 0:
        time.sleep(EXIT_GRACE_SECONDS)
    os._exit(code)
