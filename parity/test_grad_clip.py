"""``grad_clip``: the engine's global-norm clipping is ``torch.nn.utils.clip_grad_norm_``.

torch: ``total = ‖(‖g_1‖, …, ‖g_n‖)‖₂`` over every parameter, each gradient multiplied by
``min(1, max_norm / (total + 1e-6))``. The engine (``make_optimizer`` with ``grad_clip > 0``)
chains ``jaxrnn.engine.clip_grad_norm``, the same formula, before Adam: clipped gradients and
the parameters after clipped Adam steps agree to float64 rounding. (``optax.clip_by_global_norm``
has no 1e-6 and would differ by a relative ``1e-6 / total``: see the last test.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrnn.engine import clip_grad_norm, make_optimizer
from jaxrnn.task import TaskConfig

torch = pytest.importorskip("torch")

SHAPES = {
    "rnn.weight_ih_l0": (12, 5),
    "rnn.weight_hh_l0": (12, 3),
    "rnn.bias_ih_l0": (12,),
    "fc.weight": (2, 3),
    "fc.bias": (2,),
}


def _close(got, ref, tol):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    err = np.max(np.abs(got - ref)) / max(1.0, np.max(np.abs(ref)))
    assert not np.isnan(got).any() and err <= tol, err


@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e3], ids=["hard", "clipped", "not_clipped"])
def test_grad_clip_is_torch_clip_grad_norm(x64, max_norm):
    rng = np.random.default_rng(7)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    steps = [
        {k: rng.standard_normal(s) * scale for k, s in SHAPES.items()} for scale in (0.3, 2.0, 0.01)
    ]
    lr = 0.01
    theirs = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    adam = torch.optim.Adam(theirs.values(), lr=lr)
    tx = make_optimizer(TaskConfig(learning_rate=lr, grad_clip=max_norm))
    ours = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(ours)
    clipped_any = False
    for grads in steps:
        for k, p in theirs.items():
            p.grad = torch.tensor(grads[k])
        total = torch.nn.utils.clip_grad_norm_(list(theirs.values()), max_norm)
        g = jax.tree.map(jnp.asarray, grads)
        assert float(optax.tree.norm(g)) == pytest.approx(float(total), rel=1e-12)
        clipped_grads, _ = clip_grad_norm(max_norm).update(g, optax.EmptyState())
        clipped_any |= float(total) > max_norm
        for k in SHAPES:
            _close(clipped_grads[k], theirs[k].grad.numpy(), 1e-14)
        adam.step()
        updates, opt_state = tx.update(g, opt_state, ours)
        ours = optax.apply_updates(ours, updates)
    assert clipped_any == (max_norm < 1e3)  # the cases do what their names say
    for k in SHAPES:
        _close(ours[k], theirs[k].detach().numpy(), 1e-14)


def test_optax_clip_by_global_norm_is_not_torch_clipping(x64):
    """Why the engine has its own clip: optax's differs from torch's by 1e-6 / ‖g‖."""
    g = {"a": jnp.asarray([3.0, -4.0])}  # ‖g‖ = 5
    ours, _ = clip_grad_norm(1.0).update(g, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(1.0).update(g, optax.EmptyState())
    np.testing.assert_allclose(ours["a"], np.array([3.0, -4.0]) / (5.0 + 1e-6), rtol=1e-15)
    assert not np.allclose(ours["a"], theirs["a"], rtol=1e-8, atol=0)
