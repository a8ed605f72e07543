"""jaxrnn: recurrent neural networks the JAX way.

Every recurrence is a ``jax.lax.scan`` over a cell; the layers are Flax linen modules whose
parameters are exactly a PyTorch ``state_dict``. The README is the reference.
"""

import importlib.metadata as _metadata

from . import nnx
from .cells import GRUCell, LinearCell, LSTMCell, RNNCell
from .embedding import Embed, TokenIdError, check_ids, checked
from .interop import from_torch, params_to_state_dict, state_dict_to_params, to_torch
from .layers import GRU, LSTM, RNN, LinearRNN
from .recurrent import Bidirectional, Recurrent
from .verify import verify

try:  # the one version string is pyproject.toml's [project].version, as installed
    __version__ = _metadata.version("jaxrnn")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "LinearRNN",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "LinearCell",
    "Recurrent",
    "Bidirectional",
    "nnx",
    "Embed",
    "TokenIdError",
    "check_ids",
    "checked",
    "from_torch",
    "to_torch",
    "params_to_state_dict",
    "state_dict_to_params",
    "verify",
]
