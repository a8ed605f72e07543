"""Fixtures of the parity suite: deterministic seeds, x64 switched on and always back.

Without torch the suite is skipped by ``pytest.importorskip("torch")`` at the top of each test
module (not here: pytest imports the conftest of a directory named on the command line before
collection, where a skip is a crash rather than a skip — ``pytest parity`` would fail). So
torch is imported lazily in these fixtures.
"""

from __future__ import annotations

import random

import jax
import numpy as np
import pytest

SEED = 0


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    """The tensors are tiny: one torch thread, no contention with XLA on small machines."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    """Every global RNG seeded before each test (the checks draw from their own generators,
    seeded from the case id, so results do not depend on test order either)."""
    torch = pytest.importorskip("torch")
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


@pytest.fixture(autouse=True)
def _no_leaked_config():
    """Each test starts and ends with the same ``jax_enable_x64``."""
    before = jax.config.read("jax_enable_x64")
    yield
    assert jax.config.read("jax_enable_x64") == before, "a test leaked jax_enable_x64"


@pytest.fixture
def x64():
    """``jax_enable_x64`` on for one test, always switched back (also when it fails)."""
    from parity.checks import x64 as enable_x64

    with enable_x64(True):
        yield


@pytest.fixture
def parity_mode(dtype):
    """For a test parametrized by ``dtype``: x64 on for float64 (always switched back), matmul
    precision "highest" in JAX, TF32 off in torch."""
    from parity.checks import parity_mode as mode

    with mode(dtype):
        yield dtype
