"""A float64 NumPy transcription of torch.nn.RNN / LSTM / GRU, written from the equations.

This module is the oracle of the JAX-only tests. It is deliberately naive and shares no code
with ``jaxrnn``: one sequence at a time, one time step at a time, plain Python loops, gate
blocks sliced out of torch's fused weights exactly as the torch documentation writes them.

Parameters are a torch-style ``state_dict``: ``{"weight_ih_l0": W, "bias_hh_l1_reverse": b, ...}``
for layers, ``{"weight_ih": W, ...}`` for single cells. Weights have torch's layout ``[out, in]``.

Semantics transcribed (torch.nn docs, ``pack_padded_sequence(enforce_sorted=False)`` +
``pad_packed_sequence(total_length=T)``):

* a sequence ``b`` of length ``len[b]`` only ever sees its first ``len[b]`` steps;
* the forward direction runs ``t = 0 .. len-1`` from ``hx``; its ``h_n`` is the state after
  ``t = len-1``;
* the reverse direction runs ``t = len-1 .. 0`` from ``hx``; its ``h_n`` is the state after
  ``t = 0``;
* outputs at ``t >= len`` are zero in both halves; layer ``k+1`` reads layer ``k``'s outputs;
* ``hx`` / ``h_n`` are ``[L*D, B, H]``, index ``layer*D + direction``, never batch-first.
"""

from __future__ import annotations

import numpy as np

GATES = {"linear": 1, "rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _bias(w, name, rows):
    b = w.get(name)
    return np.zeros(rows) if b is None else np.asarray(b, np.float64)


# ----------------------------------------------------------------------------- one step
# x: [I], h: [H] (or [P]), c: [H]; w: {"weight_ih", "weight_hh", "bias_ih"?, "bias_hh"?,
# "weight_hr"?}. Biases absent means bias=False.


def linear_cell(x, h, w):
    """h' = W_ih x + b_ih + W_hh h + b_hh."""
    rows = w["weight_ih"].shape[0]
    return (
        w["weight_ih"] @ x
        + _bias(w, "bias_ih", rows)
        + w["weight_hh"] @ h
        + _bias(w, "bias_hh", rows)
    )


def elman_cell(x, h, w, nonlinearity="tanh"):
    """h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh | relu."""
    pre = linear_cell(x, h, w)
    if nonlinearity == "tanh":
        return np.tanh(pre)
    if nonlinearity == "relu":
        return np.maximum(pre, 0.0)
    raise ValueError(nonlinearity)


def lstm_cell(x, h, c, w):
    """torch.nn.LSTM, gate blocks i, f, g, o; optional projection h' = W_hr (o * tanh(c'))."""
    H4 = w["weight_ih"].shape[0]
    H = H4 // 4
    b_ih, b_hh = _bias(w, "bias_ih", H4), _bias(w, "bias_hh", H4)
    W_ii, W_if, W_ig, W_io = (w["weight_ih"][k * H : (k + 1) * H] for k in range(4))
    W_hi, W_hf, W_hg, W_ho = (w["weight_hh"][k * H : (k + 1) * H] for k in range(4))
    b_ii, b_if, b_ig, b_io = (b_ih[k * H : (k + 1) * H] for k in range(4))
    b_hi, b_hf, b_hg, b_ho = (b_hh[k * H : (k + 1) * H] for k in range(4))
    i = sigmoid(W_ii @ x + b_ii + W_hi @ h + b_hi)
    f = sigmoid(W_if @ x + b_if + W_hf @ h + b_hf)
    g = np.tanh(W_ig @ x + b_ig + W_hg @ h + b_hg)
    o = sigmoid(W_io @ x + b_io + W_ho @ h + b_ho)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    if w.get("weight_hr") is not None:
        h_new = w["weight_hr"] @ h_new
    return h_new, c_new


def gru_cell(x, h, w):
    """torch.nn.GRU, gate blocks r, z, n; b_hn sits inside r * (W_hn h + b_hn)."""
    H3 = w["weight_ih"].shape[0]
    H = H3 // 3
    b_ih, b_hh = _bias(w, "bias_ih", H3), _bias(w, "bias_hh", H3)
    W_ir, W_iz, W_in = (w["weight_ih"][k * H : (k + 1) * H] for k in range(3))
    W_hr, W_hz, W_hn = (w["weight_hh"][k * H : (k + 1) * H] for k in range(3))
    b_ir, b_iz, b_in = (b_ih[k * H : (k + 1) * H] for k in range(3))
    b_hr, b_hz, b_hn = (b_hh[k * H : (k + 1) * H] for k in range(3))
    r = sigmoid(W_ir @ x + b_ir + W_hr @ h + b_hr)
    z = sigmoid(W_iz @ x + b_iz + W_hz @ h + b_hz)
    n = np.tanh(W_in @ x + b_in + r * (W_hn @ h + b_hn))
    return (1.0 - z) * n + z * h


def cell(kind, x, state, w):
    """One step of ``kind`` (linear | rnn_tanh | rnn_relu | lstm | gru); LSTM state is (h, c)."""
    if kind == "linear":
        return linear_cell(x, state, w)
    if kind in ("rnn_tanh", "rnn_relu"):
        return elman_cell(x, state, w, kind[4:])
    if kind == "lstm":
        return lstm_cell(x, *state, w)
    if kind == "gru":
        return gru_cell(x, state, w)
    raise ValueError(kind)


def batched_cell(kind, x, state, w):
    """``cell`` applied row by row: x ``[B, I]``, state ``[B, H]`` (LSTM a pair)."""
    x = np.asarray(x, np.float64)
    rows = []
    for b in range(x.shape[0]):
        s = (
            tuple(np.asarray(a[b], np.float64) for a in state)
            if kind == "lstm"
            else (np.asarray(state[b], np.float64))
        )
        rows.append(cell(kind, x[b], s, w))
    if kind == "lstm":
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
    return np.stack(rows)


# ----------------------------------------------------------------------------- layers


def _direction_weights(params, layer, direction):
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    out = {}
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
        if name + suffix in params:
            out[name] = np.asarray(params[name + suffix], np.float64)
    return out


def rnn_layer(
    kind,
    params,
    x,
    hx=None,
    lengths=None,
    *,
    num_layers=1,
    bidirectional=False,
    batch_first=False,
):
    """torch.nn.RNN / LSTM / GRU forward (no dropout), one sequence and one step at a time.

    kind: rnn_tanh | rnn_relu | lstm | gru. x: ``[T, B, I]`` (``[B, T, I]`` with batch_first)
    or unbatched ``[T, I]``. hx: ``[L*D, B, H]`` (unbatched ``[L*D, H]``), LSTM ``(h0, c0)``.
    lengths: ``[B]`` ints (unbatched: a scalar) or None. Returns ``(output, h_n)`` like torch.
    """
    x = np.asarray(x, np.float64)
    D = 2 if bidirectional else 1
    LD = num_layers * D
    H = params["weight_ih_l0"].shape[0] // GATES[kind]
    P = params["weight_hr_l0"].shape[0] if "weight_hr_l0" in params else H  # size of h
    is_lstm = kind == "lstm"

    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :]
        if hx is not None:
            hx = tuple(np.asarray(a)[:, None] for a in hx) if is_lstm else np.asarray(hx)[:, None]
        if lengths is not None:
            lengths = np.reshape(lengths, (1,))
    elif batch_first:
        x = np.swapaxes(x, 0, 1)
    T, B, _ = x.shape

    if hx is None:
        h0 = np.zeros((LD, B, P))
        c0 = np.zeros((LD, B, H))
    elif is_lstm:
        h0, c0 = (np.asarray(a, np.float64) for a in hx)
    else:
        h0, c0 = np.asarray(hx, np.float64), None
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)

    output = np.zeros((T, B, D * P))
    h_n = np.zeros((LD, B, P))
    c_n = np.zeros((LD, B, H))
    for b in range(B):
        n = int(lengths[b])
        seq = [x[t, b] for t in range(n)]  # this sequence's valid prefix only
        for layer in range(num_layers):
            halves = []
            for direction in range(D):
                idx = layer * D + direction
                w = _direction_weights(params, layer, direction)
                state = (h0[idx, b], c0[idx, b]) if is_lstm else h0[idx, b]
                ys = [None] * n
                times = range(n - 1, -1, -1) if direction else range(n)
                for t in times:
                    state = cell(kind, seq[t], state, w)
                    ys[t] = state[0] if is_lstm else state
                if is_lstm:
                    h_n[idx, b], c_n[idx, b] = state
                else:
                    h_n[idx, b] = state
                halves.append(ys)
            seq = [np.concatenate([half[t] for half in halves]) for t in range(n)]
        for t in range(n):
            output[t, b] = seq[t]

    if unbatched:
        output, h_n, c_n = output[:, 0], h_n[:, 0], c_n[:, 0]
    elif batch_first:
        output = np.swapaxes(output, 0, 1)
    return output, ((h_n, c_n) if is_lstm else h_n)


def linear_rnn(params, x, h0=None, *, batch_first=False):
    """The seeds' LinearRNN: h_t = W_hh h_{t-1} + b_hh + W_ih x_t + b_ih; returns all states.

    x: ``[T, B, I]`` (``[B, T, I]`` with batch_first) or ``[T, I]``; h0: ``[B, H]`` / ``[H]``.
    """
    x = np.asarray(x, np.float64)
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None]
    elif batch_first:
        x = np.swapaxes(x, 0, 1)
    T, B, _ = x.shape
    H = params["weight_hh"].shape[0]
    h0 = np.zeros((B, H)) if h0 is None else np.broadcast_to(np.asarray(h0, np.float64), (B, H))
    states = np.zeros((T, B, H))
    for b in range(B):
        h = h0[b]
        for t in range(T):
            h = linear_cell(x[t, b], h, params)
            states[t, b] = h
    h_n = states[-1]
    if unbatched:
        return states[:, 0], h_n[0]
    return (np.swapaxes(states, 0, 1) if batch_first else states), h_n
