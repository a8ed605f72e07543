"""jaxrnn: recurrent neural networks the JAX way.

Every recurrence is a ``jax.lax.scan`` over a cell; the layers are Flax linen modules whose
parameters are exactly a PyTorch ``state_dict``. The README is the reference.
"""

from .cells import GRUCell, LinearCell, LSTMCell, RNNCell
from .embedding import Embed, TokenIdError, check_ids, checked
from .interop import from_torch, params_to_state_dict, state_dict_to_params, to_torch
from .layers import GRU, LSTM, RNN, LinearRNN

__version__ = "0.1.0"

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "LinearRNN",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "LinearCell",
    "Embed",
    "TokenIdError",
    "check_ids",
    "checked",
    "from_torch",
    "to_torch",
    "params_to_state_dict",
    "state_dict_to_params",
]
