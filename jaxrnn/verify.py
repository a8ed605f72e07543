"""Port verification: a torch model against its Flax port, tensor by tensor.

:func:`verify` copies the torch model's parameters into the Flax params by name (the rules of
:func:`jaxrnn.state_dict_to_params`), runs both frameworks on the same inputs and compares

  output    every array of the outputs (any matching nest of tuples, lists and dicts)
  loss      the loss (default: a random-weighted sum of the floating outputs, the same fixed
            weights on both sides)
  grad      d loss / d every parameter (by torch name) and every floating input
  step k    the loss that step k differentiates (k ≥ 2) and every parameter after step k of
            ``torch.optim.Adam`` and ``optax.adam`` with the same hyperparameters

per tensor, torch as the reference, with one error for every check:

  error = max|got - ref| / max(1, max|ref|)        (:func:`relative_error`)

NaN on either side fails, a shape or dtype mismatch is ``inf``, integer outputs must be equal.
Tolerances (:data:`TOLERANCES`): float64 1e-10, float32 2e-5. The parity suite (``parity/``)
compares with the same functions.

torch Adam and optax.adam put ``eps`` in the same place, outside the square root:
``m̂ / (√v̂ + eps)`` (torch: ``denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)``; optax
``scale_by_adam``: ``m / (sqrt(v + eps_root) + eps)`` with ``eps_root=0``), so the same
hyperparameters mean the same optimizer. Adam divides by ``|g| + eps``: for an element whose
gradient is near zero, a last-bit rounding difference of ``δ`` moves the parameter by up to
``lr·δ/eps``. ``eps`` defaults to 1e-2, not torch's 1e-8, so that float32 rounding stays far
below the tolerance whatever the gradients (the steps check the port, not a training recipe).

torch is imported inside :func:`verify` only: ``import jaxrnn`` works without it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .engine import clip_grad_norm
from .interop import params_to_state_dict, state_dict_to_params

TOLERANCES = {"float64": 1e-10, "float32": 2e-5}  # per tensor, max|Δ| / max(1, max|ref|)
ADAM = dict(learning_rate=1e-3, betas=(0.9, 0.999), eps=1e-2)  # verify's defaults (see above)
_STEP_CACHE_SIZE = 8  # compiled JAX steps kept, keyed by (flax_apply, loss, optimizer, ...)


# ----------------------------------------------------------------------------- errors


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _host(tensor) -> np.ndarray:
    """A torch tensor's values now, as a NumPy copy: a view would change when torch later
    updates the tensor in place (clipping the gradients, an optimizer step)."""
    return _numpy(tensor).copy()


def mismatch(got, ref) -> str:
    """``""``, or how the shapes or dtypes of ``got`` and ``ref`` differ (e.g.
    ``"shape (3, 4) != (3, 5)"``). Arrays: NumPy, JAX or torch."""
    got, ref = _numpy(got), _numpy(ref)
    if got.shape != ref.shape:
        return f"shape {got.shape} != {ref.shape}"
    if got.dtype != ref.dtype:
        return f"dtype {got.dtype} != {ref.dtype}"
    return ""


def relative_error(got, ref) -> float:
    """``max|got - ref| / max(1, max|ref|)``, ``ref`` the reference.

    Args:
      got, ref: arrays (NumPy, JAX or torch) of one shape and dtype.
    Returns:
      the error as a float: NaN if either holds a NaN (so it never passes a tolerance),
      ``inf`` on a shape or dtype mismatch, 0.0 for empty arrays.
    """
    if mismatch(got, ref):
        return float("inf")
    got = np.asarray(_numpy(got), np.float64)
    ref = np.asarray(_numpy(ref), np.float64)
    if np.isnan(got).any() or np.isnan(ref).any():
        return float("nan")
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def worst(pairs: Mapping[str, tuple]) -> tuple[float, str]:
    """The largest :func:`relative_error` over ``{name: (got, ref)}`` (NaN wins) and where:
    ``(error, "name")``, the name followed by the mismatch if shapes or dtypes differ;
    ``(0.0, "")`` for no pairs."""
    result, where = 0.0, ""
    for name, (got, ref) in pairs.items():
        err = relative_error(got, ref)
        if np.isnan(err) or err > result:
            result, where = err, " ".join(filter(None, (name, mismatch(got, ref))))
            if np.isnan(err):
                break
    return result, where


# ----------------------------------------------------------------------------- the report


class Row(NamedTuple):
    """One compared tensor: ``check`` is ``"output"``, ``"loss"``, ``"grad"`` or ``"step k"``;
    ``name`` the tensor (a torch parameter name, ``input[i]``, ``output[...]`` or ``loss``);
    ``note`` says how shapes or dtypes differ, if they do."""

    check: str
    name: str
    error: float
    tolerance: float
    note: str = ""

    @property
    def passed(self) -> bool:
        """``error <= tolerance``; NaN never passes."""
        return bool(self.error <= self.tolerance)


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`verify` found: ``rows`` in the order compared (outputs, loss, gradients,
    then each step), ``dtype`` of the run, ``clipped``: the steps whose gradients torch's
    ``clip_grad_norm_`` scaled down (0 without ``grad_clip``). ``str(report)`` is a table."""

    rows: tuple[Row, ...]
    dtype: str
    clipped: int = 0

    @property
    def ok(self) -> bool:
        """True when every tensor is within its tolerance."""
        return all(row.passed for row in self.rows)

    def failures(self) -> list[str]:
        """The names of the failing tensors, each once, in the order compared."""
        return list(dict.fromkeys(row.name for row in self.rows if not row.passed))

    def worst(self, *checks: str) -> Row | None:
        """The row with the largest error (NaN first) among the rows whose check's first word
        is one of ``checks`` (``"output"``, ``"loss"``, ``"grad"``, ``"step"``; all rows if
        none given); None if there are none."""
        rows = [r for r in self.rows if not checks or r.check.split()[0] in checks]
        key = lambda r: (math.isnan(r.error), r.error)  # noqa: E731
        return max(rows, key=key) if rows else None

    def __str__(self) -> str:
        head = ("check", "tensor", "error", "tolerance", "result")
        cells = [head] + [
            (
                r.check,
                r.name,
                f"{r.error:.1e}" if r.error else "0",
                f"{r.tolerance:.0e}" if r.tolerance else "exact",
                ("ok" if r.passed else "FAIL") + (f" ({r.note})" if r.note else ""),
            )
            for r in self.rows
        ]
        widths = [max(len(c) for c in column) for column in zip(*cells)]
        numeric = (False, False, True, True, False)  # right-aligned columns

        def line(row) -> str:
            padded = (c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric))
            return "| " + " | ".join(padded) + " |"

        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        title = (
            f"jaxrnn.verify ({self.dtype}): error = max|Δ| / max(1, max|ref|) per tensor, "
            "torch the reference"
        )
        return "\n".join([title, line(cells[0]), rule, *map(line, cells[1:]), self.summary()])

    def summary(self) -> str:
        """One line: PASS or FAIL, how many tensors fail, the worst, the failing names."""
        bad = [r for r in self.rows if not r.passed]
        top = self.worst()
        where = f"worst {top.error:.1e} at {top.check} {top.name}" if top else "nothing compared"
        clipped = f"; {self.clipped} step(s) clipped" if self.clipped else ""
        if not bad:
            return f"PASS: all {len(self.rows)} tensors within tolerance ({where}{clipped})"
        names = ", ".join(self.failures())
        return f"FAIL: {len(bad)} of {len(self.rows)} tensors exceed tolerance ({where}): {names}"


# ----------------------------------------------------------------------------- nests


def _leaves(nest, path: str = "output") -> list[tuple[str, Any]]:
    """``[(path, array)]`` of a nest of tuples, lists and dicts (keys sorted); ``None`` holds
    no array."""
    if isinstance(nest, Mapping):
        return [x for k in sorted(nest, key=str) for x in _leaves(nest[k], f"{path}[{k!r}]")]
    if isinstance(nest, (tuple, list)):
        return [x for i, v in enumerate(nest) for x in _leaves(v, f"{path}[{i}]")]
    return [] if nest is None else [(path, nest)]


def _describe(nest) -> str:
    """The structure of a nest: ``{'state': (array, array), 'y': array}``."""
    if isinstance(nest, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(nest[k])}" for k in sorted(nest, key=str)) + "}"
    if isinstance(nest, (tuple, list)):
        inner = ", ".join(_describe(v) for v in nest)
        return f"({inner},)" if len(nest) == 1 else f"({inner})"
    return "None" if nest is None else "array"


def _weighted_sum(outputs, weights: Mapping[str, Any]):
    """``Σ_leaf Σ leaf · weights[path]`` over the floating outputs that have weights."""
    terms = [(a * weights[p]).sum() for p, a in _leaves(outputs) if p in weights]
    return sum(terms[1:], terms[0])


def _check_structure(torch_outputs: str, flax_outputs) -> None:
    """``torch_outputs``: the :func:`_describe` of torch's outputs."""
    if _describe(flax_outputs) != torch_outputs:
        raise ValueError(
            "verify: the outputs differ in structure (tuples and lists count as the same):"
            f"\n  torch_model gives {torch_outputs}"
            f"\n  flax_apply gives  {_describe(flax_outputs)}"
        )


# ----------------------------------------------------------------------------- settings


def _check_dtype(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in TOLERANCES:
        raise ValueError(f"verify: dtype must be 'float64' or 'float32', got {dtype!r}")
    if name == "float64" and not jax.config.read("jax_enable_x64"):
        raise RuntimeError(
            "verify: dtype='float64' needs 64-bit JAX, which is off: call "
            'jax.config.update("jax_enable_x64", True) first (or set JAX_ENABLE_X64=1), or '
            "pass dtype='float32'"
        )
    return name


def _check_inputs(inputs, what: str = "inputs") -> tuple[np.ndarray, ...]:
    if not isinstance(inputs, (tuple, list)):
        raise TypeError(
            f"verify: {what} must be a tuple of arrays (the positional arguments of both "
            f"models), got {type(inputs).__name__}; for one array write (x,)"
        )
    arrays = tuple(_numpy(a) for a in inputs)
    for i, a in enumerate(arrays):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"verify: {what}[{i}] must be a numeric array, got dtype {a.dtype}")
    return arrays


@contextlib.contextmanager
def _full_precision(torch):
    """Matmuls at full precision in both frameworks (no TF32 on GPUs), restored after."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("jaxrnn.verify needs PyTorch: pip install 'jaxrnn[parity]'") from None
    return torch


# ----------------------------------------------------------------------------- weights


def _copy_weights(torch_model, params: Mapping, dtype: str) -> Mapping:
    """The torch model's parameters in ``params``' structure (values cast to ``dtype``);
    a name or shape mismatch raises, listing every one."""
    wrapped = "params" in params and isinstance(params["params"], Mapping) and len(params) == 1
    tree = params["params"] if wrapped else params

    def zeros(leaf):
        kind = np.dtype(leaf.dtype).kind
        return np.zeros(leaf.shape, dtype if kind == "f" else leaf.dtype)

    like = jax.tree.map(zeros, tree)
    # copies (_host): JAX may alias a NumPy buffer, and torch's optimizer updates in place
    torch_params = {k: _host(p) for k, p in torch_model.named_parameters()}
    flax_names = sorted(params_to_state_dict(like))
    only_flax = [k for k in flax_names if k not in torch_params]
    only_torch = [k for k in torch_params if k not in flax_names]
    if only_flax or only_torch:
        raise ValueError(
            "verify: the torch model's parameters and `params` differ by name (a Flax path "
            "joined by '.' is the torch name; Dense 'kernel' is torch 'weight'):"
            + (f"\n  only in params (Flax): {only_flax}" if only_flax else "")
            + (f"\n  only in torch_model: {only_torch}" if only_torch else "")
        )
    try:
        out = state_dict_to_params(torch_params, like=like)
    except ValueError as e:  # its lines: "  name: state_dict has (torch), the model needs (Flax)"
        lines = str(e).splitlines()[1:] or [str(e)]
        raise ValueError(
            "verify: the torch model's parameters and `params` differ in shape (torch's "
            "first, in torch's layout):\n" + "\n".join(lines)
        ) from None
    return {"params": out} if wrapped else out


# ----------------------------------------------------------------------------- the two sides


def _optimizer(learning_rate, b1, b2, eps, grad_clip) -> optax.GradientTransformation:
    """optax.adam with torch's hyperparameters, :func:`jaxrnn.engine.clip_grad_norm` (torch's
    ``clip_grad_norm_`` formula) first when ``grad_clip > 0``: the chain of
    ``jaxrnn.engine.make_optimizer``."""
    adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    return optax.chain(clip_grad_norm(grad_clip), adam) if grad_clip > 0 else adam


def _jax_step(flax_apply, loss, hyper: tuple, floating: tuple[int, ...], structure: str, jit):
    """``(step, init)``: ``init(params) -> opt_state`` and ``step(params, opt_state, inputs,
    weights) -> (outputs, loss, (d params, d floating inputs), (params, opt_state))`` — the
    forward, the gradients and one optimizer update, jitted as one; the outputs must have the
    ``structure`` of torch's (checked while tracing). Cached (the last few): verifying the same
    ``flax_apply`` again compiles nothing new."""
    key = (flax_apply, loss, hyper, floating, structure, jit)
    try:
        hash(key)
    except TypeError:  # an unhashable flax_apply or loss: built, not cached
        return _build_step(*key)
    return _cached_step(*key)


@functools.lru_cache(maxsize=_STEP_CACHE_SIZE)
def _cached_step(*key):
    return _build_step(*key)


def _build_step(flax_apply, loss, hyper, floating, structure, jit):
    """:func:`_jax_step`, not cached."""
    opt = _optimizer(*hyper)

    def loss_fn(params, floats, inputs, weights):
        inputs = list(inputs)
        for i, a in zip(floating, floats):
            inputs[i] = a
        outputs = flax_apply(params, *inputs)
        _check_structure(structure, outputs)
        value = _weighted_sum(outputs, weights) if loss is None else loss(outputs, *inputs)
        return value, outputs

    def step(params, opt_state, inputs, weights):
        floats = tuple(inputs[i] for i in floating)
        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (value, outputs), grads = grad_fn(params, floats, inputs, weights)
        updates, opt_state = opt.update(grads[0], opt_state, params)
        return outputs, value, grads, (optax.apply_updates(params, updates), opt_state)

    return (jax.jit(step), jax.jit(opt.init)) if jit else (step, opt.init)


class _Side(NamedTuple):
    """One framework's results as NumPy: outputs (a nest), the first loss, the gradients by
    name (parameters by torch name, then ``input[i]``), each step's parameters by torch name
    and each step's loss."""

    outputs: Any
    loss: np.ndarray
    grads: dict[str, np.ndarray]
    params: list[dict[str, np.ndarray]]
    losses: list[np.ndarray]


def _run_jax(flax_apply, loss, params, all_inputs, weights, hyper, floating, structure, jit):
    """The JAX side, a :class:`_Side`. ``all_inputs[0]``: the inputs of the outputs and
    gradients; ``all_inputs[k]``: step k's (the same object as ``all_inputs[0]`` when step 1
    runs on them: its update is reused)."""
    step, init = _jax_step(flax_apply, loss, hyper, floating, structure, jit)
    weights = {k: jnp.asarray(v) for k, v in weights.items()}
    inputs = tuple(jnp.asarray(a) for a in all_inputs[0])
    outputs, value, (g_params, g_inputs), state = step(params, init(params), inputs, weights)
    grads = params_to_state_dict(g_params)
    grads.update({f"input[{i}]": np.asarray(g) for i, g in zip(floating, g_inputs)})
    side = _Side(jax.tree.map(np.asarray, outputs), np.asarray(value), grads, [], [])
    for k, step_inputs in enumerate(all_inputs[1:]):
        if k > 0 or step_inputs is not all_inputs[0]:  # else the update above is step 1
            p, opt_state = state if k > 0 else (params, init(params))
            step_inputs = tuple(jnp.asarray(a) for a in step_inputs)
            _, value, _, state = step(p, opt_state, step_inputs, weights)
        side.losses.append(np.asarray(value))
        side.params.append(params_to_state_dict(state[0]))
    return side


def _call(torch_model, *inputs):
    return torch_model(*inputs)


def _run_torch(torch, model, torch_apply, loss, all_inputs, hyper, floating, seed):
    """The torch side of :func:`_run_jax` (``model`` is trained in place) → ``(side, weights,
    clipped)``: ``weights`` of the default loss (``{}`` with a ``loss``), drawn from
    ``seed`` for the floating outputs of the first forward; ``clipped``: the steps whose
    gradient norm exceeded ``grad_clip``."""
    learning_rate, b1, b2, eps, grad_clip = hyper
    if next(model.parameters(), None) is None:
        raise ValueError("verify: torch_model has no parameters to compare")
    device = next(model.parameters()).device
    weights: dict[str, np.ndarray] = {}

    def tensors(arrays, grad: bool):
        # integer arrays as int64: what torch's indexing ops (embedding, one_hot, losses) take
        out = [torch.from_numpy(np.array(a, np.int64 if a.dtype.kind in "iu" else a.dtype))
               .to(device) for a in arrays]  # fmt: skip
        for i in floating if grad else ():
            out[i].requires_grad_(True)  # on the device: a leaf, whose .grad torch fills
        return tuple(out)

    def forward(inputs):
        outputs = torch_apply(model, *inputs)
        if loss is not None:
            value = loss(outputs, *inputs)
        else:
            if not weights:
                weights.update(_default_weights(torch, outputs, seed))
            value = _weighted_sum(outputs, {k: torch.from_numpy(w).to(device)
                                            for k, w in weights.items()})  # fmt: skip
        if not torch.is_tensor(value) or value.numel() != 1:
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"verify: loss must return a scalar tensor in torch, got {shape}")
        return outputs, value

    inputs = tensors(all_inputs[0], grad=True)
    outputs, value = forward(inputs)
    value.backward()
    grads = {k: _host(p.grad if p.grad is not None else torch.zeros_like(p))
             for k, p in model.named_parameters()}  # fmt: skip
    for i in floating:  # an input the loss does not use has no grad: zero
        grads[f"input[{i}]"] = _host(inputs[i].grad if inputs[i].grad is not None
                                      else torch.zeros_like(inputs[i]))  # fmt: skip
    side = _Side(jax.tree.map(_host, outputs), _host(value), grads, [], [])
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(b1, b2), eps=eps)
    clipped = 0
    for k, step_inputs in enumerate(all_inputs[1:]):
        if k > 0 or step_inputs is not all_inputs[0]:  # else the backward above is step 1's
            optimizer.zero_grad()
            _, value = forward(tensors(step_inputs, grad=False))
            value.backward()
        if grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            clipped += bool(norm > grad_clip)
        optimizer.step()
        side.losses.append(_host(value))
        side.params.append({k: _host(p) for k, p in model.named_parameters()})
    return side, weights, clipped


def _default_weights(torch, outputs, seed: int) -> dict[str, np.ndarray]:
    """One standard-normal array per floating output, in the outputs' dtype, from ``seed``."""
    rng = np.random.default_rng(seed)
    weights = {
        path: rng.standard_normal(tuple(a.shape)).astype(_numpy(a).dtype)
        for path, a in _leaves(outputs)
        if torch.is_tensor(a) and a.is_floating_point()
    }
    if not weights:
        raise ValueError(
            "verify: the torch outputs hold no floating array for the default loss (a "
            "random-weighted sum of them): pass loss="
        )
    return weights


# ----------------------------------------------------------------------------- comparing


def _row(check: str, name: str, got: np.ndarray, ref: np.ndarray, tolerance: float) -> Row:
    """Floating arrays by :func:`relative_error`; integer and boolean ones must be equal (in
    any integer width: JAX without x64 has no int64)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.dtype.kind in "biu" and ref.dtype.kind in "biu" and got.shape == ref.shape:
        error = float(np.max(np.abs(got.astype(np.int64) - ref.astype(np.int64)), initial=0))
        return Row(check, name, error, 0.0)
    return Row(check, name, relative_error(got, ref), tolerance, mismatch(got, ref))


def _compare(t: _Side, j: _Side, tolerance: float) -> list[Row]:
    """The rows: outputs, loss, gradients, then each step's loss (k ≥ 2) and parameters."""
    _check_structure(_describe(t.outputs), j.outputs)
    rows = [
        _row("output", name, got, ref, tolerance)
        for (name, ref), (_, got) in zip(_leaves(t.outputs), _leaves(j.outputs))
    ]
    rows.append(_row("loss", "loss", j.loss, t.loss, tolerance))
    rows += [_row("grad", k, j.grads[k], ref, tolerance) for k, ref in t.grads.items()]
    for k, (ref, got) in enumerate(zip(t.params, j.params), 1):
        if k > 1:
            rows.append(_row(f"step {k}", "loss", j.losses[k - 1], t.losses[k - 1], tolerance))
        rows += [
            _row(f"step {k}", name, got[name], value, tolerance) for name, value in ref.items()
        ]
    return rows


# ----------------------------------------------------------------------------- verify


def verify(
    torch_model,
    flax_apply: Callable,
    params: Mapping,
    inputs: Sequence,
    *,
    loss: Callable | tuple[Callable, Callable] | None = None,
    steps: int = 5,
    dtype: str = "float32",
    learning_rate: float = ADAM["learning_rate"],
    betas: tuple[float, float] = ADAM["betas"],
    eps: float = ADAM["eps"],
    grad_clip: float = 0.0,
    step_inputs: Sequence[Sequence] | None = None,
    torch_apply: Callable | None = None,
    input_grads: bool = True,
    tolerance: float | None = None,
    seed: int = 0,
    jit: bool = True,
) -> Report:
    """Is ``flax_apply`` an exact port of ``torch_model``? Compares them tensor by tensor.

    The torch model's parameters are copied into ``params`` by name (a Flax path joined by
    ``"."`` is the torch name, Dense ``kernel`` is torch ``weight`` transposed: the rules of
    :func:`jaxrnn.state_dict_to_params`), then both run on the same inputs in ``dtype`` (see
    the module docstring). ``torch_model`` is not changed (a copy is trained): put it in the
    mode to compare (dropout off). Buffers are not parameters: give them to ``flax_apply``.

    Args:
      torch_model: a ``torch.nn.Module``.
      flax_apply: ``flax_apply(params, *inputs) -> outputs``, e.g. ``lambda p, x:
        model.apply({"params": p}, x)``; ``outputs``: an array or a nest of tuples, lists and
        dicts of arrays with the structure of ``torch_model``'s.
      params: the Flax params, e.g. ``model.init(key, x)["params"]`` (or ``{"params": ...}``,
        passed on as given); only its structure and shapes are used.
      inputs: a tuple of NumPy arrays, the positional arguments of both models. Floating
        arrays are cast to ``dtype``; integer ones go to torch as int64.
      loss: ``loss(outputs, *inputs) -> scalar`` written for both frameworks (``.sum()``,
        ``.mean()``, arithmetic), or a pair ``(torch_loss, jax_loss)``. Default: a sum of the
        floating outputs weighted by fixed standard-normal arrays (drawn from ``seed``).
      steps: optimizer steps to compare (0: none).
      dtype: ``"float32"`` or ``"float64"`` (needs ``jax_enable_x64``; raises if it is off).
      learning_rate, betas, eps: Adam's, the same in both (eps: see the module docstring).
      grad_clip: if > 0, torch's ``clip_grad_norm_`` before each torch step and the same
        formula (``jaxrnn.engine.clip_grad_norm``) before optax.adam.
      step_inputs: ``steps`` input tuples, one per step; default: ``inputs`` at every step.
      torch_apply: ``torch_apply(torch_model, *inputs) -> outputs``; default
        ``torch_model(*inputs)``.
      input_grads: compare the gradients w.r.t. the floating inputs.
      tolerance: per tensor; default ``TOLERANCES[dtype]`` (float64 1e-10, float32 2e-5).
      seed: of the default loss's weights.
      jit: run the JAX side under ``jax.jit`` (one compilation for all of it).

    Returns:
      a :class:`Report`: ``.ok``, ``.rows`` (check, name, error, tolerance, passed),
      ``.failures()`` (the failing tensor names); ``print(report)`` shows the table.

    Raises:
      ValueError: parameter names or shapes differ (all listed), the outputs differ in
        structure, a bad argument. RuntimeError: float64 without ``jax_enable_x64``.
      ImportError: torch is not installed.
    """
    torch = _import_torch()
    dtype = _check_dtype(dtype)
    torch_loss, jax_loss = _split_loss(loss)
    all_inputs = _all_inputs(inputs, step_inputs, steps, dtype)
    floating = tuple(i for i, a in enumerate(all_inputs[0]) if a.dtype.kind == "f" and input_grads)
    hyper = tuple(float(h) for h in (learning_rate, *betas, eps, grad_clip))
    tolerance = TOLERANCES[dtype] if tolerance is None else float(tolerance)
    with _full_precision(torch), torch.enable_grad():
        model = copy.deepcopy(torch_model).to(getattr(torch, dtype))
        jax_params = _copy_weights(model, params, dtype)
        t, weights, clipped = _run_torch(
            torch, model, torch_apply or _call, torch_loss, all_inputs, hyper, floating, seed
        )
        j = _run_jax(
            flax_apply, jax_loss, jax_params, all_inputs, weights, hyper, floating,
            _describe(t.outputs), jit,
        )  # fmt: skip
    return Report(tuple(_compare(t, j, tolerance)), dtype, clipped)


def _split_loss(loss) -> tuple[Callable | None, Callable | None]:
    if loss is None or callable(loss):
        return loss, loss
    if isinstance(loss, (tuple, list)) and len(loss) == 2 and all(map(callable, loss)):
        return loss[0], loss[1]
    raise TypeError(
        f"verify: loss must be None, a callable loss(outputs, *inputs) or a pair "
        f"(torch_loss, jax_loss), got {type(loss).__name__}"
    )


def _all_inputs(inputs, step_inputs, steps, dtype: str) -> list[tuple[np.ndarray, ...]]:
    """``[inputs, step 1's, ..., step n's]`` as NumPy, floating arrays in ``dtype``; step 1's
    is the very object ``inputs`` when they are the same (its forward is reused)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"verify: steps must be an int >= 0, got {steps!r}")

    def cast(arrays, what):
        arrays = _check_inputs(arrays, what)
        return tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays)

    first = cast(inputs, "inputs")
    if step_inputs is None:
        return [first] * (steps + 1)
    if len(step_inputs) != steps:
        raise ValueError(
            f"verify: step_inputs holds {len(step_inputs)} input tuples but steps={steps}: "
            f"give one tuple per step (steps={len(step_inputs)})"
        )
    return [first] + [
        first if s is inputs else cast(s, f"step_inputs[{k}]") for k, s in enumerate(step_inputs)
    ]
