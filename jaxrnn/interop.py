"""PyTorch ↔ jaxrnn: modules, state_dicts and whole models by name.

The mapping is by name, with two leaf rules:

* a Flax submodule path joined by ``"."`` is the torch attribute path
  (``{"encoder": {"rnn": {...}}}`` ↔ ``encoder.rnn.*``);
* Dense ``kernel [in, out]`` ↔ torch Linear ``weight [out, in]`` (transposed);
  Embed ``embedding`` ↔ Embedding ``weight``; every other leaf (recurrent weights, biases,
  learnable states) is identical.

torch is imported only inside the functions that need it: ``import jaxrnn`` works without it.
"""

from __future__ import annotations

import io
import pathlib
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import cells, layers
from .embedding import Embed
from .files import atomic_write

# torch class name → its kind (cells.KINDS); jaxrnn's layer or cell has the same name. The two
# Elman kinds share nn.RNN and nn.RNNCell, and every fact read here (class, keywords).
_TORCH_LAYERS = {k.torch_layer: k for k in cells.KINDS.values() if k.torch_layer}
_TORCH_CELLS = {k.torch_cell: k for k in cells.KINDS.values() if k.torch_cell}
# Constructor keywords every layer / cell has, in torch and in jaxrnn alike (``input_size``
# aside); a kind adds its own (Kind.layer_keywords, Kind.cell_keywords).
_LAYER_KEYWORDS = ("hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL_KEYWORDS = ("hidden_size", "bias")


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _jax_dtype(torch_dtype) -> Any:
    """torch's dtype as jax's; float64 without ``jax_enable_x64`` is refused (jax would cast
    the weights to float32 without a word, and the port would no longer be exact)."""
    dtype = jnp.dtype(str(torch_dtype).removeprefix("torch."))
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise TypeError(
            "the torch module is float64, but jax_enable_x64 is off: its weights would be cast "
            "to float32. Call jax.config.update('jax_enable_x64', True) first, or convert the "
            "module with .float()"
        )
    return dtype


# ----------------------------------------------------------------------------- names


def _leaf_to_torch(path: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
    *prefix, leaf = path
    if leaf == "kernel":
        if value.ndim != 2:
            raise ValueError(
                f"{'.'.join(path)}: only 2-D Dense kernels map to torch Linear weights, "
                f"got shape {value.shape}"
            )
        leaf, value = "weight", value.T
    elif leaf == "embedding":
        leaf = "weight"
    return ".".join((*prefix, leaf)), value


def _flatten(params: Mapping, prefix: tuple[str, ...] = ()):
    for key, value in params.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def as_params(tree) -> Mapping:
    """Flax params from params, ``{"params": params}``, an ``nnx.State`` or an ``nnx.Module``
    (its ``nnx.Param`` leaves, as a nested dict)."""
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    if "params" in tree and isinstance(tree["params"], Mapping) and len(tree) == 1:
        tree = tree["params"]
    return tree


def params_to_state_dict(params) -> dict[str, np.ndarray]:
    """Flax params (nested dict) → ``{torch_name: numpy array}`` in torch layouts.

    Pass ``variables["params"]`` (or the variables), an ``nnx.State`` such as
    ``nnx.state(model, nnx.Param)``, or an NNX model. Returns NumPy arrays
    (``torch.from_numpy`` takes them as is).
    """
    params = as_params(params)
    return dict(_leaf_to_torch(path, np.asarray(v)) for path, v in _flatten(params))


def state_dict_to_params(state_dict: Mapping, like) -> dict:
    """A torch ``state_dict`` → Flax params with the structure, shapes and dtypes of ``like``.

    ``like`` is the params of the target model (e.g. ``model.init(...)["params"]``), an
    ``nnx.State`` of them, or an NNX model (then ``nnx.update(model, params)`` loads the
    result). Every key must match (missing and unexpected keys are listed in one error), every
    shape must match after the Dense transpose, and values are cast to ``like``'s dtypes.

    A state_dict does not carry ``padding_idx``: an embedding's padding row is the target
    module's (``Embed(padding_idx=...)``). Given an NNX model, a padding row that is not zero
    in the state_dict warns: torch keeps that row at zero unless it was set by hand, so the
    torch model most likely had another ``padding_idx`` (or none) and the row would be frozen
    here where torch trained it.
    """
    padding = _padding_rows(like)
    like = as_params(like)
    expected = {_leaf_to_torch(path, np.asarray(v))[0]: path for path, v in _flatten(like)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise KeyError(
            "state_dict does not match the model's parameters:"
            + (f"\n  missing keys: {missing}" if missing else "")
            + (f"\n  unexpected keys: {unexpected}" if unexpected else "")
            + f"\n  the model expects: {list(expected)}"
        )
    out: dict = {}
    problems = []
    for name, path in expected.items():
        ref = _get(like, path)
        value = _to_numpy(state_dict[name])
        if path[-1] == "kernel" and value.ndim == 2:
            value = value.T
        if value.shape != tuple(ref.shape):
            torch_shape = value.T.shape if path[-1] == "kernel" else value.shape
            want = tuple(ref.shape)[::-1] if path[-1] == "kernel" else tuple(ref.shape)
            problems.append(f"  {name}: state_dict has {torch_shape}, the model needs {want}")
            continue
        _set(out, path, jnp.asarray(value, dtype=ref.dtype))
    if problems:
        raise ValueError("shape mismatch between state_dict and model:\n" + "\n".join(problems))
    _warn_padding_rows(state_dict, padding)
    return out


def _padding_rows(model) -> dict[str, int]:
    """``{torch name of the table: padding_idx}`` of every embedding with a padding row in an
    NNX model (linen params carry no modules: empty)."""
    if not isinstance(model, nnx.Module):
        return {}
    rows = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and getattr(node, "padding_idx", None) is not None:
            rows[".".join((*map(str, path), "weight"))] = node.padding_idx
    return rows


def _warn_padding_rows(state_dict: Mapping, padding: dict[str, int]) -> None:
    for name, row in padding.items():
        values = _to_numpy(state_dict[name])[row]
        if np.any(values != 0):
            warnings.warn(
                f"state_dict[{name!r}][{row}] is not zero, but the target embedding has "
                f"padding_idx={row}: torch keeps its padding row at zero unless set by hand, so "
                "the torch model likely had another padding_idx (or none). Here the row is "
                "looked up as given and never trained.",
                UserWarning,
                stacklevel=3,
            )


def _get(tree: Mapping, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


# ----------------------------------------------------------------------------- modules


class TorchModule(NamedTuple):
    """A supported torch module, read: ``what`` is ``"layer"`` (nn.RNN/LSTM/GRU), ``"cell"``,
    ``"Linear"`` or ``"Embedding"``; ``name`` its class; ``kwargs`` torch's constructor
    keywords; ``dtype`` its parameters' (as jax's); ``state`` its state_dict as NumPy."""

    what: str
    name: str
    kwargs: dict
    dtype: Any
    state: dict


def read_torch(module) -> TorchModule:
    """What :func:`from_torch` (and ``jaxrnn.nnx.from_torch``) build from a torch module.

    Refuses modules without an exact jaxrnn equivalent, and float64 without x64.
    """
    name = type(module).__name__
    if name in _TORCH_LAYERS:
        what, keywords = "layer", (*_LAYER_KEYWORDS, *_TORCH_LAYERS[name].layer_keywords)
    elif name in _TORCH_CELLS:
        what, keywords = "cell", (*_CELL_KEYWORDS, *_TORCH_CELLS[name].cell_keywords)
    elif name == "Linear":
        what, keywords = "Linear", ("in_features", "out_features")
    elif name == "Embedding":
        what, keywords = "Embedding", ("num_embeddings", "embedding_dim", "padding_idx")
        _refuse_embedding_options(module)
    else:
        raise TypeError(
            f"from_torch supports nn.RNN/LSTM/GRU, their Cells, Linear and Embedding; "
            f"got {name}. For a whole model use state_dict_to_params(model.state_dict(), like=...)"
        )
    kwargs = {k: getattr(module, k) for k in keywords}
    if what in ("layer", "cell"):
        kwargs["input_size"] = module.input_size
    if what == "layer":
        kwargs["dropout"] = float(module.dropout)
    if what == "Linear":
        kwargs["bias"] = module.bias is not None
    dtype = _jax_dtype(next(module.parameters()).dtype)
    state = {k: _to_numpy(v) for k, v in module.state_dict().items()}
    return TorchModule(what, name, kwargs, dtype, state)


def _refuse_embedding_options(module) -> None:
    unsupported = {
        "max_norm": module.max_norm is not None,
        "scale_grad_by_freq": module.scale_grad_by_freq,
        "sparse": module.sparse,
    }
    if any(unsupported.values()):
        names = ", ".join(k for k, v in unsupported.items() if v)
        raise ValueError(
            f"from_torch: nn.Embedding with {names} has no jaxrnn.Embed equivalent "
            f"(the forward or the gradient would differ); build it without them"
        )


def from_torch(module) -> tuple[nn.Module, dict]:
    """A torch module → ``(flax_module, variables)`` computing the same function.

    Supports ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.RNNCell``, ``nn.LSTMCell``,
    ``nn.GRUCell``, ``nn.Linear`` and ``nn.Embedding`` (``padding_idx`` included). Parameters
    keep their torch dtype: a float64 module needs ``jax.config.update("jax_enable_x64",
    True)`` first (refused otherwise, rather than cast to float32). ``jaxrnn.nnx.from_torch``
    builds the NNX modules instead.
    """
    torch_module = read_torch(module)
    kwargs, dtype, params = dict(torch_module.kwargs), torch_module.dtype, torch_module.state
    if torch_module.what == "layer":
        flax_module = getattr(layers, torch_module.name)(**kwargs, param_dtype=dtype)
    elif torch_module.what == "cell":
        del kwargs["input_size"]
        flax_module = getattr(cells, torch_module.name)(**kwargs, param_dtype=dtype)
    elif torch_module.what == "Linear":
        flax_module = nn.Dense(kwargs["out_features"], use_bias=kwargs["bias"], param_dtype=dtype)
        params = {"kernel": params["weight"].T} | (
            {"bias": params["bias"]} if kwargs["bias"] else {}
        )
    else:
        flax_module = Embed(
            num_embeddings=kwargs["num_embeddings"],
            features=kwargs["embedding_dim"],
            padding_idx=kwargs["padding_idx"],
            param_dtype=dtype,
        )
        params = {"embedding": params["weight"]}
    return flax_module, {"params": {k: jnp.asarray(v) for k, v in params.items()}}


def to_torch(flax_module: nn.Module, variables: Mapping | None = None):
    """A jaxrnn/Flax module and its variables → the equivalent torch module, weights loaded.

    NNX modules carry their weights: ``jaxrnn.nnx.to_torch(model)``.
    """
    if isinstance(flax_module, nnx.Module):
        raise TypeError(
            f"{type(flax_module).__name__} is an NNX module: use jaxrnn.nnx.to_torch(model)"
        )
    if variables is None:
        raise TypeError("to_torch(module, variables): a linen module needs its variables")
    torch = import_torch("to_torch")

    params = variables.get("params", variables)
    some = np.asarray(next(iter(jnp.asarray(v) for _, v in _flatten(params))))
    dtype = getattr(torch, str(some.dtype))
    if isinstance(flax_module, layers.RNNBase):
        kind = cells.KINDS[flax_module.kind]
        keywords = (*_LAYER_KEYWORDS, *kind.layer_keywords)
        kwargs = {k: getattr(flax_module, k) for k in keywords}
        input_size = params["weight_ih_l0"].shape[1]
        module = getattr(torch.nn, kind.torch_layer)(input_size=input_size, **kwargs)
    elif isinstance(flax_module, cells._Cell) and cells.KINDS[flax_module.kind].torch_cell:
        kind = cells.KINDS[flax_module.kind]
        keywords = (*_CELL_KEYWORDS, *kind.cell_keywords)
        kwargs = {k: getattr(flax_module, k) for k in keywords}
        input_size = params["weight_ih"].shape[1]
        module = getattr(torch.nn, kind.torch_cell)(input_size=input_size, **kwargs)
    elif isinstance(flax_module, nn.Dense):
        in_features, out_features = params["kernel"].shape
        module = torch.nn.Linear(in_features, out_features, bias=flax_module.use_bias)
    elif isinstance(flax_module, (Embed, nn.Embed)):
        padding_idx = getattr(flax_module, "padding_idx", None)
        module = torch.nn.Embedding(
            flax_module.num_embeddings, flax_module.features, padding_idx=padding_idx
        )
    else:
        raise TypeError(
            f"to_torch supports jaxrnn RNN/LSTM/GRU, their cells, Dense and Embed; got "
            f"{type(flax_module).__name__}. For a whole model use params_to_state_dict(params)"
        )
    module = module.to(dtype)
    # np.array copies: arrays from JAX are read-only, which torch.from_numpy warns about.
    state = {k: torch.from_numpy(np.array(v)) for k, v in params_to_state_dict(params).items()}
    module.load_state_dict(state, strict=True)
    return module


# ----------------------------------------------------------------------------- files


def import_torch(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch: pip install 'jaxrnn[parity]'") from None
    return torch


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """A ``torch.save``-d ``state_dict`` file → ``{name: numpy array}``.

    Read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
    arbitrary pickled objects, so an untrusted file cannot run code. A whole pickled module
    is refused (save ``model.state_dict()`` instead).
    """
    torch = import_torch("reading a torch state_dict")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no torch state_dict file at {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors, or a refused non-weights object
        raise ValueError(
            f"{path} is not a loadable torch state_dict ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ValueError(
            f"{path} holds a {type(loaded).__name__}, not a state_dict "
            "(a mapping of names to tensors): save model.state_dict()"
        )
    return {k: v.detach().cpu().numpy() for k, v in loaded.items()}


def save_torch_state_dict(state_dict: Mapping, path) -> None:
    """``{name: array}`` → a ``torch.save`` file that ``model.load_state_dict`` takes, written
    atomically (temp file in the same folder, then renamed)."""
    torch = import_torch("writing a torch state_dict")
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, buffer)
    atomic_write(pathlib.Path(path), buffer.getvalue())
