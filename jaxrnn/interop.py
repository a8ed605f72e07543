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
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

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
    return jnp.dtype(str(torch_dtype).removeprefix("torch."))


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


def params_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """Flax params (nested dict) → ``{torch_name: numpy array}`` in torch layouts.

    Pass ``variables["params"]``. Returns NumPy arrays (``torch.from_numpy`` takes them as is).
    """
    if "params" in params and isinstance(params["params"], Mapping) and len(params) == 1:
        params = params["params"]
    return dict(_leaf_to_torch(path, np.asarray(v)) for path, v in _flatten(params))


def state_dict_to_params(state_dict: Mapping, like: Mapping) -> dict:
    """A torch ``state_dict`` → Flax params with the structure, shapes and dtypes of ``like``.

    ``like`` is the params of the target model (e.g. ``model.init(...)["params"]``). Every key
    must match (missing and unexpected keys are listed in one error), every shape must match
    after the Dense transpose, and values are cast to ``like``'s dtypes.
    """
    if "params" in like and isinstance(like["params"], Mapping) and len(like) == 1:
        like = like["params"]
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
    return out


def _get(tree: Mapping, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


# ----------------------------------------------------------------------------- modules


def from_torch(module) -> tuple[nn.Module, dict]:
    """A torch module → ``(flax_module, variables)`` computing the same function.

    Supports ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.RNNCell``, ``nn.LSTMCell``,
    ``nn.GRUCell``, ``nn.Linear`` and ``nn.Embedding``. Parameters keep their torch dtype
    (float64 needs ``jax.config.update("jax_enable_x64", True)``).
    """
    name = type(module).__name__
    state = {k: _to_numpy(v) for k, v in module.state_dict().items()}
    dtype = _jax_dtype(next(module.parameters()).dtype)
    if name in _TORCH_LAYERS:
        keywords = ("input_size", *_LAYER_KEYWORDS, *_TORCH_LAYERS[name].layer_keywords)
        kwargs = {k: getattr(module, k) for k in keywords} | {"dropout": float(module.dropout)}
        flax_module, params = getattr(layers, name)(**kwargs, param_dtype=dtype), state
    elif name in _TORCH_CELLS:
        keywords = (*_CELL_KEYWORDS, *_TORCH_CELLS[name].cell_keywords)
        kwargs = {k: getattr(module, k) for k in keywords}
        flax_module, params = getattr(cells, name)(**kwargs, param_dtype=dtype), state
    elif name == "Linear":
        flax_module = nn.Dense(
            module.out_features, use_bias=module.bias is not None, param_dtype=dtype
        )
        params = {
            "kernel": state["weight"].T,
            **({"bias": state["bias"]} if "bias" in state else {}),
        }
    elif name == "Embedding":
        unsupported = {
            "max_norm": module.max_norm is not None,
            "padding_idx": module.padding_idx is not None,
            "scale_grad_by_freq": module.scale_grad_by_freq,
            "sparse": module.sparse,
        }
        if any(unsupported.values()):
            names = ", ".join(k for k, v in unsupported.items() if v)
            raise ValueError(
                f"from_torch: nn.Embedding with {names} has no jaxrnn.Embed equivalent "
                f"(the forward or the gradient would differ); build it without them"
            )
        flax_module = Embed(
            num_embeddings=module.num_embeddings,
            features=module.embedding_dim,
            param_dtype=dtype,
        )
        params = {"embedding": state["weight"]}
    else:
        raise TypeError(
            f"from_torch supports nn.RNN/LSTM/GRU, their Cells, Linear and Embedding; "
            f"got {name}. For a whole model use state_dict_to_params(model.state_dict(), like=...)"
        )
    return flax_module, {"params": {k: jnp.asarray(v) for k, v in params.items()}}


def to_torch(flax_module: nn.Module, variables: Mapping):
    """A jaxrnn/Flax module and its variables → the equivalent torch module, weights loaded."""
    torch = _import_torch("to_torch")

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
        module = torch.nn.Embedding(flax_module.num_embeddings, flax_module.features)
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


def _import_torch(what: str):
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
    torch = _import_torch("reading a torch state_dict")
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
    torch = _import_torch("writing a torch state_dict")
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, buffer)
    atomic_write(pathlib.Path(path), buffer.getvalue())
