"""jaxrnn against torch.nn: the configuration table × {float64, float32}, and interop.

``test_parity`` runs every check of ``parity/checks.py`` (names, outputs and final states eager
and jitted, gradients, 5 Adam steps, round trip) on each case of ``parity/cases.py``; the
other tests cover the rest of ``jaxrnn.interop``: Linear, Embedding, the cells, whole models
by name, the errors of ``state_dict_to_params``, and out-of-range token ids.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import optax  # noqa: E402

import jaxrnn  # noqa: E402
from parity import checks  # noqa: E402
from parity.cases import CASES, DTYPES, QUICK, case_id, coverage_gaps  # noqa: E402

# torch's notice that its LSTM with proj_size runs without oneDNN: not about jaxrnn
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


def assert_close(got, ref, dtype: str, what: str) -> None:
    err = checks.rel_err(got, ref)
    tol = checks.TOL[dtype]
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.0e} ({dtype})"


def randomize(module, rng: np.random.Generator):
    """Every parameter of a torch module ~ U(-0.6, 0.6), biases included."""
    with torch.no_grad():
        for p in module.parameters():
            scale = checks.PARAM_SCALE
            p.copy_(torch.from_numpy(rng.uniform(-scale, scale, tuple(p.shape))))
    return module


def assert_bit_exact(back, module) -> None:
    a, b = module.state_dict(), back.state_dict()
    assert type(back) is type(module)
    assert list(b) == list(a)
    for k in a:
        assert b[k].dtype == a[k].dtype and torch.equal(b[k], a[k]), f"{k} changed"


# ----------------------------------------------------------------------------- the table


def test_table_covers():
    assert 25 <= len(CASES) <= 30
    assert coverage_gaps(CASES) == []


@pytest.mark.parametrize(
    "case, dtype", [pytest.param(c, d, id=case_id(c, d)) for c in CASES for d in DTYPES]
)
def test_parity(case, dtype, parity_mode):
    report = checks.run_case(case, dtype)
    problems = [
        f"{check}: error {report.errors[check]:.3g} > tolerance "
        f"{checks.tolerance(check, dtype):.0e} (worst: {report.notes.get(check) or '-'})"
        for check in report.failures(dtype)
    ]
    assert not problems, f"{case_id(case, dtype)}\n  " + "\n  ".join(problems)


def test_float32_with_x64_enabled(x64):
    """float32 stays float32 with x64 on: default zero states take x's dtype, and every
    output, state, gradient and Adam-updated parameter is float32 (rel_err fails on a dtype
    mismatch)."""
    case = next(c for c in QUICK if c.proj_size and c.variant == "plain")  # zero (h, c)
    with jax.default_matmul_precision("highest"):
        report = checks.run_case(case, "float32")
    assert not report.failures("float32"), (report.errors, report.notes)


# ----------------------------------------------------------------------------- optimizer


def test_adam_eps_placement(x64):
    """torch Adam and optax.adam agree with a large ``eps`` (where its placement matters):
    both use ``m̂ / (√v̂ + eps)``; ``eps`` inside the root (optax's ``eps_root``) differs."""
    rng = np.random.default_rng(1)
    p0, target = rng.uniform(-1, 1, (2, 7))
    hyper = dict(b1=0.8, b2=0.95, eps=0.3)

    def loss(p):
        return jnp.sum((p - target) ** 3)

    def run_optax(opt):
        p, state = jnp.asarray(p0), opt.init(jnp.asarray(p0))
        for _ in range(3):
            updates, state = opt.update(jax.grad(loss)(p), state, p)
            p = optax.apply_updates(p, updates)
        return p

    p_t = torch.tensor(p0, requires_grad=True)
    opt_t = torch.optim.Adam([p_t], lr=0.1, betas=(hyper["b1"], hyper["b2"]), eps=hyper["eps"])
    for _ in range(3):
        opt_t.zero_grad()
        torch.sum((p_t - torch.from_numpy(target)) ** 3).backward()
        opt_t.step()
    assert_close(run_optax(optax.adam(0.1, **hyper)), p_t, "float64", "optax.adam vs torch")
    inside = optax.adam(0.1, b1=hyper["b1"], b2=hyper["b2"], eps=0.0, eps_root=hyper["eps"])
    assert checks.rel_err(run_optax(inside), p_t) > 1e-3  # the placement is visible here


# ----------------------------------------------------------------------------- modules


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear(bias, dtype, parity_mode):
    rng = np.random.default_rng(2)
    linear = randomize(torch.nn.Linear(5, 7, bias=bias).to(getattr(torch, dtype)), rng)
    module, variables = jaxrnn.from_torch(linear)
    x = rng.standard_normal((3, 5)).astype(dtype)
    y = module.apply(variables, jnp.asarray(x))
    assert y.dtype == jnp.dtype(dtype)
    assert_close(y, linear(torch.from_numpy(x)), dtype, "Linear output")
    assert_bit_exact(jaxrnn.to_torch(module, variables), linear)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding(dtype, parity_mode):
    rng = np.random.default_rng(3)
    embedding = randomize(torch.nn.Embedding(11, 5).to(getattr(torch, dtype)), rng)
    module, variables = jaxrnn.from_torch(embedding)
    ids = rng.integers(0, 11, (3, 9))
    y = module.apply(variables, jnp.asarray(ids))
    assert y.dtype == jnp.dtype(dtype)
    assert_close(y, embedding(torch.from_numpy(ids)), dtype, "Embedding output")
    assert_bit_exact(jaxrnn.to_torch(module, variables), embedding)


CELLS = [
    pytest.param("RNNCell", dict(nonlinearity="tanh"), id="RNNCell-tanh"),
    pytest.param("RNNCell", dict(nonlinearity="relu", bias=False), id="RNNCell-relu-nobias"),
    pytest.param("LSTMCell", {}, id="LSTMCell"),
    pytest.param("GRUCell", {}, id="GRUCell"),
    pytest.param("GRUCell", dict(bias=False), id="GRUCell-nobias"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs", CELLS)
def test_cell(name, kwargs, dtype, parity_mode):
    """One step: ``cell.apply(variables, carry, x)`` == torch ``cell(x, hx)``."""
    I, H, B = 5, 7, 3
    rng = np.random.default_rng(checks.seed_of(name + repr(kwargs)))
    cell = randomize(getattr(torch.nn, name)(I, H, **kwargs).to(getattr(torch, dtype)), rng)
    module, variables = jaxrnn.from_torch(cell)
    x = rng.standard_normal((B, I)).astype(dtype)
    n_states = 2 if name == "LSTMCell" else 1  # (h, c) or h
    states = [rng.standard_normal((B, H)).astype(dtype) for _ in range(n_states)]
    carry = tuple(map(jnp.asarray, states)) if name == "LSTMCell" else jnp.asarray(states[0])

    expected = [(k, tuple(v.shape), dtype) for k, v in cell.state_dict().items()]
    assert checks.traced_params(module, carry, jnp.asarray(x)) == expected

    new_carry, y = module.apply(variables, carry, jnp.asarray(x))
    hx = tuple(map(torch.from_numpy, states)) if name == "LSTMCell" else torch.from_numpy(states[0])
    ref = cell(torch.from_numpy(x), hx)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = new_carry if isinstance(new_carry, tuple) else (new_carry,)
    for what, g, r in zip(("h", "c"), got, ref):
        assert_close(g, r, dtype, f"{name} {what}")
    assert_close(y, ref[0], dtype, f"{name} output")
    assert_bit_exact(jaxrnn.to_torch(module, variables), cell)


# ----------------------------------------------------------------------------- whole models

V, E, H, C = 13, 5, 7, 3  # vocabulary, embedding, hidden, classes
B, T = 3, 9


class FlaxTagger(nn.Module):
    """Embed → LSTM → Dense, with torch's attribute names as submodule names."""

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, ids):  # [B, T] ints -> [B, T, C]
        x = jaxrnn.Embed(
            num_embeddings=V, features=E, param_dtype=self.param_dtype, name="embedding"
        )(ids)
        out, _ = jaxrnn.LSTM(
            hidden_size=H, batch_first=True, param_dtype=self.param_dtype, name="rnn"
        )(x)
        return nn.Dense(C, param_dtype=self.param_dtype, name="fc")(out)


class TorchTagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, E)
        self.rnn = torch.nn.LSTM(E, H, batch_first=True)
        self.fc = torch.nn.Linear(H, C)

    def forward(self, ids):
        return self.fc(self.rnn(self.embedding(ids))[0])


def tagger_params(dtype: str, rng: np.random.Generator):
    model = FlaxTagger(param_dtype=jnp.dtype(dtype))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((B, T), jnp.int32))
    scale = checks.PARAM_SCALE
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(-scale, scale, s.shape), dtype), shapes["params"]
    )
    return model, params


@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_model_by_name(dtype, parity_mode):
    rng = np.random.default_rng(4)
    model, params = tagger_params(dtype, rng)
    state_dict = jaxrnn.params_to_state_dict(params)
    torch_model = TorchTagger().to(getattr(torch, dtype))
    torch_model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
        strict=True,
    )
    ids = rng.integers(0, V, (B, T))
    out = model.apply({"params": params}, jnp.asarray(ids))
    assert_close(out, torch_model(torch.from_numpy(ids)), dtype, "model output")

    back = jaxrnn.state_dict_to_params(torch_model.state_dict(), like=params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for (path, a), b in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(back)):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{path} changed"


def test_state_dict_errors_name_the_keys():
    model, params = tagger_params("float32", np.random.default_rng(5))
    good = dict(TorchTagger().state_dict())
    jaxrnn.state_dict_to_params(good, like=params)  # the right keys: no error

    missing = {k: v for k, v in good.items() if k != "rnn.bias_hh_l0"}
    with pytest.raises(KeyError, match=r"missing keys: \['rnn\.bias_hh_l0'\]"):
        jaxrnn.state_dict_to_params(missing, like=params)

    unexpected = {**good, "rnn.weight_hr_l0": torch.zeros(2, H)}
    with pytest.raises(KeyError, match=r"unexpected keys: \['rnn\.weight_hr_l0'\]"):
        jaxrnn.state_dict_to_params(unexpected, like=params)

    wrong = {**good, "fc.weight": torch.zeros(C + 2, H), "rnn.weight_ih_l0": torch.zeros(4 * H, 1)}
    with pytest.raises(ValueError) as info:
        jaxrnn.state_dict_to_params(wrong, like=params)
    message = str(info.value)
    assert "fc.weight" in message and f"({C + 2}, {H})" in message and f"({C}, {H})" in message
    assert "rnn.weight_ih_l0" in message and f"({4 * H}, 1)" in message


def test_out_of_range_token_id():
    """torch raises IndexError; jaxrnn raises TokenIdError (an IndexError) naming the id."""
    embedding = torch.nn.Embedding(V, E)
    module, variables = jaxrnn.from_torch(embedding)
    for bad in (V, -1):
        ids = np.array([[1, bad, 2]])
        with pytest.raises(IndexError):
            embedding(torch.from_numpy(ids))
        with pytest.raises(jaxrnn.TokenIdError, match=rf"got ids\[0, 1\] = {bad}\b"):
            module.apply(variables, jnp.asarray(ids))
    assert issubclass(jaxrnn.TokenIdError, IndexError)


@pytest.mark.parametrize(
    "option",
    [{"max_norm": 1.0}, {"padding_idx": 0}, {"scale_grad_by_freq": True}, {"sparse": True}],
)
def test_embedding_options_without_equivalent_are_refused(option):
    """max_norm renormalises rows and padding_idx zeroes a gradient: a silent conversion
    would change the forward pass or the training, so from_torch refuses them by name."""
    with pytest.raises(ValueError, match=next(iter(option))):
        jaxrnn.from_torch(torch.nn.Embedding(10, 5, **option))


@pytest.mark.skipif(not jaxrnn.cudnn.available(), reason="needs a CUDA GPU with cuDNN")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cudnn_backend_matches_torch(bidirectional):
    """``jaxrnn.LSTM(backend="cudnn")`` against torch.nn.LSTM: outputs, states, gradients
    (float32; TF32 off on the jax side, torch runs on the CPU)."""
    rng = np.random.default_rng(7)
    tmod = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=bidirectional)
    randomize(tmod, rng)
    x = rng.normal(size=(7, 3, 5)).astype(np.float32)
    lengths = np.array([7, 3, 5])
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x).requires_grad_(), torch.from_numpy(lengths), enforce_sorted=False
    )
    out, (h_n, c_n) = tmod(packed)
    out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=7)[0]
    (out.square().sum() + h_n.sum() + c_n.sum()).backward()
    ref_grads = {k: p.grad.numpy() for k, p in tmod.named_parameters()}

    module, variables = jaxrnn.from_torch(tmod)
    module = module.clone(backend="cudnn")

    def loss(params):
        o, (h, c) = module.apply({"params": params}, jnp.asarray(x), lengths=jnp.asarray(lengths))
        return jnp.sum(o**2) + jnp.sum(h) + jnp.sum(c), (o, h, c)

    with jax.default_matmul_precision("highest"):
        (_, (o, h, c)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    for name, got, ref in (("out", o, out), ("h_n", h, h_n), ("c_n", c, c_n)):
        assert_close(got, ref.detach().numpy(), "float32", name)
    for name, ref in ref_grads.items():
        assert_close(grads[name], ref, "float32", f"grad {name}")
