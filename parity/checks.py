"""The parity checks of one configuration: jaxrnn against torch.nn, as max errors per check.

``run_case(case, dtype, impl)`` builds the torch module with random values in every parameter
(biases included), converts it with ``jaxrnn.from_torch`` (``impl="nnx"``:
``jaxrnn.nnx.from_torch``, the NNX layers) and compares, per tensor, with the
error ``max|Δ| / max(1, max|ref|)`` (NaN on either side is NaN, a shape or dtype mismatch
is inf):

  names      jaxrnn ``init(...)["params"]`` keys, order, shapes and dtypes == torch
             ``state_dict()`` (0 when equal, inf otherwise); NNX: the keys of
             ``params_to_state_dict(nnx.state(model, nnx.Param))`` (sorted, as nnx sorts them)
  out        output, eager                       out_jit   output under ``jax.jit``
  h_n        final states (LSTM: h_n and c_n)    h_n_jit   the same under ``jax.jit``
  grads      d loss / d (every parameter, x, hx) for loss = Σ out·R₁ + Σ h_n·R₂ (+ Σ c_n·R₃)
  adam5      parameters after 5 steps of torch.optim.Adam vs optax.adam on that loss
  roundtrip  torch → from_torch → to_torch: max|Δ| over the state_dict (must be exactly 0)

The jitted forward is the auxiliary output of one jitted function that computes the loss, its
gradients and an optax Adam step, so one compilation serves ``out_jit``/``h_n_jit``, the
gradients and every Adam step (compilation is most of the suite's time).

torch Adam and optax.adam put ``eps`` in the same place, outside the square root:
``m̂ / (√v̂ + eps)`` (torch/optim/adam.py: ``denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)``;
optax ``scale_by_adam``: ``m / (sqrt(v + eps_root) + eps)`` with ``eps_root=0``), so the
same hyperparameters mean the same optimizer.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import jaxrnn

# The errors and tolerances are jaxrnn.verify's, one definition for the suite and for users'
# ports: rel_err = max|got - ref| / max(1, max|ref|) (NaN if either holds a NaN, inf on a shape
# or dtype mismatch), mismatch (how shapes or dtypes differ), worst (the largest rel_err over
# {name: (got, ref)} and where), TOL (per tensor: float64 1e-10, float32 2e-5).
from jaxrnn.verify import TOLERANCES as TOL
from jaxrnn.verify import mismatch, worst  # noqa: F401  (re-exported)
from jaxrnn.verify import relative_error as rel_err  # noqa: F401  (re-exported)

from .cases import Case

CHECKS = ("names", "out", "out_jit", "h_n", "h_n_jit", "grads", "adam5", "roundtrip")
EXACT = ("names", "roundtrip")  # these must be exactly 0

PARAM_SCALE = 0.6  # every parameter ~ U(-0.6, 0.6)
ADAM_STEPS = 5
# eps bounds how much Adam amplifies a gradient's rounding: an element with gradient g ≈ 0
# moves by lr·g/(|g| + eps), so an absolute gradient error δ can move a parameter by up to
# steps·lr·δ/eps. In float32 (δ up to ~1e-6 here) that must stay well under the tolerance
# whatever the gradients: eps = 1e-2 gives 5δ. Measured worst float32 adam5 over the table
# for eps = 1e-8, 1e-6, 1e-4, 1e-3, 1e-2: 8.6e-7, 9.9e-6, 1.4e-5, 5.0e-6, 7.5e-7 — the
# small ones are safe only while no gradient element happens to be near eps.
ADAM = dict(lr=1e-2, b1=0.9, b2=0.99, eps=1e-2)

TORCH_CLASSES = {"rnn_tanh": "RNN", "rnn_relu": "RNN", "lstm": "LSTM", "gru": "GRU"}
JAXRNN_CLASSES = {
    "rnn_tanh": jaxrnn.RNN,
    "rnn_relu": jaxrnn.RNN,
    "lstm": jaxrnn.LSTM,
    "gru": jaxrnn.GRU,
}


def tolerance(check: str, dtype: str) -> float:
    return 0.0 if check in EXACT else TOL[dtype]


def passed(err: float, check: str, dtype: str) -> bool:
    """``err ≤ tolerance``; NaN never passes."""
    return bool(err <= tolerance(check, dtype))  # False for NaN


class CaseReport(NamedTuple):
    """``errors[check]``: the worst error of that check; ``notes[check]``: where it is."""

    errors: dict[str, float]
    notes: dict[str, str]

    def failures(self, dtype: str) -> list[str]:
        return [c for c in CHECKS if not passed(self.errors[c], c, dtype)]


# ----------------------------------------------------------------------------- settings


@contextlib.contextmanager
def x64(enabled: bool = True):
    """``jax_enable_x64`` set to ``enabled`` inside, always restored (also on error)."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@contextlib.contextmanager
def parity_mode(dtype: str):
    """x64 on for float64; matmuls at full precision in both frameworks (no TF32)."""
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with contextlib.ExitStack() as stack:
            if dtype == "float64":
                stack.enter_context(x64(True))
            stack.enter_context(jax.default_matmul_precision("highest"))
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32


def seed_of(name: str) -> int:
    """A stable seed from a name (Python's ``hash`` of a str changes between runs)."""
    return zlib.crc32(name.encode())


# ----------------------------------------------------------------------------- building


def torch_module(case: Case, dtype: str, rng: np.random.Generator) -> torch.nn.Module:
    """The torch.nn module of ``case`` with every parameter ~ U(-0.6, 0.6)."""
    kwargs = dict(
        input_size=case.input_size,
        hidden_size=case.hidden_size,
        num_layers=case.num_layers,
        bias=case.bias,
        batch_first=case.batch_first,
        bidirectional=case.bidirectional,
    )
    if case.mode.startswith("rnn_"):
        kwargs["nonlinearity"] = case.mode.removeprefix("rnn_")
    if case.proj_size:
        kwargs["proj_size"] = case.proj_size
    module = getattr(torch.nn, TORCH_CLASSES[case.mode])(**kwargs).to(getattr(torch, dtype))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-PARAM_SCALE, PARAM_SCALE, tuple(p.shape))))
    return module


def nnx_module(case: Case, dtype: str) -> nnx.Module:
    """The jaxrnn.nnx layer of ``case``, built directly with torch's positional order."""
    cls = getattr(jaxrnn.nnx, TORCH_CLASSES[case.mode])
    args = [case.input_size, case.hidden_size, case.num_layers]
    if case.mode.startswith("rnn_"):
        args.append(case.mode.removeprefix("rnn_"))
    args += [case.bias, case.batch_first, 0.0, case.bidirectional]
    if case.proj_size:
        args.append(case.proj_size)
    return cls(*args, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(dtype))


def jaxrnn_module(case: Case, dtype: str):
    """The jaxrnn layer of ``case``, built directly (not by ``from_torch``)."""
    kwargs = dict(
        hidden_size=case.hidden_size,
        num_layers=case.num_layers,
        bias=case.bias,
        batch_first=case.batch_first,
        bidirectional=case.bidirectional,
        param_dtype=jnp.dtype(dtype),
    )
    if case.mode.startswith("rnn_"):
        kwargs["nonlinearity"] = case.mode.removeprefix("rnn_")
    if case.proj_size:
        kwargs["proj_size"] = case.proj_size
    return JAXRNN_CLASSES[case.mode](**kwargs)


class Inputs(NamedTuple):
    """NumPy arrays of the run's dtype; ``hx`` is ``()``, ``(h0,)`` or ``(h0, c0)``."""

    x: np.ndarray
    hx: tuple
    lengths: np.ndarray | None
    weights: tuple  # R for the output, then one per final state


def make_inputs(case: Case, dtype: str, rng: np.random.Generator) -> Inputs:
    T, B, I, H = case.time, case.batch, case.input_size, case.hidden_size
    LD = case.num_layers * case.num_directions
    H_out = case.proj_size or H
    batch = (B,) if case.batched else ()

    def randn(*shape):
        return rng.standard_normal(shape).astype(dtype)

    if not case.batched:
        x = randn(T, I)
    else:
        x = randn(B, T, I) if case.batch_first else randn(T, B, I)
    state_shapes = [(LD, *batch, H_out)] + ([(LD, *batch, H)] if case.mode == "lstm" else [])
    hx = tuple(randn(*s) for s in state_shapes) if case.hx else ()
    lengths = None
    if case.variant == "lengths":
        # unsorted (enforce_sorted=False matters), one short sequence and one full one
        lengths = np.concatenate([[rng.integers(1, 3), T], rng.integers(1, T + 1, B - 2)])
    out_shape = (*x.shape[:-1], case.num_directions * H_out)
    weights = tuple(randn(*s) for s in [out_shape, *state_shapes])
    return Inputs(x, hx, lengths, weights)


# ----------------------------------------------------------------------------- forward


def torch_forward(module, case: Case, x, hx: tuple, lengths):
    """``(out, states)`` with ``states`` a tuple (LSTM ``(h_n, c_n)``)."""
    h0 = None if not hx else (hx if case.mode == "lstm" else hx[0])
    if lengths is None:
        out, h_n = module(x, h0)
    else:
        packed = pack_padded_sequence(
            x,
            torch.as_tensor(lengths, dtype=torch.int64),
            batch_first=case.batch_first,
            enforce_sorted=False,
        )
        out, h_n = module(packed, h0)
        out, _ = pad_packed_sequence(out, batch_first=case.batch_first, total_length=case.time)
    return out, (tuple(h_n) if isinstance(h_n, tuple) else (h_n,))


def torch_loss(module, case: Case, inputs: Inputs, x, hx: tuple):
    out, states = torch_forward(module, case, x, hx, inputs.lengths)
    terms = [(a * torch.from_numpy(r)).sum() for a, r in zip((out, *states), inputs.weights)]
    return sum(terms), out, states


def jax_forward(apply, case: Case, params, x, hx: tuple, lengths):
    """``(out, states)`` of ``apply(params, x, h0, lengths)`` (a :class:`Port`'s), ``states`` a
    tuple as in :func:`torch_forward`."""
    h0 = None if not hx else (hx if case.mode == "lstm" else hx[0])
    out, h_n = apply(params, x, h0, lengths)
    return out, (tuple(h_n) if isinstance(h_n, tuple) else (h_n,))


def jax_loss_fn(apply, case: Case):
    """``(params, x, hx, lengths, weights) -> (loss, (out, states))``."""

    def loss_fn(params, x, hx, lengths, weights):
        out, states = jax_forward(apply, case, params, x, hx, lengths)
        loss = sum(jnp.sum(a * r) for a, r in zip((out, *states), weights))
        return loss, (out, states)

    return loss_fn


class Port(NamedTuple):
    """One implementation of a case: the parameter names it makes by itself (``(name, shape,
    dtype)``), the params converted from torch (flat ``{torch_name: array}``), how to apply
    them, and the torch module it converts back to."""

    names: list
    params: dict
    apply: object  # (params, x, h0, lengths) -> (out, h_n)
    back: torch.nn.Module


def linen_port(case: Case, dtype: str, tmod, x) -> Port:
    """``jaxrnn.LSTM`` & co: ``from_torch`` / ``to_torch``; names in creation order."""
    names = traced_params(jaxrnn_module(case, dtype), x)
    jmod, variables = jaxrnn.from_torch(tmod)

    def apply(params, x, h0, lengths):
        return jmod.apply({"params": params}, x, h0, lengths=lengths)

    return Port(names, dict(variables["params"]), apply, jaxrnn.to_torch(jmod, variables))


def nnx_port(case: Case, dtype: str, tmod, x) -> Port:
    """``jaxrnn.nnx.LSTM`` & co: ``jaxrnn.nnx.from_torch`` / ``to_torch``; the names are
    ``params_to_state_dict(nnx.state(model, nnx.Param))`` of a directly built model (an
    ``nnx.State`` sorts its keys: compared as sorted lists)."""
    del x
    state = jaxrnn.params_to_state_dict(nnx.state(nnx_module(case, dtype), nnx.Param))
    names = sorted((k, tuple(v.shape), str(v.dtype)) for k, v in state.items())
    model = jaxrnn.nnx.from_torch(tmod)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(params, x, h0, lengths):
        return nnx.merge(graphdef, params, rest)(x, h0, lengths=lengths)

    return Port(names, nnx.to_pure_dict(params), apply, jaxrnn.nnx.to_torch(model))


PORTS = {"linen": linen_port, "nnx": nnx_port}
IMPLS = tuple(PORTS)


def adam_step(loss_fn, opt):
    """``(params, opt_state, *args) -> (aux, grads, (new_params, new_opt_state))``: the
    forward, the gradients wrt ``(params, x, hx)`` and one optax step, to jit as one."""

    def step(params, opt_state, x, hx, lengths, weights):
        grad_fn = jax.grad(loss_fn, argnums=(0, 1, 2), has_aux=True)
        grads, aux = grad_fn(params, x, hx, lengths, weights)
        updates, opt_state = opt.update(grads[0], opt_state, params)
        return aux, grads, (optax.apply_updates(params, updates), opt_state)

    return step


def traced_params(module, *args) -> list[tuple[str, tuple, str]]:
    """``(name, shape, dtype)`` of ``module.init(key, *args)["params"]`` in creation order, read
    inside a traced ``init`` (nothing runs; ``eval_shape``/``jit`` outputs sort dict keys)."""
    seen = []

    def init(key):
        params = module.init(key, *args)["params"]
        seen.extend((k, tuple(v.shape), str(v.dtype)) for k, v in params.items())
        return params

    jax.eval_shape(init, jax.random.key(0))
    return seen


# ----------------------------------------------------------------------------- the checks


def run_case(case: Case, dtype: str, impl: str = "linen") -> CaseReport:
    """Every check of ``case`` in ``dtype`` for ``impl`` (``"linen"``: ``jaxrnn.LSTM`` & co;
    ``"nnx"``: ``jaxrnn.nnx.LSTM`` & co); call inside ``parity_mode(dtype)``."""
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise RuntimeError("float64 parity needs jax_enable_x64: run inside parity_mode()")
    rng = np.random.default_rng(seed_of(case.id))  # the same values for both dtypes
    errors: dict[str, float] = {}
    notes: dict[str, str] = {}

    tmod = torch_module(case, dtype, rng)
    inputs = make_inputs(case, dtype, rng)
    state_dict = tmod.state_dict()

    # 1. names, order, shapes, dtypes; 6. round trip (before Adam changes the torch module)
    torch_names = [
        (k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()
    ]
    port = PORTS[impl](case, dtype, tmod, jnp.asarray(inputs.x))
    torch_names = sorted(torch_names) if impl == "nnx" else torch_names
    errors["names"] = 0.0 if port.names == torch_names else float("inf")
    if port.names != torch_names:
        notes["names"] = f"jaxrnn {port.names} != torch {torch_names}"
    errors["roundtrip"], notes["roundtrip"] = roundtrip_error(tmod, port.back)

    params = port.params
    bad_dtype = [k for k, v in params.items() if v.dtype != jnp.dtype(dtype)]
    if bad_dtype:  # from_torch must keep torch's dtype (float32 in float32 runs, with x64 too)
        errors["names"] = float("inf")
        notes["names"] = f"from_torch params not {dtype}: {bad_dtype}"

    # 3. forward, eager; the jitted forward comes with the gradients below
    x_j = jnp.asarray(inputs.x)
    hx_j = tuple(jnp.asarray(h) for h in inputs.hx)
    lengths_j = None if inputs.lengths is None else jnp.asarray(inputs.lengths, jnp.int32)
    weights_j = tuple(jnp.asarray(r) for r in inputs.weights)
    out_eager, states_eager = jax_forward(port.apply, case, params, x_j, hx_j, lengths_j)

    x_t = torch.from_numpy(inputs.x).requires_grad_(True)
    hx_t = tuple(torch.from_numpy(h).requires_grad_(True) for h in inputs.hx)
    loss_t, out_t, states_t = torch_loss(tmod, case, inputs, x_t, hx_t)
    loss_t.backward()

    state_names = ("h_n", "c_n")
    errors["out"], notes["out"] = worst({"out": (out_eager, out_t)})
    errors["h_n"], notes["h_n"] = worst(
        {n: (g, r) for n, g, r in zip(state_names, states_eager, states_t)}
    )

    # 3 (jit) + 4 + 5. one jitted function: loss, (out, states), gradients wrt (params, x, hx)
    # and one optax Adam update; its first call gives the jitted forward and the gradients.
    opt = optax.adam(ADAM["lr"], b1=ADAM["b1"], b2=ADAM["b2"], eps=ADAM["eps"])
    step = jax.jit(adam_step(jax_loss_fn(port.apply, case), opt))
    (out_jit, states_jit), grads, (p_j, opt_state) = step(
        params, opt.init(params), x_j, hx_j, lengths_j, weights_j
    )
    errors["out_jit"], notes["out_jit"] = worst({"out": (out_jit, out_t)})
    errors["h_n_jit"], notes["h_n_jit"] = worst(
        {n: (g, r) for n, g, r in zip(state_names, states_jit, states_t)}
    )
    g_params, g_x, g_hx = grads
    pairs = {f"d/d {k}": (g_params[k], p.grad) for k, p in tmod.named_parameters()}
    pairs["d/d x"] = (g_x, x_t.grad)
    pairs.update({f"d/d hx[{i}]": (g, h.grad) for i, (g, h) in enumerate(zip(g_hx, hx_t))})
    errors["grads"], notes["grads"] = worst(pairs)

    # 5. Adam, 5 steps, the same fixed input each step (the first step is done above)
    for _ in range(ADAM_STEPS - 1):
        _, _, (p_j, opt_state) = step(p_j, opt_state, x_j, hx_j, lengths_j, weights_j)

    topt = torch.optim.Adam(
        tmod.parameters(), lr=ADAM["lr"], betas=(ADAM["b1"], ADAM["b2"]), eps=ADAM["eps"]
    )
    x_fixed = torch.from_numpy(inputs.x)
    hx_fixed = tuple(torch.from_numpy(h) for h in inputs.hx)
    for _ in range(ADAM_STEPS):
        topt.zero_grad()
        torch_loss(tmod, case, inputs, x_fixed, hx_fixed)[0].backward()
        topt.step()
    errors["adam5"], notes["adam5"] = worst({k: (p_j[k], v) for k, v in tmod.state_dict().items()})
    return CaseReport(errors, notes)


def roundtrip_error(tmod, back) -> tuple[float, str]:
    """torch → jaxrnn → torch (``back``): 0 when bit-exact (``torch.equal`` on every tensor,
    same keys in the same order, same dtypes, same hyperparameters), else the worst |Δ| or
    inf."""
    if type(back) is not type(tmod):
        return float("inf"), f"to_torch gave {type(back).__name__}"
    for attr in (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "bidirectional",
        "proj_size",
        "nonlinearity",
        "mode",
        "dropout",
    ):
        if getattr(back, attr, None) != getattr(tmod, attr, None):
            return float("inf"), f"{attr}: {getattr(back, attr)} != {getattr(tmod, attr)}"
    a, b = tmod.state_dict(), back.state_dict()
    if list(a) != list(b):
        return float("inf"), f"keys {list(b)} != {list(a)}"
    diffs = {}
    for k in a:
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape:
            return float("inf"), f"{k}: {b[k].dtype}{tuple(b[k].shape)}"
        if not torch.equal(a[k], b[k]):
            diff = float((a[k] - b[k]).abs().max())
            diffs[k] = diff if diff > 0 else float("nan")  # unequal but |Δ| = 0: NaNs
    if not diffs:
        return 0.0, ""
    where = max(diffs, key=lambda k: (np.isnan(diffs[k]), diffs[k]))
    return diffs[where], where
