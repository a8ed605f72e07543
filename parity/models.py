"""The seeds' PyTorch models, cleaned up: the reference that jaxrnn's task models must match.

Each class keeps its seed's structure, its attribute names (so its ``state_dict`` keys are
the seed's) and its Python loops over time — the loops are the reference, not something to
speed up. jaxrnn's task models (``jaxrnn/tasks/*.py``) carry the same parameter paths, so
``jaxrnn.state_dict_to_params(model.state_dict(), like=params)`` maps one onto the other by
name; ``parity/tasks.py`` proves they compute the same thing.

Cleaned up, nothing else: ``Variable`` wrappers and their ``isinstance`` asserts dropped,
``F.tanh`` → ``torch.tanh``, ``super().__init__()``, sizes that were notebook globals
(seed 001's ``batch_size``, ``sequence_length``, ...) are arguments or read from the input,
and buffers the seeds create with ``torch.empty``/``torch.zeros`` (float32 whatever the
model's dtype) take the input's dtype, so a float64 model stays float64.

Seed 000 ``Net`` (Embedding → LSTM → Linear; the seed's cell stops at ``self.rnn =
nn.LSTM()``) → ``index-recall``. Seed 001 ``HiHelloModel`` / ``HiHelloModel2`` (the seed's
``Model``, ``Model2``) → ``hihello``. Seed 002 ``Input2Hidden``, ``Hidden2Output``,
``CustomRNNCell``, ``BitFlipModel`` (its ``Model``) → ``bitflip``. Seed 003 ``LinRNN`` (and its
``generate`` loop) → ``sinusoid``; ``SeqEncoder``, ``SeqDecoder``, ``SeqEncoderDecoder``, the
built-in ``SeqEncoderRNN``, ``SeqDecoderRNN``, ``SeqEncoderDecoderRNN`` and the masked
``SeqEncoderRNNMasked``, ``SeqEncoderDecoderRNNMasked`` → ``copy``; ``SumRNN``, ``SumLSTM`` →
``addition``; ``PredictorLSTM`` (and its sampling loop, :func:`sample_chars`) → ``charlm``, with
the seed's dict Markov model (``parity/markov_seed.py``, verbatim) smoothed one
context at a time by :func:`markov_dict_probabilities`. Seed 004's ``emb`` / ``rnn`` / ``lin``
(notebook globals) as one module, ``SentimentRNN``, per review (``do_rnn``) and packed →
``sentiment``. Not in the seeds: ``SeqEncoderMasked`` / ``SeqEncoderDecoderMasked`` (the seed's
masking on its own cell, jaxrnn's ``copy --set variant=masked``) and ``Seq2Seq`` (jaxrnn's
improved ``addition`` model, in torch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

# ----------------------------------------------------------------------------- seed 000


class Net(nn.Module):
    """Seed 000: Embedding(10, 128) → LSTM → Linear(10) on the last hidden state.

    The seed's cell is ``class Net(nn.Module): def __init__(self): self.rnn = nn.LSTM()``
    (an IndentationError); the layers above complete it as the index-recall task needs:
    ``x [B, d]`` ids → logits ``[B, V]``.
    """

    def __init__(self, n_symbols: int = 10, embedding_dim: int = 128, hidden_size: int = 128):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings=n_symbols, embedding_dim=embedding_dim)
        self.rnn = nn.LSTM(input_size=embedding_dim, hidden_size=hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, n_symbols)

    def forward(self, x):
        out, (h_n, c_n) = self.rnn(self.embedding(x))
        return self.fc(h_n[-1])


# ----------------------------------------------------------------------------- seed 001


class HiHelloModel(nn.Module):
    """Seed 001's ``Model``: one character per call, the hidden state carried by the caller.

    ``forward(x [B, input_size], hidden [1, B, H]) -> (hidden, out [B, num_classes])``; the
    seed's loop (``for input, label in zip(inputs, labels): hidden, output = model(input,
    hidden)``) is :func:`hihello_step_loss`. The seed fixes ``batch_size = 1``; here it is read
    from ``x``.
    """

    def __init__(self, input_size: int = 5, hidden_size: int = 5, num_layers: int = 1):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size  # the seed's num_classes: the RNN output is the logits
        self.num_layers = num_layers
        self.rnn = nn.RNN(input_size=input_size, hidden_size=hidden_size, batch_first=True)

    def forward(self, x, hidden=None):
        batch_size = x.shape[0]
        if hidden is None:
            hidden = self.init_hidden(batch_size, x.dtype)
        x = x.view(batch_size, 1, self.input_size)  # sequence_length = 1: one step per call
        out, hidden = self.rnn(x, hidden)
        out = out.view(-1, self.hidden_size)
        return hidden, out

    def init_hidden(self, batch_size: int = 1, dtype=torch.float32):
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, dtype=dtype)


def hihello_step_loss(model: HiHelloModel, inputs, labels):
    """The seed's training loop for ``Model``: ``loss += criterion(output, label)`` per step.

    ``inputs [B, T, 5]`` one-hot, ``labels [B, T]`` → ``(loss, outputs [B, T, 5])``.
    """
    criterion = nn.CrossEntropyLoss()
    loss = 0
    outputs = []
    hidden = model.init_hidden(inputs.shape[0], inputs.dtype)
    for t in range(inputs.shape[1]):
        hidden, output = model(inputs[:, t], hidden)
        loss += criterion(output, labels[:, t])
        outputs.append(output)
    return loss, torch.stack(outputs, dim=1)


class HiHelloModel2(nn.Module):
    """Seed 001's ``Model2``: the whole sequence in one RNN call.

    ``forward(x [B, T, input_size]) -> out [B·T, num_classes]`` (the seed's
    ``out.view(-1, num_classes)``; it fixes ``batch_s = 1, seq_l = 6``, here read from ``x``).
    """

    def __init__(self, input_size: int = 5, hidden_size: int = 5, num_layers: int = 1):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn = nn.RNN(input_size=input_size, hidden_size=hidden_size, batch_first=True)

    def forward(self, x):
        batch_s, seq_l = x.shape[:2]
        hidden = self.init_hidden(batch_s, x.dtype)
        x = x.view(batch_s, seq_l, self.input_size)
        out, hidden = self.rnn(x, hidden)
        return out.reshape(-1, self.hidden_size)

    def init_hidden(self, batch_s: int = 1, dtype=torch.float32):
        return torch.zeros(self.num_layers, batch_s, self.hidden_size, dtype=dtype)


# ----------------------------------------------------------------------------- seed 002


class Input2Hidden(nn.Module):
    """``h' = tanh(linear_layer([x; h]))`` (``concat_layers``) or ``tanh(linear_layer(x + h))``."""

    def __init__(self, x_dim: int, concat_layers: bool = False):
        super().__init__()
        self.concat_layers = concat_layers
        input_dim = 2 * x_dim if concat_layers else x_dim
        self.linear_layer = nn.Linear(input_dim, x_dim)

    def forward(self, x, h):
        cell_input = torch.cat([x, h], dim=1) if self.concat_layers else x + h
        return torch.tanh(self.linear_layer(cell_input))


class Hidden2Output(nn.Module):
    """``y = tanh(linear_layer([x; h']))`` (``concat_layers``) or ``tanh(linear_layer(x + h'))``."""

    def __init__(self, x_dim: int, out_dim: int, concat_layers: bool = False):
        super().__init__()
        self.concat_layers = concat_layers
        input_dim = 2 * x_dim if concat_layers else x_dim
        self.linear_layer = nn.Linear(input_dim, out_dim)

    def forward(self, x, h):
        cell_input = torch.cat([x, h], dim=1) if self.concat_layers else x + h
        return torch.tanh(self.linear_layer(cell_input))


class CustomRNNCell(nn.Module):
    """``h' = i2h(x, h)``, ``y = h2o(x, h')``: ``forward(x, h) -> (output, h')``."""

    def __init__(self, i2h: Input2Hidden, h2o: Hidden2Output):
        super().__init__()
        self.i2h = i2h
        self.h2o = h2o

    def forward(self, x, h):
        h_prime = self.i2h(x, h)
        output = self.h2o(x, h_prime)
        return output, h_prime


class BitFlipModel(nn.Module):
    """Seed 002's ``Model(embedding, rnn_cell)``: a Python loop of the cell over time.

    ``forward(word_ids [B, T], hidden [B, d] | None) -> (outputs [B, T, O], hidden_states
    [B, T, d])``; ``loss`` is the seed's (cross-entropy over every bit).
    """

    def __init__(self, embedding: nn.Embedding, rnn_cell: CustomRNNCell):
        super().__init__()
        self.embedding = embedding
        self.rnn_cell = rnn_cell
        self.loss_function = nn.CrossEntropyLoss()

    def forward(self, word_ids, hidden=None):
        embeddings = self.embedding(word_ids)
        if hidden is None:
            hidden = embeddings.new_zeros(word_ids.shape[0], self.embedding.embedding_dim)
        max_seq_length = word_ids.shape[-1]
        outputs, hidden_states = [], []
        for i in range(max_seq_length):
            x = embeddings[:, i, :]
            output, hidden = self.rnn_cell(x, hidden)
            outputs.append(output.unsqueeze(1))
            hidden_states.append(hidden.unsqueeze(1))
        return torch.cat(outputs, 1), torch.cat(hidden_states, 1)

    def loss(self, word_ids, target_ids, hidden=None):
        outputs, hidden_states = self.forward(word_ids, hidden=hidden)
        outputs = outputs.view(-1, outputs.shape[-1])
        return self.loss_function(outputs, target_ids.reshape(-1))

    def predict(self, word_ids, hidden=None):
        outputs, hidden_states = self.forward(word_ids, hidden=hidden)
        _, predictions = outputs.view(-1, outputs.shape[-1]).max(1)
        return predictions.view(*word_ids.shape)


def bitflip_model(x_dim: int, concat_layers: bool, n_symbols: int = 2, out_dim: int = 2):
    """The seed's assembly: ``Model(nn.Embedding(2, x_dim), CustomRNNCell(i2h, h2o))``."""
    i2h = Input2Hidden(x_dim, concat_layers=concat_layers)
    h2o = Hidden2Output(x_dim, out_dim, concat_layers=concat_layers)
    return BitFlipModel(nn.Embedding(n_symbols, x_dim), CustomRNNCell(i2h, h2o))


# ----------------------------------------------------------------------------- seed 003: sinusoid


class LinRNN(nn.Module):
    """Linear RNN: ``h_t = input_to_hidden(x_t) + hidden_to_hidden(h_{t-1})``,
    ``y_t = hidden_to_output(h_t)``, ``h_{-1} = initial_hidden_state`` (learnable)."""

    def __init__(self, n_input: int = 1, n_hidden: int = 1, n_output: int = 1):
        super().__init__()
        self.n_input = n_input
        self.n_hidden = n_hidden
        self.n_output = n_output
        self.build()

    def build(self):
        self.input_to_hidden = nn.Linear(self.n_input, self.n_hidden)
        self.hidden_to_hidden = nn.Linear(self.n_hidden, self.n_hidden)
        self.hidden_to_output = nn.Linear(self.n_hidden, self.n_output)
        self.initial_hidden_state = nn.Parameter(torch.randn(self.n_hidden) * 0.01)

    def step(self, x, hidden):
        # assume x.shape = (batch, features)
        new_hidden = self.input_to_hidden(x) + self.hidden_to_hidden(hidden)
        output = self.hidden_to_output(new_hidden)
        return output, new_hidden

    def forward(self, x):
        # assume x.shape = (batch, time, features)
        B, T, F = x.shape
        hidden = self.initial_hidden_state
        outputs = x.new_empty((B, T, self.n_output))
        for t in range(T):
            out, hidden = self.step(x[:, t, :], hidden)
            outputs[:, t, :] = out
        return outputs


def generate(lrnn: LinRNN, x, observe: int):
    """The seed's generation loop (``x, hidden = lrnn.step(x, hidden)``), after first
    observing ``observe`` true samples (the seed observes 1): ``x [B, T, 1] -> [B, T-1, 1]``."""
    hidden = lrnn.initial_hidden_state
    generated = []
    y = None
    for t in range(x.shape[1] - 1):
        x_in = x[:, t] if t < observe else y
        y, hidden = lrnn.step(x_in, hidden)
        generated.append(y)
    return torch.stack(generated, dim=1)


# ----------------------------------------------------------------------------- seed 003: copy


class SeqEncoder(nn.Module):
    """``h' = tanh(input_to_hidden(x) + hidden_to_hidden(h))`` from a learnable h0; returns
    the last state ``[B, H]``."""

    def __init__(self, n_input: int, n_hidden: int):
        super().__init__()
        self.n_input = n_input
        self.n_hidden = n_hidden
        self.build()

    def build(self):
        self.input_to_hidden = nn.Linear(self.n_input, self.n_hidden)
        self.hidden_to_hidden = nn.Linear(self.n_hidden, self.n_hidden)
        self.initial_hidden_state = nn.Parameter(torch.randn(self.n_hidden) * 0.01)

    def step(self, x, hidden):
        return torch.tanh(self.input_to_hidden(x) + self.hidden_to_hidden(hidden))

    def forward(self, x):
        # assume x.shape = batch, time, features
        batch_size, time_length, n_features = x.shape
        hidden = self.initial_hidden_state * x.new_ones(batch_size, 1)
        for i in range(time_length):
            hidden = self.step(x[:, i], hidden)
        return hidden


class SeqDecoder(nn.Module):
    """No input: ``h' = tanh(hidden_to_hidden(h))``, ``y = hidden_to_output(h')``, n steps."""

    def __init__(self, n_hidden: int, n_output: int):
        super().__init__()
        self.n_hidden = n_hidden
        self.n_output = n_output
        self.build()

    def build(self):
        self.hidden_to_hidden = nn.Linear(self.n_hidden, self.n_hidden)
        self.hidden_to_output = nn.Linear(self.n_hidden, self.n_output)

    def step(self, hidden):
        new_hidden = torch.tanh(self.hidden_to_hidden(hidden))
        output = self.hidden_to_output(new_hidden)
        return output, new_hidden

    def forward(self, initial_hidden, n: int):
        batch_size, n_hidden = initial_hidden.shape
        hidden = initial_hidden
        outputs = initial_hidden.new_zeros(batch_size, n, self.n_output)
        for i in range(n):
            output, hidden = self.step(hidden)
            outputs[:, i] = output
        return outputs


class SeqEncoderDecoder(nn.Module):
    """``x [B, T, V]`` one-hot → SeqEncoder → SeqDecoder of T steps → logits ``[B, T, V]``."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.build()

    def build(self):
        self.encoder = SeqEncoder(self.input_dim, self.hidden_dim)
        self.decoder = SeqDecoder(self.hidden_dim, self.input_dim)

    def forward(self, x):
        _, time_length, _ = x.shape
        hidden = self.encoder(x)
        return self.decoder(hidden, time_length)


class SeqEncoderRNN(nn.Module):
    """The built-in RNN encoder: the last hidden state of a 1-layer ``nn.RNN``."""

    def __init__(self, n_input: int, n_hidden: int):
        super().__init__()
        self.n_input = n_input
        self.n_hidden = n_hidden
        self.build()

    def build(self):
        self.rnn = nn.RNN(
            input_size=self.n_input, hidden_size=self.n_hidden, num_layers=1, batch_first=True
        )

    def forward(self, x):
        out, hidden = self.rnn(x)
        return hidden[0]


class SeqDecoderRNN(nn.Module):
    """The built-in RNN decoder: an ``nn.RNN`` fed zeros from the encoder state, a Linear."""

    def __init__(self, n_hidden: int, n_output: int):
        super().__init__()
        self.n_hidden = n_hidden
        self.n_output = n_output
        self.build()

    def build(self):
        self.rnn = nn.RNN(input_size=1, hidden_size=self.n_hidden, batch_first=True)
        self.hidden_to_output = nn.Linear(self.n_hidden, self.n_output)

    def forward(self, initial_hidden, n: int):
        batch_size, n_hidden = initial_hidden.shape
        # input a bunch of zeros, because the RNN requires input
        inputs = initial_hidden.new_zeros(batch_size, n, 1)
        outputs, hidden = self.rnn(inputs, initial_hidden[None])
        return self.hidden_to_output(outputs.reshape(batch_size * n, self.n_hidden)).reshape(
            batch_size, n, self.n_output
        )


class SeqEncoderDecoderRNN(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.build()

    def build(self):
        self.encoder = SeqEncoderRNN(self.input_dim, self.hidden_dim)
        self.decoder = SeqDecoderRNN(self.hidden_dim, self.input_dim)

    def forward(self, x):
        _, time_length, _ = x.shape
        return self.decoder(self.encoder(x), time_length)


class SeqEncoderRNNMasked(nn.Module):
    """The state at each sequence's first stop symbol: ``out[arange(B), seq_lengths]``."""

    def __init__(self, n_input: int, n_hidden: int):
        super().__init__()
        self.n_input = n_input
        self.n_hidden = n_hidden
        self.build()

    def build(self):
        self.rnn = nn.RNN(
            input_size=self.n_input, hidden_size=self.n_hidden, num_layers=1, batch_first=True
        )

    def forward(self, x, seq_lengths):
        # assume x.shape = batch, time, features
        out, hidden = self.rnn(x)
        # take advantage of the fact that for 1-layer rnn out gives you the hidden states
        return out[torch.arange(x.shape[0]), seq_lengths.reshape(-1)]


class SeqEncoderDecoderRNNMasked(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.build()

    def build(self):
        self.encoder = SeqEncoderRNNMasked(self.input_dim, self.hidden_dim)
        self.decoder = SeqDecoderRNN(self.hidden_dim, self.input_dim)

    def forward(self, x, seq_lengths):
        _, time_length, _ = x.shape
        return self.decoder(self.encoder(x, seq_lengths), time_length)


class SeqEncoderMasked(SeqEncoder):
    """Not in the seed: its masking (the state at the first stop symbol) on its own
    ``SeqEncoder`` cell, which is what ``jaxrnn train copy --set variant=masked`` runs."""

    def forward(self, x, seq_lengths):
        batch_size, time_length, n_features = x.shape
        hidden = self.initial_hidden_state * x.new_ones(batch_size, 1)
        states = []
        for i in range(time_length):
            hidden = self.step(x[:, i], hidden)
            states.append(hidden)
        return torch.stack(states, dim=1)[torch.arange(batch_size), seq_lengths.reshape(-1)]


class SeqEncoderDecoderMasked(SeqEncoderDecoderRNNMasked):
    def build(self):
        self.encoder = SeqEncoderMasked(self.input_dim, self.hidden_dim)
        self.decoder = SeqDecoder(self.hidden_dim, self.input_dim)


def masked_loss(p, y, l):
    """The seed's ``train_epoch_var_smart`` criterion: cross-entropy up to the first stop."""
    mask = l.reshape(-1, 1) >= torch.arange(y.shape[1])
    return nn.CrossEntropyLoss()(p[mask], y[mask])


def sequence_loss(p, y):
    """The seed's ``criterion = lambda x, y: CrossEntropyLoss()(x.permute(0, 2, 1), y)``."""
    return nn.CrossEntropyLoss()(p.permute(0, 2, 1), y)


# ----------------------------------------------------------------------------- seed 003: addition


class SumRNN(nn.Module):
    """Encoder RNN over the one-hot problem; decoder RNN fed zeros for as many steps as the
    input is long, from the encoder's final states; a Linear to the output symbols."""

    rnn_class = nn.RNN

    def __init__(self, n_inputs: int, n_outputs: int, n_hidden: int, n_layers: int = 1):
        super().__init__()
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.n_hidden = n_hidden
        self.n_layers = n_layers
        self.build()

    def build(self):
        self.encoder_rnn = self.rnn_class(
            input_size=self.n_inputs,
            hidden_size=self.n_hidden,
            num_layers=self.n_layers,
            batch_first=True,
        )
        self.decoder_rnn = self.rnn_class(
            input_size=1, hidden_size=self.n_hidden, num_layers=self.n_layers, batch_first=True
        )
        self.hidden_to_output = nn.Linear(self.n_hidden, self.n_outputs)

    def encode(self, x):
        out, hidden = self.encoder_rnn(x)
        return hidden

    def decode(self, initial_hidden, n: int):
        first = initial_hidden[0] if isinstance(initial_hidden, tuple) else initial_hidden
        n_layers, batch_size, n_hidden = first.shape
        zero_input = first.new_zeros(batch_size, n, 1)
        out, hidden = self.decoder_rnn(zero_input, initial_hidden)
        return self.hidden_to_output(out.reshape(batch_size * n, n_hidden)).reshape(
            batch_size, n, self.n_outputs
        )

    def forward(self, x):
        return self.decode(self.encode(x), x.shape[1])


class SumLSTM(SumRNN):
    """SumRNN with ``nn.LSTM`` (the seed writes it out again; only the layer class differs)."""

    rnn_class = nn.LSTM


class Seq2Seq(nn.Module):
    """jaxrnn's improved addition model (``jaxrnn/tasks/addition.py``), in torch.

    Embedding → LSTM encoder over the packed problem → LSTM decoder fed its previous digit
    (``START = n_outputs`` first; teacher forcing in ``forward``, greedy in
    :meth:`greedy`) → Linear. Dropout on the embeddings, between layers and before the Linear.
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        n_hidden: int,
        n_layers: int,
        embedding_dim: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_outputs = n_outputs
        kw = dict(hidden_size=n_hidden, num_layers=n_layers, batch_first=True, dropout=dropout)
        self.src_embedding = nn.Embedding(n_inputs, embedding_dim)
        self.encoder_rnn = nn.LSTM(input_size=embedding_dim, **kw)
        self.tgt_embedding = nn.Embedding(n_outputs + 1, embedding_dim)
        self.decoder_rnn = nn.LSTM(input_size=embedding_dim, **kw)
        self.hidden_to_output = nn.Linear(n_hidden, n_outputs)
        self.drop = nn.Dropout(dropout)

    @property
    def start(self) -> int:
        return self.n_outputs

    def encode(self, x, lengths):
        embedded = self.drop(self.src_embedding(x))
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.encoder_rnn(packed)
        return state

    def forward(self, x, lengths, y):
        """Teacher forcing: the decoder reads ``[START, y_0, …, y_{n-2}]``."""
        start = torch.full((y.shape[0], 1), self.start, dtype=y.dtype)
        previous = torch.cat([start, y[:, :-1]], dim=1)
        out, _ = self.decoder_rnn(self.drop(self.tgt_embedding(previous)), self.encode(x, lengths))
        return self.hidden_to_output(self.drop(out))

    def decode_step(self, state, previous):  # previous [B] ids → logits [B, V], state
        out, state = self.decoder_rnn(self.tgt_embedding(previous)[:, None], state)
        return self.hidden_to_output(out[:, 0]), state

    @torch.no_grad()
    def greedy(self, x, lengths, width: int):
        """Greedy decoding, a Python loop: ``(digits [B, width], logits [B, width, V])``."""
        state = self.encode(x, lengths)
        previous = torch.full((x.shape[0],), self.start, dtype=torch.int64)
        digits, logits = [], []
        for _ in range(width):
            step_logits, state = self.decode_step(state, previous)
            previous = step_logits.argmax(-1)
            digits.append(previous)
            logits.append(step_logits)
        return torch.stack(digits, dim=1), torch.stack(logits, dim=1)


# ----------------------------------------------------------------------------- seed 003: charlm


class PredictorLSTM(nn.Module):
    """Seed 003: ``embeddings[x]`` (a bare parameter, ``N(0, 1) · 0.01``) → ``nn.LSTM``
    (batch_first) → ``hidden_to_output``: ``x [B, T]`` ids → logits ``[B, T, n_symbols]``."""

    def __init__(
        self, n_symbols: int, n_hidden: int, n_layers: int = 1, embedding_size: int | None = None
    ):
        super().__init__()
        self.n_symbols = n_symbols
        self.n_hidden = n_hidden
        self.n_layers = n_layers
        self.embedding_size = embedding_size
        self.build()

    def build(self):
        if self.embedding_size is None:
            embedding_size = self.n_symbols
        else:
            embedding_size = self.embedding_size
        self.embeddings = nn.Parameter(torch.randn(self.n_symbols, embedding_size) * 0.01)
        self.rnn = nn.LSTM(
            input_size=embedding_size,
            hidden_size=self.n_hidden,
            batch_first=True,
            num_layers=self.n_layers,
        )
        self.hidden_to_output = nn.Linear(self.n_hidden, self.n_symbols)

    def forward(self, x):
        embedded = self.embeddings[x]
        out, cell_hidden = self.rnn(embedded)
        output = self.hidden_to_output(out.reshape(-1, self.n_hidden))
        return output.reshape(out.shape[:2] + (self.n_symbols,))


@torch.no_grad()
def sample_chars(plstm: PredictorLSTM, prompt, uniforms, temperature: float, pad: int = 0):
    """The seed's prediction loop — the whole prefix fed again for every new character,
    ``pred_logits = plstm.forward(prediction_array[:, :i])[:, -1, :]`` — with two changes:
    ``torch.multinomial`` becomes an inverse-CDF draw from the given ``uniforms [N]`` (so both
    frameworks can use the same noise), at ``temperature`` (0: argmax); and id ``pad`` is
    never drawn (the seed's ids start at 1, but it leaves id 0 a small probability).

    ``prompt [P]`` ids → ``[N]`` new ids.
    """
    prediction_array = torch.zeros((1, len(prompt) + len(uniforms)), dtype=torch.long)
    prediction_array[0, : len(prompt)] = prompt
    for i in range(len(prompt), prediction_array.shape[1]):
        pred_logits = plstm.forward(prediction_array[:, :i])[:, -1, :]
        pred_logits[:, pad] = -torch.inf
        if temperature == 0:
            samples = pred_logits.argmax(1, keepdim=True)
        else:
            pred_prob = torch.softmax(pred_logits / temperature, dim=1)
            cdf = torch.cumsum(pred_prob, dim=1)
            u = uniforms[i - len(prompt)].reshape(1, 1)
            samples = torch.searchsorted(cdf / cdf[:, -1:], u, right=True)
            samples = samples.clamp(pad + 1, plstm.n_symbols - 1)
        prediction_array[:, i] = samples[:, 0]
    return prediction_array[0, len(prompt) :]


def markov_dict_probabilities(markov_dicts: dict, n_unique: int, context: str, order: int):
    """Interpolated Witten–Bell from the seed's dicts (``create_markov_dict`` per order,
    ``markov_dicts[k]``), one context at a time in Python: ``P_order(· | context) [n_unique]``.

    ``P_{-1} = 1/S``; for k = 0..order, if the last k characters of ``context`` were seen as a
    key of ``markov_dicts[k]`` (counts ``n``, ``t`` of them nonzero):
    ``P_k = (n + t · P_{k-1}) / (Σn + t)``; otherwise ``P_k = P_{k-1}``.
    """
    p = np.full(n_unique, 1.0 / n_unique)
    for k in range(order + 1):
        counts = markov_dicts[k].get(context[len(context) - k :]) if len(context) >= k else None
        if counts is not None:
            types = np.count_nonzero(counts)
            p = (counts + types * p) / (counts.sum() + types)
    return p


# ----------------------------------------------------------------------------- seed 004


class SentimentRNN(nn.Module):
    """Seed 004's notebook globals ``emb``, ``rnn``, ``lin`` as one module (the attribute names
    are the globals', so the ``state_dict`` keys are ``emb.weight``, ``rnn.weight_ih_l0``, …,
    ``lin.weight``): ``Embedding(vocab_size + 1, emb_dim)`` → ``nn.RNN(emb_dim, hidden_dim)``
    (``cell="lstm"``: ``nn.LSTM``, the task's variant) → ``Linear(hidden_dim, 1)``.

    :meth:`do_rnn` is the seed's one review at a time (its "Faster RNNs" version, on
    ``nn.RNN``); :meth:`forward` its batches: ``collate_fn`` packs the embedded reviews and
    ``do_rnn(e)`` reads the final hidden state — here ``pack_padded_sequence`` of a padded
    batch with ``lengths`` (unsorted, ``enforce_sorted=False``) in place of sorting and
    ``pack_sequence``.
    """

    def __init__(
        self, vocab_size: int = 5000, emb_dim: int = 32, hidden_dim: int = 16, cell: str = "tanh"
    ):
        super().__init__()
        self.emb = nn.Embedding(vocab_size + 1, emb_dim)
        self.rnn = nn.LSTM(emb_dim, hidden_dim) if cell == "lstm" else nn.RNN(emb_dim, hidden_dim)
        self.lin = nn.Linear(hidden_dim, 1)

    def final_hidden(self, rnn_output):
        hidden = rnn_output[1]
        return hidden[0] if isinstance(self.rnn, nn.LSTM) else hidden  # LSTM: (h_n, c_n)

    def do_rnn(self, input_indices):
        """One review, ``[T]`` ids → the logit ``z`` (a 0-d tensor)."""
        input_indices_t = torch.as_tensor(input_indices, dtype=torch.long)
        e = self.emb(input_indices_t)
        hidden = self.final_hidden(self.rnn(e))[0, :]
        z = torch.squeeze(self.lin(hidden))
        return z

    def forward(self, x, lengths):
        """``x [B, T]`` padded ids, ``lengths [B]`` → logits ``[B]``, through a packed batch."""
        e = pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden_all = self.final_hidden(self.rnn(e))  # [1, B, H], in the batch's order
        return self.lin(hidden_all)[0, :, 0]
