"""Data-parallel training (``jaxrnn.parallel``): two host devices give one device's result.

XLA's device count is fixed when jax starts, so the two-device runs happen in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxrnn import parallel

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jaxrnn import parallel, runs
    from jaxrnn.tasks import get_task

    assert len(jax.devices()) == 2, jax.devices()
    task = get_task("index-recall")
    out = {}
    for devices in (1, 2):
        for on_device in (False, True):
            config = task.Config(n=128, batch_size=32, epochs=2, on_device_epoch=on_device)
            r = runs.fit(task, config, seed=0, progress=False, devices=devices)
            leaves = jax.tree.leaves(r.state.params)
            kind = {leaf.sharding.is_fully_replicated for leaf in leaves}
            out[f"{devices}-{on_device}"] = {
                "loss": [row["train_loss"] for row in r.history],
                "params": [np.asarray(leaf).ravel().tolist() for leaf in leaves],
                "replicated": sorted(kind),
                "devices": sorted({d.id for leaf in leaves for d in leaf.sharding.device_set}),
                "compiles": (r.steps.epoch if on_device else r.steps.train)._cache_size(),
            }
    # the gradient of one batch, split over the two devices and not
    model = task.model(config)
    data = task.data(config, np.random.default_rng(0))
    batch = {k: v[:32] for k, v in data["train"].items()}
    params = task.init(model, jax.random.key(0), batch)
    loss = lambda p, b: task.loss(model, p, b, key=jax.random.key(0), train=True)[0]  # noqa: E731
    grad = jax.jit(jax.grad(loss))
    mesh = parallel.data_mesh(2)
    one = grad(params, batch)
    two = grad(parallel.replicate(params, mesh), parallel.shard(batch, mesh))
    out["grad_error"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(1.0, np.max(np.abs(b))))
        for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one))
    )
    leaves = jax.tree.leaves(two)
    out["grad_devices"] = sorted({d.id for leaf in leaves for d in leaf.sharding.device_set})
    out["learning_rate"] = config.learning_rate
    json.dump(out, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def runs() -> dict:
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("on_device", [False, True])
def test_two_devices_train_like_one(runs, on_device):
    one, two = runs[f"1-{on_device}"], runs[f"2-{on_device}"]
    assert two["devices"] == [0, 1] and one["devices"] == [0]
    assert two["replicated"] == [True]  # params stay replicated after the updates
    # the state (its step too) and the fault carry go in as they come out: one compile a run
    assert two["compiles"] == one["compiles"] == 1
    # The same updates up to the order of the cross-device gradient sum (float32 rounding).
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    # Adam divides by sqrt(v): where a gradient is at rounding level, the order of the sum can
    # change m/sqrt(v) by O(1) and move that parameter by up to a step (learning_rate) per
    # update. Measured: 1 of 65,536 weights of the embedding/LSTM differs by 1.6e-5 = 0.016 lr,
    # the rest agree to rounding.
    diffs = np.concatenate(
        [np.abs(np.subtract(a, b)) for a, b in zip(two["params"], one["params"])]
    )
    assert np.mean(diffs > 1e-6) <= 1e-3, np.sort(diffs)[-10:]
    assert diffs.max() <= runs["learning_rate"], diffs.max()


def test_two_device_gradient_is_the_one_device_gradient(runs):
    """Adam hides a gradient's scale (a mean taken as a sum would train the same); the
    gradient itself must be the full batch's, to float32 parity tolerance."""
    assert runs["grad_devices"] == [0, 1]
    assert runs["grad_error"] <= 2e-5, runs["grad_error"]


def test_devices_beyond_what_jax_sees_is_a_clear_error():
    n = len(jax.devices())
    with pytest.raises(ValueError, match=rf"devices must be an int in \[1, {n}\].*XLA_FLAGS"):
        parallel.data_mesh(n + 1)


def test_batch_not_divisible_by_devices_names_the_array():
    mesh = parallel.data_mesh(1)
    batch = {"x": np.zeros((3, 4)), "y": np.zeros(())}
    with pytest.raises(ValueError, match=r"batch\['y'\] has shape \(\)"):
        parallel.shard(batch, mesh)
