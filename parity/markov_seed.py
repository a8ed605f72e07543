"""The Markov model of the character-level language-model tutorial (seed 003), verbatim.

The reference that :mod:`jaxrnn.markov` is checked against (the ``markov`` row of
``python -m parity --only tasks``): a dict from each k-character context to an array of
next-character counts, built one character at a time in Python, and its sampler. jaxrnn does
not use these; it counts by sorting and smooths with Witten–Bell (:mod:`jaxrnn.markov`).

The loop ``range(len(text) - markov_order - 1)`` skips the last character: the dict of
``text`` equals ``jaxrnn.markov.count_dict`` of a model fitted on ``text[:-1]``.
"""
# The seed's code as it was written: neither reformatted nor linted.
# fmt: off
# ruff: noqa

import numpy as np


def create_markov_dict(text, markov_order=4):
    unique_characters = np.unique(list(text))
    n_unique = len(unique_characters)
    transl = dict(list(zip(unique_characters, np.arange(n_unique))) +
                  list(zip(np.arange(n_unique), unique_characters)))
    markov_dict = dict()
    for i in range(len(text) - markov_order - 1):
        key = text[i:i + markov_order]
        value = text[i + markov_order]
        freq_table = markov_dict[key] = markov_dict.get(key, np.zeros(n_unique, dtype='int'))
        freq_table[transl[value]] += 1
    return markov_dict, transl


def generate_from_markov(markov_dict, transl_dict, n=1000, starting_point=None, rng=None):
    """The seed's sampler (unsmoothed: it stops with a KeyError at a context never seen),
    with an optional ``rng`` in place of the global NumPy state."""
    rng = np.random if rng is None else rng
    if starting_point is None:
        starting_point = rng.choice(list(markov_dict.keys()))
    output = list(starting_point)
    cur_key = starting_point
    for i in range(n):
        counts = markov_dict[cur_key]
        counts = counts / counts.sum()
        next_char_ind = rng.multinomial(1, counts).argmax()
        next_char = transl_dict[next_char_ind]
        output.append(next_char)
        cur_key = cur_key[1:] + next_char
    return "".join(output)
