"""Shared helpers of the JAX-only tests: tolerances, one comparison, random parameters, tarballs.

Tolerances are defined once, per tensor, as ``max|Δ| / max(1, max|ref|)``; NaN on either side
fails (see STYLE.md, "Tests").
"""

from __future__ import annotations

import io
import tarfile

import jax
import jax.numpy as jnp
import numpy as np

TOL64 = 1e-12  # float64 cells and layers against the NumPy reference
TOL64_LINEAR = 1e-10  # LinearRNN sequential vs associative (a different summation order)
TOL32 = 2e-5  # float32 against the float64 reference


def rel_err(got, ref) -> float:
    """``max|got - ref| / max(1, max|ref|)``, after checking shapes and NaNs."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != reference {ref.shape}"
    assert not np.isnan(ref).any(), "NaN in the reference"
    assert not np.isnan(got).any(), "NaN in the result"
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def assert_close(got, ref, tol: float, what: str = "") -> None:
    err = rel_err(got, ref)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.1g}"


def assert_tree_close(got, ref, tol: float, what: str = "") -> None:
    got_leaves, got_def = jax.tree.flatten(got)
    ref_leaves, ref_def = jax.tree.flatten(ref)
    assert got_def == ref_def, f"{what}: structure {got_def} != {ref_def}"
    for i, (g, r) in enumerate(zip(got_leaves, ref_leaves)):
        assert_close(g, r, tol, f"{what}[{i}]")


def random_params(shapes, seed: int, dtype=jnp.float64, scale: float = 0.6) -> dict:
    """A params tree shaped like ``shapes`` (e.g. ``jax.eval_shape(module.init, ...)``) with
    every leaf, biases included, drawn from U(-scale, scale) — never zeros or ones."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(shapes)
    values = [jnp.asarray(rng.uniform(-scale, scale, leaf.shape), dtype) for leaf in leaves]
    return jax.tree.unflatten(treedef, values)


def init_random(module, *args, seed: int = 0, dtype=jnp.float64, scale: float = 0.6) -> dict:
    """``{"params": ...}`` for ``module.init(key, *args)`` (shapes only, not compiled) with
    random values from :func:`random_params`."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    return {"params": random_params(shapes["params"], seed, dtype, scale)}


def to_numpy(params) -> dict:
    """Flat params → ``{name: float64 ndarray}`` for the reference."""
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def randn(rng: np.random.Generator, *shape, dtype=None):
    """Standard normal values; ``dtype=None``: float64 with x64 enabled, else float32."""
    values = rng.standard_normal(shape)
    return jnp.asarray(values) if dtype is None else jnp.asarray(values, dtype)


def traced_param_order(module, *args) -> list[str]:
    """The params' keys in creation order, read inside a traced ``init`` (nothing is
    compiled; ``jax.jit`` and ``eval_shape`` outputs come back with sorted keys)."""
    order = []

    def init(key):
        variables = module.init(key, *args)
        order.extend(variables["params"])
        return variables

    jax.eval_shape(init, jax.random.key(0))
    return order


def make_tar(path, files: dict[str, bytes]):
    """A ``.tar.gz`` at ``path`` holding ``{member name: bytes}``; returns ``path``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path
