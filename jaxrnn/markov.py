"""Order-k character Markov models with interpolated Witten–Bell smoothing, counted with NumPy.

Seed 003 (after Goldberg's answer to Karpathy) learns ``P(next char | previous k chars)`` as a
dict from each k-character context to an array of next-character counts, filled by a Python loop
over the text, and samples from it (the dict version is kept verbatim in the parity suite as the
reference, ``parity/markov_seed.py``). A raw count table gives probability 0 to everything it has
not seen, so it cannot score held-out text. Here the same counts are built with sorting instead
of a Python loop per character, and smoothed by interpolated Witten–Bell: for a context ``h`` of
order k with ``c(h)`` occurrences and ``t(h)`` distinct next characters,

    P_k(w | h) = (c(h, w) + t(h) · P_{k-1}(w | h')) / (c(h) + t(h))   h' = h less its oldest char
    P_k(w | h) = P_{k-1}(w | h')                                         if c(h) = 0 (unseen)
    P_{-1}(w)  = 1 / S                                                   S = alphabet size

so every character of the alphabet has probability > 0 after any context, seen or not, and one
model of order K holds the models of every order k ≤ K (the recursion stopped at k).

Counting: position ``t`` of the training text (``t ≥ k``) contributes one count of
``(text[t-k:t], text[t])`` — every position, including the last character. The seed's loop
``range(len(text) - markov_order - 1)`` skips the last one: its dict of ``text`` equals
:func:`count_dict` of a model fitted on ``text[:-1]``.

Contexts are integer codes, extended one character to the left per order and renumbered by
``np.unique`` each time (``code_{k+1} = rank of (code_k, text[t-k-1])``), so the codes never
overflow however large ``S**k`` grows.

    model = fit(train_text, order=8, alphabet=alphabet)
    bits_per_char(model, valid_text)       # {0: 4.6, 1: 3.3, …, 8: 2.5} bits per character
    sample(model, 300, seed=0, start="ROMEO:")
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "MarkovModel",
    "bits_per_char",
    "count_dict",
    "encode",
    "fit",
    "probabilities",
    "sample",
]


@dataclasses.dataclass(frozen=True)
class Level:
    """The counts of one order k, over the contexts seen in training (codes ``0..M_k-1``).

    ``pairs [Q]`` sorted codes ``context · S + symbol`` of the seen (context, next symbol)
    pairs, ``counts [Q]`` how often each was seen; ``totals [M_k]`` = c(h), ``types [M_k]`` =
    t(h); ``children [M_{k+1}]`` sorted codes ``context · S + older symbol`` of the contexts
    one order up (their rank is their code at order k+1).
    """

    pairs: np.ndarray
    counts: np.ndarray
    totals: np.ndarray
    types: np.ndarray
    children: np.ndarray


@dataclasses.dataclass(frozen=True)
class MarkovModel:
    """An interpolated Witten–Bell model of orders ``0..order`` over ``alphabet`` (S symbols)."""

    alphabet: str
    order: int
    levels: tuple[Level, ...]  # one per order 0..order

    @property
    def size(self) -> int:
        return len(self.alphabet)


def encode(text: str, alphabet: str, name: str = "text") -> np.ndarray:
    """Characters → ``[N]`` int64 symbols (index in ``alphabet``); unknown characters raise a
    ``ValueError`` naming ``name``, the character and its position."""
    lookup = {ch: i for i, ch in enumerate(alphabet)}
    try:
        return np.fromiter((lookup[ch] for ch in text), np.int64, len(text))
    except KeyError as e:
        ch = e.args[0]
        raise ValueError(
            f"{name}: character {ch!r} (position {text.index(ch)}) is not in the alphabet of "
            f"{len(alphabet)} characters {alphabet!r}"
        ) from None


def fit(text: str, order: int, alphabet: str | None = None) -> MarkovModel:
    """Count ``text`` for every order ``0..order``. ``alphabet`` defaults to ``sorted(set(text))``
    (the seed's ``np.unique``); pass the full corpus's so held-out characters stay scorable."""
    if not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be an int >= 0, got {order!r}")
    alphabet = "".join(sorted(set(text))) if alphabet is None else alphabet
    if len(set(alphabet)) != len(alphabet) or not alphabet:
        raise ValueError(f"alphabet must be non-empty distinct characters, got {alphabet!r}")
    x = encode(text, alphabet)  # [N]
    S, N = len(alphabet), len(x)
    if N == 0:
        raise ValueError("text to fit is empty")
    context = np.zeros(N, np.int64)  # code of text[t-k:t]; valid for t >= k
    levels = []
    for k in range(order + 1):
        pairs, counts = np.unique(context[k:] * S + x[k:], return_counts=True)
        owner = pairs // S
        n_contexts = int(owner[-1]) + 1 if len(owner) else 1
        totals = np.bincount(owner, weights=counts, minlength=n_contexts).astype(np.int64)
        types = np.bincount(owner, minlength=n_contexts)
        children = np.empty(0, np.int64)
        if k < order:  # one character further back: text[t-k-1:t] for t >= k+1
            children, context[k + 1 :] = np.unique(
                context[k + 1 :] * S + x[: N - k - 1], return_inverse=True
            )
        levels.append(Level(pairs, counts, totals, types, children))
    return MarkovModel(alphabet, order, tuple(levels))


def _find(sorted_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Index of each code in ``sorted_codes``, or -1 where it is absent."""
    at = np.searchsorted(sorted_codes, codes)
    found = at < len(sorted_codes)
    found[found] = sorted_codes[at[found]] == codes[found]
    return np.where(found, at, -1)


def _contexts(model: MarkovModel, x: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """Codes of the contexts ``x[t-k:t]`` for k = 0..order (``-1``: unseen or before the start)."""
    S, codes = model.size, [np.zeros(len(t), np.int64)]
    for k in range(model.order):
        ok = (codes[-1] >= 0) & (t - k - 1 >= 0)
        child = np.full(len(t), -1, np.int64)
        older = x[t[ok] - k - 1]
        child[ok] = _find(model.levels[k].children, codes[-1][ok] * S + older)
        codes.append(child)
    return codes


def _interpolate(model: MarkovModel, codes: list[np.ndarray], w: np.ndarray) -> list[np.ndarray]:
    """``P_k(w | context)`` for each order k = 0..order; ``w`` broadcasts against the codes."""
    S, p, out = model.size, np.full(np.broadcast(codes[0], w).shape, 1.0 / model.size), []
    for level, h in zip(model.levels, codes):
        seen = h >= 0
        hh = np.where(seen, h, 0)
        at = _find(level.pairs, hh * S + w)
        c_hw = np.where(at >= 0, level.counts[np.maximum(at, 0)], 0) if len(level.counts) else 0
        c_h, t_h = level.totals[hh], level.types[hh]
        p = np.where(seen, (c_hw + t_h * p) / np.maximum(c_h + t_h, 1), p)
        out.append(p)
    return out


def probabilities(model: MarkovModel, context: str, order: int | None = None) -> np.ndarray:
    """``[S]`` the distribution of the next character after ``context`` (the last ``order``
    characters of it are used; default the model's order). Sums to 1, every entry > 0."""
    order = model.order if order is None else order
    if not 0 <= order <= model.order:
        raise ValueError(f"order must be in [0, {model.order}], got {order}")
    x = encode(context, model.alphabet)
    codes = _contexts(model, x, np.array([len(x)]))
    w = np.arange(model.size)
    return _interpolate(model, [c[:, None] for c in codes], w[None])[order][0]


def bits_per_char(model: MarkovModel, text: str, orders=None) -> dict[int, float]:
    """Mean ``-log2 P_k(text[t] | text[t-k:t])`` over every position of ``text``, per order k
    (default all ``0..model.order``). Positions ``t < k`` use the ``t`` characters they have."""
    orders = range(model.order + 1) if orders is None else orders
    if any(not 0 <= k <= model.order for k in orders):
        raise ValueError(f"orders must be in [0, {model.order}], got {list(orders)}")
    x = encode(text, model.alphabet)
    if len(x) == 0:
        raise ValueError("text to score is empty")
    p = _interpolate(model, _contexts(model, x, np.arange(len(x))), x)
    return {k: float(-np.mean(np.log2(p[k]))) for k in orders}


def sample(
    model: MarkovModel, length: int, seed: int = 0, start: str = "", order: int | None = None
) -> str:
    """``length`` characters drawn from ``P_order(· | the last characters)``, after ``start``
    (``order`` ≤ the fitted order; default the fitted order).

    Each draw is the inverse CDF of one ``U[0, 1)`` from ``np.random.default_rng(seed)``.
    Returns ``start`` followed by the new characters, as seed 003's ``generate_from_markov``.
    """
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    order = model.order if order is None else order
    rng, text = np.random.default_rng(seed), start
    for u in rng.random(length):
        p = probabilities(model, text[max(0, len(text) - order) :], order)
        cdf = np.cumsum(p)
        text += model.alphabet[
            min(int(np.searchsorted(cdf / cdf[-1], u, side="right")), model.size - 1)
        ]
    return text


def count_dict(model: MarkovModel, order: int) -> dict[str, np.ndarray]:
    """The order-``order`` counts as the seed's dict: context string → ``[S]`` int counts."""
    if not 0 <= order <= model.order:
        raise ValueError(f"order must be in [0, {model.order}], got {order}")
    S = model.size
    strings = [""]  # context code → its string, built order by order from the children
    for k in range(order):
        children = model.levels[k].children
        strings = [model.alphabet[c % S] + strings[c // S] for c in children]
    level, out = model.levels[order], {}
    for pair, n in zip(level.pairs, level.counts):
        key = strings[pair // S]
        out.setdefault(key, np.zeros(S, int))[pair % S] = n
    return out
