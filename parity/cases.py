"""The parity table: which torch.nn configurations are compared with jaxrnn.

The full product kind × num_layers × bidirectional × batch_first × bias × variant is 5·3·2·2·2·4
= 480 configurations (960 with both dtypes) — too slow for CI. ``CASES`` is a covering table of
25 instead, checked by ``parity/test_layers.py::test_table_covers``:

* every kind (``rnn_tanh``, ``rnn_relu``, ``lstm``, ``lstm`` with ``proj_size``, ``gru``) meets
  every variant and every value of num_layers, bidirectional, batch_first and bias;
* every variant meets every value of num_layers, bidirectional, batch_first and bias;
* every kind has a 3-layer bidirectional ``lengths`` case; three of them also take a random
  ``hx`` (the reverse direction must start from ``hx`` at each sequence's own last valid
  step), two start from zeros.

Variants: ``plain`` (no hx), ``hx`` (random initial state), ``lengths`` (packed sequences:
``pack_padded_sequence(enforce_sorted=False)`` in torch), ``unbatched`` (2-D ``x``; ``[T, I]``
whatever ``batch_first`` says). ``hx=True`` adds a random initial state to a ``lengths`` or
``unbatched`` case (2-D for unbatched).

Sizes are odd and distinct within a case (so a transposed or swapped axis cannot go unnoticed),
and vary a little across cases.
"""

from __future__ import annotations

import dataclasses

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru")
VARIANTS = ("plain", "hx", "lengths", "unbatched")
DTYPES = ("float64", "float32")
DTYPE_TAG = {"float64": "f64", "float32": "f32"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One torch.nn.RNN/LSTM/GRU configuration and how it is called."""

    mode: str  # rnn_tanh | rnn_relu | lstm | gru  (torch's mode names)
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    variant: str  # plain | hx | lengths | unbatched
    hx: bool = False  # a random initial state (always true for the "hx" variant)
    proj_size: int = 0  # LSTM only
    input_size: int = 5  # I
    hidden_size: int = 7  # H
    time: int = 9  # T
    batch: int = 3  # B (unused when unbatched)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "hx" and not self.hx:
            object.__setattr__(self, "hx", True)
        if self.proj_size and self.mode != "lstm":
            raise ValueError(f"proj_size is LSTM only, got mode {self.mode!r}")
        sizes = [self.input_size, self.hidden_size, self.time]
        sizes += [self.proj_size] if self.proj_size else []
        sizes += [self.batch] if self.batched else []
        if len(set(sizes)) != len(sizes) or any(s % 2 == 0 for s in sizes):
            raise ValueError(f"sizes must be odd and distinct, got {sizes} in {self.id}")

    @property
    def kind(self) -> str:
        """The table's kind: the mode, with ``lstm_proj`` for an LSTM with ``proj_size``."""
        return "lstm_proj" if self.proj_size else self.mode

    @property
    def batched(self) -> bool:
        return self.variant != "unbatched"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def id(self) -> str:
        """E.g. ``lstm-L2-bi-bf-nobias-proj3-lengths+hx``."""
        parts = [
            self.mode,
            f"L{self.num_layers}",
            "bi" if self.bidirectional else "uni",
            "bf" if self.batch_first else "tf",  # batch-first | time-first
            "bias" if self.bias else "nobias",
        ]
        if self.proj_size:
            parts.append(f"proj{self.proj_size}")
        extra_hx = self.hx and self.variant != "hx"
        parts.append(self.variant + ("+hx" if extra_hx else ""))
        return "-".join(parts)


def case_id(case: Case, dtype: str) -> str:
    """The pytest id and report label, e.g. ``gru-L3-bi-tf-bias-lengths+hx-f64``."""
    return f"{case.id}-{DTYPE_TAG[dtype]}"


# Size presets: (input_size I, hidden_size H, time T, batch B), odd and distinct. Few of
# them, so eager runs reuse compiled ops across cases.
S1 = dict(input_size=5, hidden_size=7, time=9, batch=3)
S2 = dict(input_size=3, hidden_size=9, time=7, batch=5)
P1 = dict(input_size=5, hidden_size=7, proj_size=3, time=9, batch=11)  # LSTM with projection
P2 = dict(input_size=11, hidden_size=9, proj_size=5, time=7, batch=3)


def _rows(mode: str, rows) -> list[Case]:
    return [
        Case(mode, L, bi, bf, bias, variant, hx=hx, **sizes)
        for L, bi, bf, bias, variant, hx, sizes in rows
    ]


T, F = True, False

# Compile time grows with num_layers × directions, so only the required 3-layer bidirectional
# lengths case of each kind is that big; the plain, hx and unbatched columns rotate through
# (L3 uni, L1 bi, L2 uni, L1 uni, L1 uni) across the kinds.
# fmt: off
CASES: list[Case] = [
    #                L  bi bf bias variant      hx  sizes
    *_rows("rnn_tanh", [
        (3, F, F, T, "plain",     F, S1),
        (1, T, T, F, "hx",        T, S2),
        (2, F, T, T, "unbatched", T, S1),
        (3, T, F, T, "lengths",   T, S2),
        (1, F, T, F, "lengths",   F, S1),
    ]),
    *_rows("rnn_relu", [
        (1, T, T, T, "plain",     F, S2),
        (2, F, F, F, "hx",        T, S1),
        (1, F, T, F, "unbatched", F, S2),
        (3, T, T, T, "lengths",   F, S1),
        (1, F, F, F, "lengths",   T, S2),
    ]),
    *_rows("lstm", [
        (2, F, F, F, "plain",     F, S1),
        (1, F, T, T, "hx",        T, S2),
        (1, F, F, T, "unbatched", T, S2),
        (3, T, T, F, "lengths",   T, S1),
        (1, F, F, T, "lengths",   F, S2),
    ]),
    *_rows("lstm", [
        (1, F, T, F, "plain",     F, P1),
        (1, F, F, T, "hx",        T, P2),
        (3, F, T, F, "unbatched", T, P1),
        (3, T, F, T, "lengths",   T, P1),
        (2, F, T, F, "lengths",   F, P2),
    ]),
    *_rows("gru", [
        (1, F, T, T, "plain",     F, S2),
        (3, F, F, F, "hx",        T, S1),
        (1, T, F, T, "unbatched", F, S1),
        (3, T, T, F, "lengths",   F, S2),
        (2, F, F, T, "lengths",   T, S1),
    ]),
]
# fmt: on

# A handful of cheap ones for `python -m parity --quick`: every kind and every variant.
QUICK_IDS = (
    "rnn_tanh-L1-bi-bf-nobias-hx",
    "rnn_relu-L1-uni-bf-nobias-unbatched",
    "lstm-L1-uni-tf-bias-lengths",
    "lstm-L1-uni-bf-nobias-proj3-plain",
    "gru-L2-uni-tf-bias-lengths+hx",
)
QUICK = [c for c in CASES if c.id in QUICK_IDS]


def coverage_gaps(cases: list[Case]) -> list[str]:
    """What the covering-table rules above miss in ``cases`` (empty when covered)."""
    gaps = []
    axes = {
        "num_layers": (1, 2, 3),
        "bidirectional": (False, True),
        "batch_first": (False, True),
        "bias": (False, True),
    }
    for group, values in (("kind", KINDS), ("variant", VARIANTS)):
        for value in values:
            mine = [c for c in cases if getattr(c, group) == value]
            if group == "kind":
                missing = set(VARIANTS) - {c.variant for c in mine}
                gaps += [f"kind {value} never meets variant {v}" for v in sorted(missing)]
            for axis, options in axes.items():
                seen = {getattr(c, axis) for c in mine}
                gaps += [
                    f"{group} {value} never meets {axis}={o}" for o in options if o not in seen
                ]
    for kind in KINDS:
        if not any(
            c.kind == kind and c.num_layers == 3 and c.bidirectional and c.variant == "lengths"
            for c in cases
        ):
            gaps.append(f"kind {kind} has no 3-layer bidirectional lengths case")
    ids = [c.id for c in cases]
    gaps += [f"duplicate case {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    return gaps
