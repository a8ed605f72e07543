"""``jaxrnn.verify``: a correct port passes; a port with one planted error fails, naming it.

The ports are small models a user might write: torch Linear → LSTM → Linear with a custom op
against Flax Dense + ``jaxrnn.LSTM`` + a hand-written Linear; ``nn.GRU`` against
``jaxrnn.GRU``; and a hand-written Flax LSTM (its own scan) against ``nn.LSTM``. Each planted
error — a bias left out of the forward, two gates swapped, a gradient stopped — fails and
names the tensor; a mismatch of names, shapes, output structure or x64 raises clearly.
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

import jaxrnn  # noqa: E402
from jaxrnn.verify import TOLERANCES, Report, relative_error  # noqa: E402
from parity.checks import x64 as set_x64  # noqa: E402

I, H0, H, O, B, T = 3, 5, 4, 2, 2, 7  # input, projection, hidden, output, batch, time
SCALE = 0.6  # every torch parameter ~ U(-0.6, 0.6), biases included


def randomize(module, seed: int):
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-SCALE, SCALE, tuple(p.shape))))
    return module


def shapes(module, *args):
    """The params' structure and shapes only (verify takes nothing else from them)."""
    return jax.eval_shape(module.init, jax.random.key(0), *args)["params"]


# ----------------------------------------------------------------------------- the models


class TorchNet(torch.nn.Module):
    """Linear → tanh → LSTM (batch first) → Linear → SiLU; outputs a dict with a nested tuple."""

    def __init__(self, hidden: int = H):
        super().__init__()
        self.proj = torch.nn.Linear(I, H0)
        self.lstm = torch.nn.LSTM(H0, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, O)

    def forward(self, x):
        out, (h_n, c_n) = self.lstm(torch.tanh(self.proj(x)))
        y = self.head(out)
        return {"y": y * torch.sigmoid(y), "state": (h_n, c_n)}


class Linear(nn.Module):
    """torch's Linear by hand (``kernel [in, out]``, ``bias``), with planted errors:
    ``error="drop_bias"`` leaves the bias out of the forward, ``"frozen_bias"`` adds it under
    ``stop_gradient`` (the forward is right, its gradient is zero)."""

    features: int
    error: str = ""

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.error == "drop_bias":
            return x @ kernel
        return x @ kernel + (jax.lax.stop_gradient(bias) if self.error == "frozen_bias" else bias)


class FlaxNet(nn.Module):
    """The port of :class:`TorchNet`: submodule names are the torch attribute names."""

    error: str = ""
    lstm_name: str = "lstm"
    structure: str = "dict"

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(H0, name="proj")(x))
        out, (h_n, c_n) = jaxrnn.LSTM(hidden_size=H, batch_first=True, name=self.lstm_name)(h)
        y = Linear(O, self.error, name="head")(out)
        y = y * jax.nn.sigmoid(y)
        return {"y": y, "state": (h_n, c_n)} if self.structure == "dict" else (y, (h_n, c_n))


class HandLSTM(nn.Module):
    """A hand-written port of one-layer ``torch.nn.LSTM`` (``x [T, B, I]``, ``hx`` of
    ``[1, B, H]``), its fused pre-activations split into gates in the order ``gates``
    (torch's: i, f, g, o)."""

    hidden_size: int
    gates: str = "ifgo"

    @nn.compact
    def __call__(self, x, h0, c0):
        H4, init = 4 * self.hidden_size, nn.initializers.uniform()
        w_ih = self.param("weight_ih_l0", init, (H4, x.shape[-1]))
        w_hh = self.param("weight_hh_l0", init, (H4, self.hidden_size))
        b_ih = self.param("bias_ih_l0", init, (H4,))
        b_hh = self.param("bias_hh_l0", init, (H4,))

        def step(carry, gx):
            h, c = carry
            parts = dict(zip(self.gates, jnp.split(gx + h @ w_hh.T + b_hh, 4, axis=-1)))
            i, f, o = (jax.nn.sigmoid(parts[k]) for k in "ifo")
            c = f * c + i * jnp.tanh(parts["g"])
            h = o * jnp.tanh(c)
            return (h, c), h

        (h, c), out = jax.lax.scan(step, (h0[0], c0[0]), x @ w_ih.T + b_ih)
        return out, (h[None], c[None])


def net_inputs(seed: int = 0) -> tuple[np.ndarray]:
    return (np.random.default_rng(seed).standard_normal((B, T, I)),)


def verify_net(error: str = "", dtype: str = "float64", **kwargs) -> Report:
    model = FlaxNet(error=error)
    x = net_inputs()
    return jaxrnn.verify(
        randomize(TorchNet(), 1),
        lambda p, x: model.apply({"params": p}, x),
        shapes(model, x[0]),
        x,
        dtype=dtype,
        **kwargs,
    )


# ----------------------------------------------------------------------------- correct ports


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_port_passes(dtype):
    """Every output, the loss, every parameter's and the input's gradient, and every parameter
    after each Adam step, within the tolerance; the user's torch model is left as it was."""
    torch_model = randomize(TorchNet(), 1)
    before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    model, x = FlaxNet(), net_inputs()
    with set_x64(dtype == "float64"):
        report = jaxrnn.verify(
            torch_model, lambda p, x: model.apply({"params": p}, x), shapes(model, x[0]), x,
            dtype=dtype, steps=3,
        )  # fmt: skip
    assert report.ok, str(report)
    assert report.failures() == [] and "PASS" in str(report).splitlines()[-1]
    names = [k for k, _ in torch_model.named_parameters()]
    rows = {(r.check, r.name): r for r in report.rows}
    expected = (
        [("output", "output['state'][0]"), ("output", "output['state'][1]")]
        + [("output", "output['y']"), ("loss", "loss")]
        + [("grad", k) for k in [*names, "input[0]"]]
        + [(f"step {k}", n) for k in (1, 2, 3) for n in names]
        + [("step 2", "loss"), ("step 3", "loss")]
    )
    assert sorted(rows) == sorted(expected)
    assert all(r.tolerance == TOLERANCES[dtype] for r in report.rows)
    assert all(torch.equal(before[k], v) for k, v in torch_model.state_dict().items())


def test_gru_with_hx_passes(x64):
    """torch ``nn.GRU`` (2 layers, bidirectional) vs ``jaxrnn.GRU``, ``hx`` a second input."""
    gru = jaxrnn.GRU(hidden_size=H, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(2)
    inputs = (rng.standard_normal((T, B, I)), rng.standard_normal((4, B, H)))
    report = jaxrnn.verify(
        randomize(torch.nn.GRU(I, H, num_layers=2, bidirectional=True), 3),
        lambda p, x, h0: gru.apply({"params": p}, x, h0),
        shapes(gru, inputs[0]),
        inputs,
        dtype="float64",
    )
    assert report.ok, str(report)
    assert {"input[0]", "input[1]", "weight_hh_l1_reverse"} <= {r.name for r in report.rows}


def test_a_hand_written_lstm_passes(x64):
    report = verify_hand_lstm("ifgo")
    assert report.ok, str(report)


def verify_hand_lstm(gates: str) -> Report:
    model = HandLSTM(hidden_size=H, gates=gates)
    rng = np.random.default_rng(4)
    inputs = (rng.standard_normal((T, B, I)), *rng.standard_normal((2, 1, B, H)))
    return jaxrnn.verify(
        randomize(torch.nn.LSTM(I, H), 5),
        lambda p, x, h0, c0: model.apply({"params": p}, x, h0, c0),
        shapes(model, *inputs),
        inputs,
        torch_apply=lambda m, x, h0, c0: m(x, (h0, c0)),
        dtype="float64",
    )


def test_loss_clipping_and_one_batch_per_step(x64):
    """A loss of each framework's own (cross-entropy on integer targets, an input), a batch per
    step, gradients clipped (torch's ``clip_grad_norm_`` and the engine's formula): passes,
    and the clipping acted at every step. Adam with torch's default eps and lr 0.1."""
    model = FlaxNet()
    rng = np.random.default_rng(6)
    batches = [(rng.standard_normal((B, T, I)), rng.integers(0, O, (B, T))) for _ in range(4)]

    def torch_loss(out, x, y):
        return torch.nn.functional.cross_entropy(out["y"].reshape(-1, O), y.reshape(-1))

    def jax_loss(out, x, y):
        logits = out["y"].reshape(-1, O)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), y.reshape(-1, 1), 1).mean()

    report = jaxrnn.verify(
        randomize(TorchNet(), 7),
        lambda p, x, y: model.apply({"params": p}, x),
        shapes(model, batches[0][0]),
        batches[0],
        torch_apply=lambda m, x, y: m(x),
        loss=(torch_loss, jax_loss),
        steps=4,
        step_inputs=batches,
        grad_clip=1e-3,
        learning_rate=0.1,
        eps=1e-8,
        dtype="float64",
    )
    assert report.ok, str(report)
    assert report.clipped == 4
    assert "input[1]" not in {r.name for r in report.rows}  # integer: no gradient
    assert report.worst("step").error < 1e-13  # Adam: the same arithmetic in both


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_adam_is_torch_adam_on_a_linear_model(jit, x64):
    """torch.optim.Adam with its own defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8) against
    optax.adam as verify builds it, 10 steps on ``nn.Linear`` vs ``nn.Dense``: the parameters
    agree to float64 rounding after every step (eager and jitted)."""
    dense, x = nn.Dense(O), np.random.default_rng(8).standard_normal((B, I))
    report = jaxrnn.verify(
        randomize(torch.nn.Linear(I, O), 9),
        lambda p, x: dense.apply({"params": p}, x),
        shapes(dense, x),
        (x,),
        steps=10,
        learning_rate=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        dtype="float64",
        jit=jit,
    )
    assert report.ok, str(report)
    assert len([r for r in report.rows if r.check.startswith("step")]) == 10 * 2 + 9
    assert report.worst("step").error < 1e-14


def test_the_step_rows_see_another_optimizer(monkeypatch, x64):
    """With optax's eps inside the square root (``eps_root``) instead of torch's placement,
    outputs and gradients pass and every parameter fails from step 1."""
    module = sys.modules["jaxrnn.verify"]
    monkeypatch.setattr(
        module, "_optimizer", lambda lr, b1, b2, eps, clip: optax.adam(lr, b1, b2, 0.0, eps)
    )
    dense, x = nn.Dense(O), np.random.default_rng(8).standard_normal((B, I))
    report = jaxrnn.verify(
        randomize(torch.nn.Linear(I, O), 9),
        lambda p, x: dense.apply({"params": p}, x),
        shapes(dense, x),
        (x,),
        steps=2,
        dtype="float64",
    )
    assert all(r.passed for r in report.rows if r.check in ("output", "loss", "grad"))
    assert {r.name for r in report.rows if r.check == "step 1" and not r.passed} == {
        "weight",
        "bias",
    }


# ----------------------------------------------------------------------------- planted errors


def test_a_dropped_bias_fails_and_is_named(x64):
    """``head.bias`` declared but left out of the forward: the outputs fail, and its gradient
    (zero in the port) fails by the size of torch's."""
    report = verify_net("drop_bias")
    assert not report.ok
    assert "head.bias" in report.failures() and "output['y']" in report.failures()
    grad = next(r for r in report.rows if r.check == "grad" and r.name == "head.bias")
    assert not grad.passed and grad.error > 1e-3
    assert report.worst("grad").name == "head.bias"  # the worst gradient is the culprit's
    assert "FAIL" in str(report) and "head.bias" in str(report).splitlines()[-1]


def test_a_stopped_gradient_fails_grad_and_steps_only(x64):
    """The forward is right (outputs pass) but ``head.bias`` gets no gradient: its grad fails,
    and after each step it has not moved where torch's has."""
    report = verify_net("frozen_bias", steps=2)
    failed = {(r.check, r.name) for r in report.rows if not r.passed}
    assert all(r.passed for r in report.rows if r.check in ("output", "loss"))
    assert {("grad", "head.bias"), ("step 1", "head.bias"), ("step 2", "head.bias")} <= failed
    assert report.failures()[0] == "head.bias"


@pytest.mark.parametrize("gates", ["figo", "ifog", "gifo"])
def test_swapped_gates_fail(gates, x64):
    """The hand-written LSTM with two or more gates out of torch's order: every output fails."""
    report = verify_hand_lstm(gates)
    assert not report.ok
    assert {"output[0]", "output[1][0]", "output[1][1]"} <= set(report.failures())
    assert all(not r.passed for r in report.rows if r.check == "output")


def test_nan_fails():
    """A NaN in the port's output fails (NaN passes no tolerance)."""
    model = FlaxNet()
    x = net_inputs()

    def apply(p, x):
        out = model.apply({"params": p}, x)
        return {**out, "y": out["y"].at[0, 0, 0].set(jnp.nan)}

    report = jaxrnn.verify(randomize(TorchNet(), 1), apply, shapes(model, x[0]), x, steps=0)
    row = next(r for r in report.rows if r.name == "output['y']")
    assert np.isnan(row.error) and not row.passed and not report.ok


# ----------------------------------------------------------------------------- clear errors


def test_mismatched_names_raise_listing_them():
    model, x = FlaxNet(lstm_name="rnn"), net_inputs()
    with pytest.raises(ValueError, match="differ by name") as e:
        jaxrnn.verify(
            TorchNet(), lambda p, x: model.apply({"params": p}, x), shapes(model, x[0]), x
        )
    lines = str(e.value).splitlines()
    flax_line = next(ln for ln in lines if ln.startswith("  only in params (Flax): "))
    torch_line = next(ln for ln in lines if ln.startswith("  only in torch_model: "))
    for kind in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert f"'rnn.{kind}'" in flax_line and f"'lstm.{kind}'" in torch_line
    assert "proj" not in flax_line + torch_line  # the names that match are not listed


def test_mismatched_shapes_raise_naming_them():
    model, x = FlaxNet(), net_inputs()
    with pytest.raises(ValueError, match=r"(?s)differ in shape.*lstm.weight_hh_l0: state_dict has"):
        jaxrnn.verify(
            TorchNet(hidden=H + 1), lambda p, x: model.apply({"params": p}, x),
            shapes(model, x[0]), x,
        )  # fmt: skip


def test_output_structure_mismatch_raises():
    model, x = FlaxNet(structure="tuple"), net_inputs()
    with pytest.raises(ValueError, match="differ in structure") as e:
        jaxrnn.verify(
            TorchNet(), lambda p, x: model.apply({"params": p}, x), shapes(model, x[0]), x
        )
    assert "torch_model gives {'state': (array, array), 'y': array}" in str(e.value)
    assert "flax_apply gives  (array, (array, array))" in str(e.value)


def test_float64_without_x64_raises():
    model, x = FlaxNet(), net_inputs()
    with set_x64(False), pytest.raises(RuntimeError, match='jax_enable_x64", True'):
        jaxrnn.verify(
            TorchNet(), lambda p, x: model.apply({"params": p}, x), shapes(model, x[0]), x,
            dtype="float64",
        )  # fmt: skip


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(inputs=np.zeros((B, T, I))), TypeError, r"tuple of arrays.*write \(x,\)"),
        (dict(inputs=("text",)), TypeError, r"inputs\[0\] must be a numeric array"),
        (dict(dtype="float16"), ValueError, "dtype must be 'float64' or 'float32'"),
        (dict(steps=-1), ValueError, "steps must be an int >= 0"),
        (dict(step_inputs=[net_inputs()]), ValueError, "holds 1 input tuples but steps=5"),
        (dict(loss=3), TypeError, "loss must be None, a callable"),
    ],
    ids=["bare-array", "text", "float16", "negative-steps", "step-inputs", "loss"],
)
def test_bad_arguments_raise(change, error, match):
    model = FlaxNet()
    args = dict(inputs=net_inputs()) | change
    like = shapes(model, np.zeros((B, T, I)))
    with pytest.raises(error, match=match):
        jaxrnn.verify(TorchNet(), lambda p, x: model.apply({"params": p}, x), like, **args)


def test_without_torch_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'jaxrnn\[parity\]'"):
        jaxrnn.verify(None, None, {}, ())


def test_relative_error_is_the_suite_s():
    """One definition: the parity suite's rel_err and TOL are jaxrnn.verify's."""
    from parity import checks

    assert checks.rel_err is relative_error and checks.TOL is TOLERANCES
    assert relative_error(np.array([1.0, 3.0]), np.array([1.0, 2.0])) == 0.5
    assert relative_error(np.array([0.5]), np.array([0.25])) == 0.25  # max(1, |ref|)
    assert np.isnan(relative_error(np.array([np.nan]), np.array([0.0])))
    assert relative_error(np.zeros(2), np.zeros(3)) == float("inf")
    assert relative_error(np.zeros(2, np.float32), np.zeros(2)) == float("inf")
