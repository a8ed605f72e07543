"""Fixtures of the JAX-only tests (no torch here)."""

from __future__ import annotations

import jax
import numpy as np
import pytest


@pytest.fixture
def x64():
    """float64 on for one test, always switched back (also when the test fails)."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(autouse=True)
def _no_leaked_config():
    """Every test starts and ends with the same x64 setting; float32 matmuls at full
    precision (on GPU the default may be TF32)."""
    before = jax.config.read("jax_enable_x64")
    with jax.default_matmul_precision("highest"):
        yield
    assert jax.config.read("jax_enable_x64") == before, "a test leaked jax_enable_x64"


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: reproducible, distinct per test."""
    seed = sum(map(ord, request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
