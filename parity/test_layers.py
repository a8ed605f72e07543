"""jaxrnn against torch.nn: the configuration table × {float64, float32}, and interop.

``test_parity`` runs every check of ``parity/checks.py`` (names, outputs and final states eager
and jitted, gradients, 5 Adam steps, round trip) on each case of ``parity/cases.py``; the
other tests cover the rest of ``jaxrnn.interop``: Linear, Embedding (``padding_idx``
included), the cells, whole models by name, the errors of ``state_dict_to_params``, and
out-of-range token ids. ``test_parity_nnx`` runs the quick cases against the NNX layers
(``jaxrnn.nnx``; every case in ``python -m parity --only nnx``), and the NNX cells, Embed and
Linear convert both ways bit-exactly.
"""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import optax  # noqa: E402
from flax import nnx  # noqa: E402

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


@pytest.mark.parametrize(
    "case, dtype", [pytest.param(c, d, id=case_id(c, d)) for c in QUICK for d in DTYPES]
)
def test_parity_nnx(case, dtype, parity_mode):
    """The same checks against jaxrnn.nnx's layers (every case: ``python -m parity``)."""
    report = checks.run_case(case, dtype, impl="nnx")
    assert not report.failures(dtype), (report.errors, report.notes)


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
@pytest.mark.parametrize("padding_idx", [None, 3, -1], ids=["plain", "pad3", "pad-1"])
@pytest.mark.parametrize("impl", ["linen", "nnx"])
def test_embedding(impl, padding_idx, dtype, parity_mode):
    """Outputs and the table's gradient (the padding row's: zero, as torch's), and the
    round trip; the padding row is set non-zero first: it is looked up as is."""
    rng = np.random.default_rng(3)
    embedding = torch.nn.Embedding(11, 5, padding_idx=padding_idx).to(getattr(torch, dtype))
    randomize(embedding, rng)
    ids = rng.integers(0, 11, (3, 9))
    ids[0, :3] = 3, 10, 3  # the padding rows (3, or -1 = 10) appear
    weights = rng.standard_normal((3, 9, 5)).astype(dtype)
    (embedding(torch.from_numpy(ids)) * torch.from_numpy(weights)).sum().backward()
    ref_out = embedding(torch.from_numpy(ids))

    if impl == "linen":
        module, variables = jaxrnn.from_torch(embedding)
        table = variables["params"]["embedding"]
        forward = lambda t: module.apply({"params": {"embedding": t}}, jnp.asarray(ids))  # noqa: E731
        back = jaxrnn.to_torch(module, variables)
    else:
        model = jaxrnn.nnx.from_torch(embedding)
        table = model.weight[...]
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        forward = lambda t: nnx.merge(graphdef, {"weight": t}, rest)(jnp.asarray(ids))  # noqa: E731
        back = jaxrnn.nnx.to_torch(model)
    y = forward(table)
    grad = jax.grad(lambda t: jnp.sum(forward(t) * weights))(table)
    assert y.dtype == jnp.dtype(dtype)
    assert_close(y, ref_out, dtype, "Embedding output")
    assert_close(grad, embedding.weight.grad, dtype, "Embedding gradient")
    if padding_idx is not None:
        assert not np.asarray(grad)[padding_idx].any() and np.asarray(table)[padding_idx].any()
    assert back.padding_idx == embedding.padding_idx
    assert_bit_exact(back, embedding)


CELLS = [
    pytest.param("RNNCell", dict(nonlinearity="tanh"), id="RNNCell-tanh"),
    pytest.param("RNNCell", dict(nonlinearity="relu", bias=False), id="RNNCell-relu-nobias"),
    pytest.param("LSTMCell", {}, id="LSTMCell"),
    pytest.param("GRUCell", {}, id="GRUCell"),
    pytest.param("GRUCell", dict(bias=False), id="GRUCell-nobias"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kwargs", CELLS)
@pytest.mark.parametrize("impl", ["linen", "nnx"])
def test_cell(impl, name, kwargs, dtype, parity_mode):
    """One step: ``cell.apply(variables, carry, x)`` (NNX: ``cell(carry, x)``) == torch
    ``cell(x, hx)``."""
    I, H, B = 5, 7, 3
    rng = np.random.default_rng(checks.seed_of(name + repr(kwargs)))
    cell = randomize(getattr(torch.nn, name)(I, H, **kwargs).to(getattr(torch, dtype)), rng)
    x = rng.standard_normal((B, I)).astype(dtype)
    n_states = 2 if name == "LSTMCell" else 1  # (h, c) or h
    states = [rng.standard_normal((B, H)).astype(dtype) for _ in range(n_states)]
    carry = tuple(map(jnp.asarray, states)) if name == "LSTMCell" else jnp.asarray(states[0])

    if impl == "linen":
        module, variables = jaxrnn.from_torch(cell)
        expected = [(k, tuple(v.shape), dtype) for k, v in cell.state_dict().items()]
        assert checks.traced_params(module, carry, jnp.asarray(x)) == expected
        new_carry, y = module.apply(variables, carry, jnp.asarray(x))
        back = jaxrnn.to_torch(module, variables)
    else:
        model = jaxrnn.nnx.from_torch(cell)
        new_carry, y = model(carry, jnp.asarray(x))
        back = jaxrnn.nnx.to_torch(model)
    hx = tuple(map(torch.from_numpy, states)) if name == "LSTMCell" else torch.from_numpy(states[0])
    ref = cell(torch.from_numpy(x), hx)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = new_carry if isinstance(new_carry, tuple) else (new_carry,)
    for what, g, r in zip(("h", "c"), got, ref):
        assert_close(g, r, dtype, f"{name} {what}")
    assert_close(y, ref[0], dtype, f"{name} output")
    assert_bit_exact(back, cell)


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
    "option", [{"max_norm": 1.0}, {"scale_grad_by_freq": True}, {"sparse": True}]
)
@pytest.mark.parametrize(
    "convert", [jaxrnn.from_torch, jaxrnn.nnx.from_torch], ids=["linen", "nnx"]
)
def test_embedding_options_without_equivalent_are_refused(convert, option):
    """max_norm renormalises rows, scale_grad_by_freq rescales a gradient: a silent
    conversion would change the forward pass or the training, so they are refused by name."""
    with pytest.raises(ValueError, match=next(iter(option))):
        convert(torch.nn.Embedding(10, 5, **option))


def test_state_dict_padding_row_not_zero_warns_with_an_nnx_target():
    """A state_dict carries no padding_idx: the target's decides. Given an NNX model whose
    Embed has padding_idx=0, a non-zero row 0 (a torch model without that padding_idx)
    warns; torch's own padding row (zero) does not."""
    target = jaxrnn.nnx.Embed(V, E, padding_idx=0, rngs=nnx.Rngs(0))
    padded = torch.nn.Embedding(V, E, padding_idx=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = jaxrnn.state_dict_to_params(padded.state_dict(), like=target)
    np.testing.assert_array_equal(params["weight"], padded.weight.detach().numpy())
    with pytest.warns(UserWarning, match=r"state_dict\['weight'\]\[0\] is not zero.*padding_idx=0"):
        jaxrnn.state_dict_to_params(torch.nn.Embedding(V, E).state_dict(), like=target)


def test_float64_module_without_x64_is_refused():
    """jax would cast the weights to float32 silently: from_torch refuses, naming the fix."""
    lstm = torch.nn.LSTM(3, 4).double()
    for convert in (jaxrnn.from_torch, jaxrnn.nnx.from_torch):
        with pytest.raises(TypeError, match="float64, but jax_enable_x64 is off.*jax_enable_x64"):
            convert(lstm)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.RNNCell(5, 7, nonlinearity="relu"),
        lambda: torch.nn.LSTMCell(5, 7, bias=False),
        lambda: torch.nn.GRUCell(5, 7),
        lambda: torch.nn.Linear(5, 7),
        lambda: torch.nn.Linear(5, 7, bias=False),
        lambda: torch.nn.Embedding(7, 5, padding_idx=2),
        lambda: torch.nn.RNN(5, 7, 2, nonlinearity="relu", dropout=0.25, batch_first=True),
    ],
    ids=[
        "RNNCell-relu",
        "LSTMCell-nobias",
        "GRUCell",
        "Linear",
        "Linear-nobias",
        "Embedding",
        "RNN-relu-L2",
    ],
)
def test_nnx_round_trip_is_bit_exact(make, x64):
    """torch → jaxrnn.nnx → torch, float64 and float32; the NNX params' keys are torch's."""
    for dtype in (torch.float64, torch.float32):
        module = randomize(make().to(dtype), np.random.default_rng(8))
        model = jaxrnn.nnx.from_torch(module)
        keys = jaxrnn.params_to_state_dict(nnx.state(model, nnx.Param))
        assert sorted(keys) == sorted(module.state_dict())
        assert_bit_exact(jaxrnn.nnx.to_torch(model), module)


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
