"""The seeds' tasks. Each module registers one :class:`~jaxrnn.tasks.base.Task`."""

import importlib

MODULES = (
    "hihello", "index_recall", "bitflip", "sinusoid", "copy", "addition", "charlm", "sentiment",
)


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
